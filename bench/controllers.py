#!/usr/bin/python3
"""Several controllers on one PostgreSQL database, side by side in one run.

  bench/controllers.py [--quick] [--kills 20] [--hosts 8] [--creates 300]

Three `swiftlet server --controller-only` processes share a fresh PostgreSQL database
(scripts/setup-postgres.sh) and a data directory, on this machine's 2 cores. The hosts are
SIMULATED: `swiftlet agent --simulate N` (one process, N agents, each with its own certificate,
watch stream and lease, and the fake hypervisor driver: no VMM, a guest READY at once), and each
agent knows all three controllers. So what is measured is the control plane: the API, the store
and the agent link, not QEMU.

Rows:
  - creation_rate_1_controller / creation_rate_3_controllers: --creates creates (16 concurrent
    clients, `wait: true`), first POST -> last answer with the instance RUNNING, sent all to one
    controller, or round-robin over the three. Rounds alternate the order; the goal is 3 >= 1.
  - leader_failover: --kills times, `kill -9` of the leader -> another controller says it is the
    leader (GET /v1/health, polled every 20 ms): the moment the new leader can act. The killed
    controller is started again before the next kill. Goal: p50 <= 2 s.
Writes bench/results/controllers-<stamp>.json and prints a table.
"""
import argparse, datetime, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

ROOT = bench.ROOT
SWIFTLET = bench.SWIFTLET


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Controller:
    """One `swiftlet server --controller-only` on the shared data directory and database."""

    def __init__(self, data, database, index):
        self.data, self.database, self.index = data, database, index
        self.port, self.agent_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = f"{data}-controller{index}.log"
        self.proc = None
        self.start()

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [SWIFTLET, "server", "--controller-only", "--data", self.data, "--database", self.database,
             "--port", str(self.port), "--agent-port", str(self.agent_port), "--agent-host", "127.0.0.1",
             "--log-level", os.environ.get("SWIFTLET_LOG_LEVEL", "notice")],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.health() is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"controller {self.index} did not start: see {self.log_path}")

    def health(self):
        try:
            with urllib.request.urlopen(self.base + "/v1/health", timeout=1) as r:
                return json.loads(r.read())
        except Exception:
            return None

    def call(self, method, path, body=None, raw=None, ctype="application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + open(os.path.join(self.data, "admin.token")).read().strip())
        if data is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def creation_rate(controllers, count, label, offset):
    """`count` creates over `controllers` round-robin, 16 at a time: instances RUNNING per second."""
    def create(i):
        c = controllers[i % len(controllers)]
        started = time.monotonic_ns()
        status, body = c.call("POST", "/v1/instances", {"image": "hello", "name": f"r{offset}-{i}", "wait": True})
        ok = status == 201 and body["instances"][0]["state"] == "RUNNING"
        return ok, time.monotonic_ns() - started

    start = time.monotonic_ns()
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(create, range(count)))
    elapsed = time.monotonic_ns() - start
    running = sum(1 for ok, _ in outcomes if ok)
    row = bench.result(f"creation_rate_{label}", f"{count} creates (16 concurrent clients, wait): first POST -> last "
                       f"RUNNING answer, {label.replace('_', ' ')}", [ns for _, ns in outcomes],
                       note=f"{running}/{count} RUNNING")
    row["instances_per_second"] = round(running / (elapsed / 1e9), 2)
    return row


def delete_all(controller):
    while True:
        instances = controller.call("GET", "/v1/instances?limit=500")[1]["instances"]
        if not instances:
            return
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: controller.call("DELETE", f"/v1/instances/{i['id']}"), instances))


def leader_failover(controllers, kills):
    samples, terms = [], []
    for _ in range(kills):
        leaders = [c for c in controllers if (c.health() or {}).get("leader")]
        deadline = time.time() + 15
        while len(leaders) != 1 and time.time() < deadline:
            time.sleep(0.05)
            leaders = [c for c in controllers if (c.health() or {}).get("leader")]
        if len(leaders) != 1:
            raise RuntimeError(f"{len(leaders)} leaders")
        leader = leaders[0]
        others = [c for c in controllers if c is not leader]
        killed = time.monotonic_ns()
        leader.kill()
        new = None
        while new is None and time.monotonic_ns() - killed < 30e9:
            for c in others:
                if (c.health() or {}).get("leader"):
                    new = c
                    break
            else:
                time.sleep(0.02)
        if new is None:
            raise RuntimeError("no new leader within 30 s")
        samples.append(time.monotonic_ns() - killed)
        leader.start()
    return bench.result("leader_failover", "kill -9 of the leader -> another controller reports leader:true "
                        "(GET /v1/health every 20 ms)", samples, goal="p50 <= 2 s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a run of a few minutes")
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--creates", type=int, default=None)
    args = parser.parse_args()
    kills = args.kills or (5 if args.quick else 20)
    creates = args.creates or (100 if args.quick else 300)
    rounds = 1 if args.quick else 2
    kernel = os.path.join(tempfile.mkdtemp(prefix="swiftlet-bench-k-"), "hello.elf")
    subprocess.run([os.path.join(ROOT, "guest/build.sh"), os.path.join(ROOT, "guest/examples/hello"), "-o", kernel],
                   check=True, capture_output=True)
    url = subprocess.run([os.path.join(ROOT, "scripts/setup-postgres.sh"), "--fresh", "swiftlet_bench_ctl"],
                         check=True, capture_output=True, text=True).stdout.strip()
    data = tempfile.mkdtemp(prefix="swiftlet-bench-ctl-")
    controllers, sims, results = [], None, []
    try:
        controllers = [Controller(data, url, 0)]
        controllers += [Controller(data, url, i) for i in (1, 2)]
        first = controllers[0]
        status, _ = first.call("POST", "/v1/images?name=hello", raw=open(kernel, "rb").read(),
                               ctype="application/octet-stream")
        assert status == 201, status
        tokens = [first.call("POST", "/v1/hosts/join-tokens", {"ttlSeconds": 3600})[1]["token"]
                  for _ in range(args.hosts)]
        token_file = os.path.join(data, "tokens")
        open(token_file, "w").write("\n".join(tokens))
        sim_log = open(f"{data}-sim.log", "w")
        sims = subprocess.Popen(
            [SWIFTLET, "agent", "--controller", ",".join(f"https://127.0.0.1:{c.agent_port}" for c in controllers),
             "--data", os.path.join(data, "sim"), "--name", "sim", "--simulate", str(args.hosts),
             "--join-tokens-file", token_file, "--log-level", "warning"],
            stdout=sim_log, stderr=sim_log, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            hosts = first.call("GET", "/v1/hosts")[1]["hosts"]
            if sum(1 for h in hosts if h["status"] == "UP") >= args.hosts:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("the simulated hosts did not all join")
        rates = {"1_controller": [], "3_controllers": []}
        for r in range(rounds):
            order = ["1_controller", "3_controllers"] if r % 2 == 0 else ["3_controllers", "1_controller"]
            for label in order:
                row = creation_rate(controllers[:1] if label == "1_controller" else controllers, creates, label,
                                    f"{r}{label[0]}")
                rates[label].append(row)
                delete_all(first)
        for label, rows in rates.items():
            best = rows[0]
            best["instances_per_second_rounds"] = [row["instances_per_second"] for row in rows]
            best["instances_per_second"] = round(sum(best["instances_per_second_rounds"]) / len(rows), 2)
            results.append(best)
        results.append(leader_failover(controllers, kills))
    finally:
        if sims:
            sims.send_signal(signal.SIGTERM)
            try:
                sims.wait(timeout=20)
            except subprocess.TimeoutExpired:
                sims.kill()
        for c in controllers:
            c.stop()
        shutil.rmtree(data, ignore_errors=True)
    by_name = {r["name"]: r for r in results}
    ratio = round(by_name["creation_rate_3_controllers"]["instances_per_second"]
                  / by_name["creation_rate_1_controller"]["instances_per_second"], 3)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "git": bench.revision(), "quick": args.quick, "simulated_hosts": args.hosts,
              "three_over_one_creation_rate": ratio,
              "results": [{k: v for k, v in r.items() if k != "raw_ns"} for r in results]}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results", f"controllers-{stamp}{'-quick' if args.quick else ''}.json"),
              "w") as f:
        json.dump(report, f, indent=1)
    print(f"\ncontrollers bench {report['date']} rev {report['git']} ({args.hosts} simulated hosts)\n")
    print("| name | n | p50 ms | p90 ms | max / rate |")
    print("|---|---|---|---|---|")
    for r in report["results"]:
        extra = f"{r['instances_per_second']} inst/s {r.get('instances_per_second_rounds', '')}" \
            if "instances_per_second" in r else f"max {max(r['raw_ms'])} ms"
        print(f"| {r['name']} | {r['samples']} | {r['p50']} | {r['p90']} | {extra} |")
    print(f"\ncreation rate, 3 controllers / 1 (goal >= 1): {ratio}; "
          f"leader failover p50 {by_name['leader_failover']['p50']} ms (goal <= 2000)")


if __name__ == "__main__":
    main()
