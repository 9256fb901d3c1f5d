#!/usr/bin/python3
"""Scale: one controller and many simulated hosts (as root or not), on the same 2 cores.

  bench/scale.py [--hosts 200] [--per-host 20] [--processes 4] [--singles 200]

The hosts are SIMULATED: `swiftlet agent --simulate N` runs N agents in one process, each with its
own join token, client certificate, mutual-TLS watch stream, lease and observation uplink, but with
the fake hypervisor driver (no VMM: a guest READY at once). What is measured is the controller's
side: its CPU and memory with that many hosts and instances, and the watch latency at that size.

Rows (see bench/README.md, "Scale"):
  - controller_idle_cpu / controller_rss: the controller process with every host joined, then with
    every instance running (leases and pings only), over a 20 s window.
  - create_all: --per-host instances on every host (one create with `count` per host, 8 at a time).
  - watch_latency_bulk: commit (`persisted`) -> the agent has it (`scheduled`), over all those.
  - watch_latency_single: the same for single creates on random hosts once everything runs.
Writes bench/results/scale-latest.json and a dated copy.
"""
import argparse, datetime, json, os, random, shutil, signal, socket, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

ROOT = run.ROOT
SWIFTLET = run.SWIFTLET
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def window(pids, seconds):
    """CPU of each pid over `seconds`, as % of one core."""
    before = {p: cpu_seconds(p) for p in pids}
    time.sleep(seconds)
    return {p: round(100 * (cpu_seconds(p) - before[p]) / seconds, 1) for p in pids}


def controller_with_hello():
    """A server whose agent listener takes simulated hosts, with the hello unikernel uploaded as
    image `hello`; returns it, the agent port and the temporary directory of the kernel."""
    kernel_dir = tempfile.mkdtemp(prefix="swiftlet-bench-k-")
    kernel = os.path.join(kernel_dir, "hello.elf")
    subprocess.run([os.path.join(ROOT, "guest/build.sh"), os.path.join(ROOT, "guest/examples/hello"), "-o", kernel],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        agent_port = s.getsockname()[1]
    config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump({"agentPort": agent_port, "agentHost": "127.0.0.1"}, config)
    config.close()
    server = run.Server(extra_args=["--config", config.name])
    os.remove(config.name)
    with open(kernel, "rb") as f:
        status, _ = server.call("POST", "/v1/images?name=hello", raw=f.read(), ctype="application/octet-stream")
    assert status == 201, status
    return server, agent_port, kernel_dir


def join_simulated_hosts(server, agent_port, hosts, processes, sim_dir, sims):
    """`hosts` simulated hosts over `processes` agent processes (appended to `sims` as they start);
    returns the ids of the hosts once all are UP."""
    per_process = -(-hosts // processes)
    for p in range(processes):
        count = min(per_process, hosts - p * per_process)
        if count <= 0:
            break
        tokens = [server.call("POST", "/v1/hosts/join-tokens", {"ttlSeconds": 3600})[1]["token"]
                  for _ in range(count)]
        token_file = os.path.join(sim_dir, f"tokens-{p}")
        with open(token_file, "w") as f:
            f.write("\n".join(tokens))
        log = open(os.path.join(sim_dir, f"sim-{p}.log"), "w")
        sims.append(subprocess.Popen(
            [SWIFTLET, "agent", "--controller", f"https://127.0.0.1:{agent_port}", "--data",
             os.path.join(sim_dir, f"p{p}"), "--name", f"sim{p}", "--simulate", str(count),
             "--join-tokens-file", token_file, "--log-level", "warning"],
            stdout=log, stderr=log, start_new_session=True))
    joined = time.time()
    sim_hosts = []
    while time.time() - joined < 600:
        listed = server.call("GET", "/v1/hosts")[1]["hosts"]
        sim_hosts = [h["id"] for h in listed if h["id"].startswith("host-sim") and h.get("status") == "UP"]
        if len(sim_hosts) >= hosts:
            return sim_hosts
        time.sleep(1)
    raise RuntimeError(f"only {len(sim_hosts)} of {hosts} simulated hosts joined")


def stop_simulators(sims):
    for sim in sims:
        sim.send_signal(signal.SIGTERM)
    for sim in sims:
        try:
            sim.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sim.kill()


def write_results(prefix, out):
    """bench/results/PREFIX-latest.json and a dated copy."""
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    for name in [f"{prefix}-latest.json", f"{prefix}-{stamp}.json"]:
        with open(os.path.join(ROOT, "bench/results", name), "w") as f:
            json.dump(out, f, indent=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--per-host", type=int, default=20)
    parser.add_argument("--processes", type=int, default=4, help="simulator processes the hosts are spread over")
    parser.add_argument("--singles", type=int, default=200, help="single creates timed once everything runs")
    args = parser.parse_args()
    server, agent_port, kernel_dir = controller_with_hello()
    sims, sim_dir = [], tempfile.mkdtemp(prefix="swiftlet-bench-sim-")
    results, notes = [], {}
    try:
        joined = time.time()
        sim_hosts = join_simulated_hosts(server, agent_port, args.hosts, args.processes, sim_dir, sims)
        notes["join_seconds"] = round(time.time() - joined, 1)
        pid = server.proc.pid
        sim_pids = [s.pid for s in sims]
        time.sleep(5)
        cpu = window([pid] + sim_pids, 20)
        results.append({"name": "controller_idle_cpu_hosts_only", "unit": "% of one core", "samples": 1,
                        "p50": cpu[pid], "timed": f"{args.hosts} simulated hosts UP, no instances, 20 s window",
                        "note": f"simulator processes: {[cpu[p] for p in sim_pids]}"})
        results.append({"name": "controller_rss_hosts_only", "unit": "MiB", "samples": 1,
                        "p50": round(rss_mib(pid), 1), "timed": f"{args.hosts} simulated hosts UP, no instances"})

        # Every host gets --per-host instances: one create with `count` per host, 8 requests at a time.
        def fill(host):
            status, answer = server.call("POST", "/v1/instances", {"image": "hello", "name": f"x-{host}",
                                                                    "host": host, "count": args.per_host})
            if status != 201:
                raise RuntimeError(f"create on {host}: {status} {answer}")
            return [i["id"] for i in answer["instances"]]
        started, cpu_before = time.time(), cpu_seconds(pid)
        with ThreadPoolExecutor(8) as pool:
            ids = [i for batch in pool.map(fill, sim_hosts) for i in batch]
        total = len(ids)
        deadline = time.time() + 900
        while time.time() < deadline:
            building = server.call("GET", "/v1/instances?state=BUILDING&limit=1")[1]["instances"]
            if not building:
                break
            time.sleep(1)
        elapsed = time.time() - started
        instances = []
        marker = None
        while True:
            path = "/v1/instances?limit=1000" + (f"&marker={marker}" if marker else "")
            page = server.call("GET", path)[1]
            instances += page["instances"]
            marker = page.get("next")
            if not marker:
                break
        running = sum(1 for i in instances if i["state"] == "RUNNING")
        results.append({"name": "create_all", "unit": "instances/s", "samples": 1,
                        "p50": round(total / elapsed, 1),
                        "timed": f"{total} creates ({args.per_host} per host, 8 concurrent requests) -> all settled",
                        "note": f"{running}/{total} RUNNING in {elapsed:.1f} s; controller CPU "
                                f"{round(100 * (cpu_seconds(pid) - cpu_before) / elapsed, 1)}% of one core"})
        bulk = [i["timeline"]["scheduled"] - i["timeline"]["persisted"] for i in instances
                if i["timeline"].get("scheduled") and i["timeline"].get("persisted")]
        results.append(run.result("watch_latency_bulk", f"commit (persisted) -> the agent has it (scheduled), "
                                  f"creates of {args.per_host} on each of {args.hosts} hosts", bulk))
        time.sleep(5)
        cpu = window([pid] + sim_pids, 20)
        results.append({"name": "controller_idle_cpu_full", "unit": "% of one core", "samples": 1, "p50": cpu[pid],
                        "timed": f"{args.hosts} hosts, {running} instances RUNNING, 20 s window",
                        "note": f"simulator processes: {[cpu[p] for p in sim_pids]}"})
        results.append({"name": "controller_rss_full", "unit": "MiB", "samples": 1, "p50": round(rss_mib(pid), 1),
                        "timed": f"{args.hosts} hosts, {running} instances RUNNING"})

        singles = []
        for index in range(args.singles):
            host = random.choice(sim_hosts)
            status, answer = server.call("POST", "/v1/instances", {"image": "hello", "name": f"s{index}",
                                                                    "host": host, "wait": True})
            assert status == 201, answer
            tl = answer["instances"][0]["timeline"]
            if tl.get("scheduled") and tl.get("persisted"):
                singles.append(tl["scheduled"] - tl["persisted"])
        results.append(run.result("watch_latency_single", f"a single create committed -> its agent has it, "
                                  f"with {args.hosts} hosts and {running} instances", singles, goal="p50 <= 1 ms"))
    finally:
        stop_simulators(sims)
        server.stop()
        shutil.rmtree(server.data, ignore_errors=True)
        shutil.rmtree(sim_dir, ignore_errors=True)
        shutil.rmtree(kernel_dir, ignore_errors=True)
    for r in results:
        r.pop("raw_ns", None)
        print(f"| {r['name']} | {r['samples']} | {r['p50']} | {r.get('p90', '')} | {r.get('p99', '')} | "
              f"{r['unit']} | {r.get('note', '')} |")
    out = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "revision": run.revision(),
           "hosts": args.hosts, "per_host": args.per_host, "processes": args.processes, "notes": notes,
           "results": results}
    write_results("scale", out)


if __name__ == "__main__":
    main()
