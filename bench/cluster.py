#!/usr/bin/python3
"""Many hosts, side by side in one run (as root): a controller and namespace hosts, each with its own
`swiftlet agent` process joined over mutual TLS, on the same 2 cores.

  bench/cluster.py [--rounds N] [--changes N] [--quick]

Rows (see bench/README.md, "Many hosts"):
  - qemu_by_hand_cold / qemu_by_hand_cold_in_namespace: QEMU started by hand, in the root namespace and
    inside the namespace host, spawn -> READY on its stdout.
  - swiftlet_api_cold_local: the controller's own host (in-process agent), accepted -> READY.
  - swiftlet_api_cold_remote: a namespace host (remote agent, mutual TLS), accepted -> READY.
  - remote_accepted_to_vmm_spawned: accepted -> VMM spawned on the remote host.
  - watch_latency: commit of a create (`persisted`) -> the remote agent starts on it (`scheduled`).
  - failure_down / failure_moved: kill -9 of an agent -> host DOWN; -> its `always` instance READY elsewhere.
  - creation_rate_one_host / creation_rate_three_hosts: N creates (16 concurrent clients, each `wait`) on the
    controller's own host alone, then spread over 3 namespace hosts alone (the others cordoned), alternated.
Writes bench/results/cluster-latest.json and a dated copy.
"""
import argparse, datetime, json, os, random, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's helpers: percentiles, results, the hand-started QEMU)

ROOT = run.ROOT
SWIFTLET = run.SWIFTLET


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


class Fabric:
    """A bridge for the controller and namespace hosts on veth pairs, as the tests make them."""

    def __init__(self, hosts):
        self.prefix = "sb" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3))
        self.bridge = self.prefix + "br"
        self.subnet = f"10.{random.randint(200, 249)}.{random.randint(1, 254)}"
        self.controller = self.subnet + ".1"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", self.controller + "/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for index in range(1, hosts + 1):
            ns, veth, inside = self.ns(index), self.prefix + f"v{index}", self.prefix + f"e{index}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "link", "set", veth, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.subnet}.{10 + index}/24", "dev", inside)
            sh("ip", "-n", ns, "link", "set", inside, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def ns(self, index):
        return self.prefix + f"h{index}"

    def clean(self):
        for line in sh("ip", "netns", "list").stdout.splitlines():
            name = line.split(" ")[0]
            if name.startswith(self.prefix):
                for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                    os.kill(int(pid), signal.SIGKILL)
                sh("ip", "netns", "del", name, check=False)
        for line in sh("ip", "-o", "link", "show").stdout.splitlines():
            name = line.split(": ")[1].split("@")[0]
            if name.startswith(self.prefix):
                sh("ip", "link", "del", name, check=False)


class Controller(run.Server):
    """run.Server with the agent listener open on the fabric."""

    def __init__(self, fabric, lease_ms=10000, renew_ms=2000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.agent_port = s.getsockname()[1]
        config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({"agentPort": self.agent_port, "agentNames": [fabric.controller], "leaseDurationMs": lease_ms,
                   "leaseRenewMs": renew_ms}, config)
        config.close()
        self.agent_data = []
        super().__init__(extra_args=["--config", config.name])
        os.remove(config.name)

    def join(self, fabric, index):
        token = self.call("POST", "/v1/hosts/join-tokens", {"ttlSeconds": 600})[1]["token"]
        data = tempfile.mkdtemp(prefix=f"swiftlet-bench-agent{index}-")
        self.agent_data.append(data)
        log = open(data + ".log", "w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", fabric.ns(index), SWIFTLET, "agent", "--controller",
             f"https://{fabric.controller}:{self.agent_port}", "--join-token", token, "--data", data, "--name",
             f"node{index}", "--log-level", "warning"], stdout=log, stderr=log, start_new_session=True)
        for _ in range(600):
            hosts = self.call("GET", "/v1/hosts")[1]["hosts"]
            if any(h["id"] == f"host-node{index}" and h.get("status") == "UP" for h in hosts):
                return proc
            time.sleep(0.1)
        raise RuntimeError(f"node{index} did not join: " + open(data + ".log").read()[-500:])


def by_hand_in_namespace(fabric, index, kernel, accelerator):
    """The hand-started QEMU, timed by a process already inside the namespace (no `ip netns exec` in it)."""
    code = ("import sys; sys.path.insert(0, %r); import run; print(run.hand_qemu_ready(%r, %r))"
            % (os.path.dirname(os.path.abspath(__file__)), kernel, accelerator))
    out = sh("ip", "netns", "exec", fabric.ns(index), sys.executable, "-c", code).stdout
    return int(out.strip().splitlines()[-1])


def create(server, name, host, wait=True, restart=None):
    body = {"image": "hello", "name": name, "host": host, "wait": wait}
    if restart:
        body["restartPolicy"] = restart
    status, answer = server.call("POST", "/v1/instances", body)
    if status != 201:
        raise RuntimeError(f"create {name} on {host}: {status} {answer}")
    return answer["instances"][0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=60, help="creates per creation-rate run (0: skip)")
    parser.add_argument("--quick", action="store_true", help="20 rounds, 200 changes, no failure timing")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.changes = 20, 200
    if os.getuid() != 0:
        sys.exit("bench/cluster.py needs root (namespace hosts)")
    kernel = os.path.join(tempfile.mkdtemp(prefix="swiftlet-bench-k-"), "hello.elf")
    subprocess.run([os.path.join(ROOT, "guest/build.sh"), os.path.join(ROOT, "guest/examples/hello"), "-o", kernel],
                   check=True, capture_output=True)
    fabric = Fabric(hosts=3)
    server, agents = None, []
    results = []
    try:
        server = Controller(fabric)
        agents.append(server.join(fabric, 1))
        local_host = next(h for h in server.call("GET", "/v1/hosts")[1]["hosts"] if h["id"] != "host-node1")
        accelerator = local_host["chosenAccelerator"]
        with open(kernel, "rb") as f:
            status, _ = server.call("POST", "/v1/images?name=hello", raw=f.read(), ctype="application/octet-stream")
        assert status == 201, status

        # Cold boots, interleaved: the four contenders in a new random order each round.
        samples = {k: [] for k in ["hand", "hand_ns", "local", "remote", "remote_spawn", "watch_single"]}
        contenders = ["hand", "hand_ns", "local", "remote"]
        for round_index in range(args.rounds + 1):
            random.shuffle(contenders)
            for contender in contenders:
                time.sleep(run.SETTLE_SECONDS)
                if contender == "hand":
                    value = run.hand_qemu_ready(kernel, accelerator)
                elif contender == "hand_ns":
                    value = by_hand_in_namespace(fabric, 1, kernel, accelerator)
                else:
                    host = local_host["id"] if contender == "local" else "host-node1"
                    made = create(server, f"c{round_index}-{contender}", host)
                    tl = made["timeline"]
                    if made["state"] != "RUNNING":
                        raise RuntimeError(f"{contender}: {made['state']} {made.get('reason')}")
                    value = tl["ready"] - tl["accepted"]
                    if contender == "remote" and round_index > 0:
                        samples["remote_spawn"].append(tl["vmmSpawned"] - tl["accepted"])
                        samples["watch_single"].append(tl["scheduled"] - tl["persisted"])
                    server.call("DELETE", f"/v1/instances/{made['id']}")
                if round_index > 0:  # the first round warms caches
                    samples[contender].append(value)
        hand = run.result("qemu_by_hand_cold", "spawn -> READY on stdout (root namespace)", samples["hand"])
        hand["raw_ns"] = samples["hand"]
        hand_ns = run.result("qemu_by_hand_cold_in_namespace", "spawn -> READY, inside the namespace host",
                             samples["hand_ns"])
        results += [hand, hand_ns,
                    run.result("swiftlet_api_cold_local", "accepted -> READY, controller's own host (in process)",
                               samples["local"], baseline=hand, goal="p50 <= 1.10x qemu_by_hand_cold"),
                    run.result("swiftlet_api_cold_remote", "accepted -> READY, namespace host over mutual TLS",
                               samples["remote"], baseline=hand_ns, goal="p50 <= 1.10x qemu_by_hand_cold_in_namespace"),
                    run.result("remote_accepted_to_vmm_spawned", "accepted -> VMM spawned on the namespace host",
                               samples["remote_spawn"], goal="p50 <= 3 ms"),
                    run.result("watch_latency_single", "a single create committed (persisted) -> the remote agent has "
                               "it (scheduled), from the cold loop", samples["watch_single"])]

        # Watch latency: batches of creates on the namespace host (no wait), each one change.
        watch = []
        batch = 50
        while len(watch) < args.changes:
            status, answer = server.call("POST", "/v1/instances", {"image": "hello", "name": f"w{len(watch)}",
                                                                    "host": "host-node1", "count": batch})
            assert status == 201, answer
            ids = [i["id"] for i in answer["instances"]]
            deadline = time.time() + 120
            while time.time() < deadline:
                listed = server.call("GET", "/v1/instances?image=hello")[1]["instances"]
                mine = [i for i in listed if i["id"] in ids]
                if all(i["state"] != "BUILDING" for i in mine):
                    break
                time.sleep(0.2)
            for i in mine:
                tl = i["timeline"]
                if tl.get("persisted") and tl.get("scheduled"):
                    watch.append(tl["scheduled"] - tl["persisted"])
            for instance_id in ids:
                server.call("DELETE", f"/v1/instances/{instance_id}")
        results.append(run.result("watch_latency", "create committed (persisted) -> the remote agent has it "
                                  "(scheduled), creates in batches of 50", watch, goal="p50 <= 1 ms"))

        if args.rate:
            for index in (2, 3):
                agents.append(server.join(fabric, index))
            results += creation_rates(server, local_host["id"], args.rate)
        if not args.quick:
            results += failure(server, fabric, agents)
    finally:
        for proc in agents:
            proc.kill()
        if server:
            server.stop()
            for data in server.agent_data:
                shutil.rmtree(data, ignore_errors=True)
                if os.path.exists(data + ".log"):
                    os.remove(data + ".log")
        fabric.clean()
        shutil.rmtree(os.path.dirname(kernel), ignore_errors=True)
    for r in results:
        r.pop("raw_ns", None)
        print(f"| {r['name']} | {r['samples']} | {r['p50']} | {r['p90']} | {r['p99']} | "
              f"{r.get('ratio', '')} | {r.get('goal', '')} |")
    out = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "revision": run.revision(),
           "results": results}
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    for name in ["cluster-latest.json", f"cluster-{stamp}.json"]:
        with open(os.path.join(ROOT, "bench/results", name), "w") as f:
            json.dump(out, f, indent=1)


def creation_rates(server, local_id, count, repetitions=2, concurrency=16):
    """Instances/s on the controller's host alone against 3 namespace hosts alone, alternated."""
    from concurrent.futures import ThreadPoolExecutor
    remote = ["host-node1", "host-node2", "host-node3"]

    def place_on(hosts):
        for host in [local_id] + remote:
            server.call("POST", f"/v1/hosts/{host}/{'uncordon' if host in hosts else 'cordon'}")

    def one_run(prefix):
        def create(i):
            return server.call("POST", "/v1/instances", {"image": "hello", "name": f"{prefix}-{i}", "wait": True})
        start = run.now()
        with ThreadPoolExecutor(concurrency) as pool:
            answers = list(pool.map(create, range(count)))
        elapsed = run.now() - start
        made = [b["instances"][0] for s, b in answers if s == 201]
        running = sum(1 for i in made if i["state"] == "RUNNING")
        spread = sorted({i["hostId"] for i in made})
        for instance in made:
            server.call("DELETE", f"/v1/instances/{instance['id']}")
        time.sleep(1)
        return running / (elapsed / 1e9), running, spread

    rates = {"one": [], "three": []}
    notes = {"one": "", "three": ""}
    for repetition in range(repetitions):
        for kind, hosts in (("one", [local_id]), ("three", remote)):
            place_on(hosts)
            rate, running, spread = one_run(f"r{repetition}{kind}")
            rates[kind].append(rate)
            notes[kind] = f"{running}/{count} RUNNING on {', '.join(spread)}"
    place_on([local_id] + remote)
    out = []
    for kind, name in (("one", "creation_rate_one_host"), ("three", "creation_rate_three_hosts")):
        out.append({"name": name, "timed": f"{count} creates, {concurrency} concurrent clients each with wait: "
                    "first POST -> last READY", "samples": len(rates[kind]), "unit": "instances/s",
                    "p50": round(statistics.median(rates[kind]), 2), "p90": round(max(rates[kind]), 2),
                    "p99": round(max(rates[kind]), 2), "raw": [round(r, 2) for r in rates[kind]],
                    "note": notes[kind]})
    out[1]["baseline"] = out[0]["name"]
    out[1]["ratio"] = round(out[1]["p50"] / out[0]["p50"], 3)
    out[1]["goal"] = ">= 0.9x the one-host rate"
    return out


def failure(server, fabric, agents, runs=3):
    """kill -9 of an agent -> host DOWN, -> its `always` instance READY on another host (default lease)."""
    down, moved = [], []
    for attempt in range(runs):
        made = create(server, f"f{attempt}", "host-node1", restart="always")
        agents[0].kill()
        agents[0].wait()
        killed = run.now()
        seen_down = None
        while True:
            host = next(h for h in server.call("GET", "/v1/hosts")[1]["hosts"] if h["id"] == "host-node1")
            if seen_down is None and host.get("status") == "DOWN":
                seen_down = run.now()
            instance = server.call("GET", f"/v1/instances/{made['id']}")[1]
            if instance["hostId"] != "host-node1" and instance["state"] == "RUNNING":
                moved.append(run.now() - killed)
                break
            time.sleep(0.02)
        down.append(seen_down - killed)
        server.call("DELETE", f"/v1/instances/{made['id']}")
        data = [a for a in agents[0].args if a.startswith("/tmp/swiftlet-bench-agent1-")][0]
        agents[0] = subprocess.Popen(
            ["ip", "netns", "exec", fabric.ns(1), SWIFTLET, "agent", "--controller",
             f"https://{fabric.controller}:{server.agent_port}", "--data", data, "--name", "node1",
             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(300):
            host = next(h for h in server.call("GET", "/v1/hosts")[1]["hosts"] if h["id"] == "host-node1")
            if host.get("status") == "UP":
                break
            time.sleep(0.1)
    return [run.result("failure_down", "kill -9 of the agent -> host DOWN (lease 10 s, renewed every 2 s)", down,
                       goal="<= expiry + 1 s = 11 s"),
            run.result("failure_moved", "kill -9 of the agent -> its `always` instance RUNNING elsewhere", moved,
                       goal="<= expiry + 2 s = 12 s")]


if __name__ == "__main__":
    main()
