#!/usr/bin/python3
"""The Podman + CRIU migration baseline (issue 17), and Swiftlet beside it on the same client and link
(as root; run on demand, not in `make test`; needs scripts/setup-criu.sh first).

  bench/podman_criu.py [--rounds N] [--links unshaped,100mbit,10mbit] [--parallel N]
                       [--swiftlet BINARY] [--swiftlet-modes live[,stateful]] [--swiftlet-parallel N]

Two namespace hosts (bench/cluster.py's Fabric: namespaces h1, h2 on a bridge, each on its own veth;
the path between them, h1's veth -> bridge -> h2's veth, is "the link") and a client namespace.

Podman + CRIU: the kv service (bench/criu/kv.c, the HTTP interface of guest/examples/kv, static C)
runs as a container made by `podman import` of a rootfs tar, on runc, in a network namespace of its
own on host A (made by the bench as a bridge network would: a veth into the host, the service
address; the host routes to it and answers ARP for it on its service uplink, a second veth into
the bridge), joined by `--network ns:PATH`, PATH a bind mount. One migration A -> B:
  1. `podman container checkpoint --tcp-established --export=FILE` on A (CRIU; the container stops;
     CRIU keeps the container's namespace locked until the restore);
  2. FILE crosses the link (bench/criu/xfer.py, plain TCP from A to B, both ends already running)
     while `podman rm` drops the old container (one podman here plays both hosts: a real B would
     not have it); the container's namespace is made on B, PATH bound to it, and B sends a
     gratuitous ARP for the service address;
  3. `podman container restore --tcp-established --import=FILE` on B.
Swiftlet: a controller, an agent in each namespace host, a kv instance on an overlay network (VXLAN
across the link), the client on host 1's bridge of that network; `POST /v1/instances/{id}/migrate`
with {"host", "mode"}, then `GET /v1/migrations/{id}` until it ends.

The client (bench/criu/client.py) sends `POST /counter` every 1 ms, each on a new connection, and
records every answer. Per migration:
  - downtime: the longest gap between two answers the client got from the start of the migration to
    the first answer after it ended (the last answer from the source -> the first from the target);
  - total: start of the migration -> the target answering (Podman: start of the checkpoint -> the
    client's first answer after it; Swiftlet: accepted -> completed, the controller's figure);
  - link bytes: what the move put on the source host's veth (rx + tx, frame bytes): Podman, the
    transfer's packets (iptables counters in the host); Swiftlet, the veth's counters less the
    client's VXLAN packets. And the system's own count (Podman: the checkpoint archive's size;
    Swiftlet: the migration's transferredBytes).
  - continuity: the counter after the run == the increments the client had acknowledged.
Links: unshaped veth; tc tbf at 100 and 10 Mbit/s on both ends of both hosts' veths. This kernel
has no netem: no delay is added. Parallel: N services moved at once over the 10 Mbit/s link,
first checkpoint (first POST) -> every service answering on the target.
Writes bench/results/podman-criu-latest.json and a dated copy.
"""
import argparse, datetime, json, os, re, signal, shutil, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6, help="migrations per link and system")
    parser.add_argument("--links", default="unshaped,100mbit,10mbit")
    parser.add_argument("--parallel", type=int, default=50, help="services moved at once over 10 Mbit/s (0: skip)")
    parser.add_argument("--swiftlet", help="a swiftlet binary: run Swiftlet beside Podman")
    parser.add_argument("--swiftlet-modes", default="live")
    parser.add_argument("--swiftlet-parallel", type=int, default=None, help="default: --parallel")
    parser.add_argument("--no-podman", action="store_true")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.swiftlet:
    os.environ["SWIFTLET_BIN"] = os.path.abspath(ARGS.swiftlet)
import run  # noqa: E402
from cluster import Controller, Fabric  # noqa: E402

RATES = {"unshaped": None, "100mbit": "100mbit", "10mbit": "10mbit"}
BURST = {"100mbit": "128kb", "10mbit": "32kb"}
XFER_PORT = 7019
now = time.monotonic_ns


def sh(*args, check=True, timeout=60):
    r = subprocess.run(list(args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.returncode} {r.stderr.strip()[-400:]}")
    return r


def podman(*args, timeout=120, check=True):
    """podman with stdin/stdout/stderr redirected (it can hang otherwise) and under `timeout`."""
    with tempfile.TemporaryFile("w+") as log:
        rc = subprocess.call(["timeout", str(timeout), "podman", "--runtime", "runc", *args],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.seek(0)
        out = log.read()
    if check and rc != 0:
        detail = ""
        for path in set(re.findall(r"log file: (\S+?\.log)", out)):
            if os.path.exists(path):
                detail += " | " + " / ".join(line.strip() for line in open(path) if "Error" in line)[-800:]
        raise RuntimeError(f"podman {' '.join(args)}: exit {rc}: {out.strip()[-600:]}{detail}")
    return out


class Line:
    """A long-running helper in a namespace, driven by lines on stdin, answering lines on stdout."""

    def __init__(self, ns, *argv, log=None):
        self.log = log
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(log, "w") if log else subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.seen = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("ready")

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                key = " ".join(line.split()[:2])
                self.seen[key] = line.strip()
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, key, timeout=600):
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.seen or self.proc.poll() is not None, timeout):
                raise RuntimeError(f"timed out waiting for {key!r}: " + (open(self.log).read()[-500:] if self.log else ""))
            if key not in self.seen:
                raise RuntimeError(f"helper exited waiting for {key!r}: " + (open(self.log).read()[-500:] if self.log else ""))
            return self.seen.pop(key)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Client:
    """bench/criu/client.py in a namespace; stop() returns its answers and failures."""

    def __init__(self, ns, address, port=80):
        self.out = tempfile.mktemp(prefix="swiftlet-criu-client-", suffix=".json")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.join(HERE, "criu/client.py"),
                                      address, str(port), self.out, "--timeout-ms", "5000",
                                      "--max-inflight", "4000"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        with open(self.out) as f:
            data = json.load(f)
        os.remove(self.out)
        return data


def probe(ns, address, tries=50):
    """One POST /counter from the client's namespace (curl): the new value."""
    for _ in range(tries):
        r = sh("ip", "netns", "exec", ns, "curl", "-s", "-f", "-m", "2", "-X", "POST", f"http://{address}/counter",
               check=False)
        if r.returncode == 0 and r.stdout.strip().isdigit():
            return int(r.stdout.strip())
        time.sleep(0.1)
    raise RuntimeError(f"{address} does not answer from {ns}")


def link_bytes(fabric, index):
    """What crossed a host's veth (its side of the link), in frame bytes: `frames` (rx + tx, the veth's
    counters) and, from the host's iptables counters (IP bytes + 14 bytes of Ethernet header a
    packet), `xfer` (Podman's checkpoint transfer, TCP port XFER_PORT), `vxlan` (the overlay's client
    traffic for Swiftlet once the instance runs on the other host) and `relayed` (client packets the
    host forwarded over the link, e.g. while the client's ARP entry still named the old host)."""
    base = f"/sys/class/net/{fabric.prefix}v{index}/statistics/"
    out = {"frames": sum(int(open(base + name).read()) for name in ("rx_bytes", "tx_bytes"))}
    rules = sh("ip", "netns", "exec", fabric.ns(index), "iptables", "-w", "-nvxL").stdout
    for line in rules.splitlines():
        m = re.search(r"/\* bench-(\w+) \*/", line)
        if m:
            packets, octets = line.split()[:2]
            out[m.group(1)] = out.get(m.group(1), 0) + int(octets) + 14 * int(packets)
    return out


def delta(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items()}


def count_client(fabric, client_address):
    """Counting rules (no target) in each host for the client's traffic crossing its veth."""
    for index in (1, 2):
        for rule in (["INPUT", "-p", "udp", "--dport", "4789"], ["OUTPUT", "-p", "udp", "--dport", "4789"]):
            sh("ip", "netns", "exec", fabric.ns(index), "iptables", "-w", "-I", *rule, "-m", "comment", "--comment",
               "bench-vxlan")
        e = f"{fabric.prefix}e{index}"
        for comment, rule in (("bench-relayed", ["FORWARD", "-o", e]), ("bench-relayed", ["FORWARD", "-i", e]),
                              ("bench-xfer", ["OUTPUT", "-o", e, "-p", "tcp", "--dport", str(XFER_PORT)]),
                              ("bench-xfer", ["INPUT", "-i", e, "-p", "tcp", "--sport", str(XFER_PORT)]),
                              ("bench-xfer", ["INPUT", "-i", e, "-p", "tcp", "--dport", str(XFER_PORT)]),
                              ("bench-xfer", ["OUTPUT", "-o", e, "-p", "tcp", "--sport", str(XFER_PORT)])):
            sh("ip", "netns", "exec", fabric.ns(index), "iptables", "-w", "-A", *rule, "-m", "comment", "--comment",
               comment)


def shape(fabric, link):
    rate = RATES[link]
    for index in (1, 2):
        for netns, dev in ((None, f"{fabric.prefix}v{index}"), (fabric.ns(index), f"{fabric.prefix}e{index}")):
            pre = ["ip", "netns", "exec", netns] if netns else []
            sh(*pre, "tc", "qdisc", "del", "dev", dev, "root", check=False)
            if rate:
                sh(*pre, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", BURST[link],
                   "latency", "100ms")


def downtime_of(answers, start, end):
    """The longest gap between consecutive answers, the later one in (start, end]."""
    times = [t for t, _ in answers]
    gaps = [b - a for a, b in zip(times, times[1:]) if start < b <= end]
    return max(gaps) if gaps else None


def continuity(data, base, final):
    """The counter went base -> final (final: a probe after the client stopped) with the client's answers."""
    values = sorted(v for _, v in data["answers"])
    acked = len(values)
    expected = final - base - 1
    kinds = {}
    for _, kind in data["failures"]:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"acknowledged": acked, "counter_increments": expected, "ok": acked == expected and
            values == list(range(base + 1, final)),
            # increments the server made whose answer the client never had (it gave up after 5 s)
            "unacknowledged": expected - acked,
            # an acknowledged increment lost would make the counter answer a value twice
            "duplicates": acked - len(set(values)), "max_value_ok": not values or values[-1] < final,
            "client_failures": len(data["failures"]), "failure_kinds": kinds, "client_started": data["started"]}


# ---------------------------------------------------------------- Podman + CRIU

class Podman:
    def __init__(self, fabric, work):
        self.fabric, self.work = fabric, work
        self.image = f"localhost/{fabric.prefix}-kv"
        self.mounts = os.path.join("/run", f"{fabric.prefix}-criu")
        self.containers = set()
        self.services = {}  # index -> host index
        os.makedirs(self.mounts, exist_ok=True)
        for index in (1, 2):
            os.makedirs(os.path.join(work, f"h{index}"), exist_ok=True)
            # Each host meets its clients on a second veth into the bridge, its service uplink: it
            # routes to its containers and answers ARP for them there (proxy ARP, per address). The link (the
            # first veth, shaped and counted) carries what goes between the hosts, the transfer.
            up, inside = f"{fabric.prefix}w{index}", f"{fabric.prefix}f{index}"
            sh("ip", "link", "add", up, "type", "veth", "peer", "name", inside, "netns", fabric.ns(index))
            sh("ip", "link", "set", up, "master", fabric.bridge, "up")
            sh("ip", "-n", fabric.ns(index), "link", "set", inside, "up")
            sh("ip", "-n", fabric.ns(index), "route", "add", f"{fabric.subnet}.13/32", "dev", inside)
            for key in ("net.ipv4.ip_forward=1", f"net.ipv4.neigh.{inside}.proxy_delay=0"):
                sh("ip", "netns", "exec", fabric.ns(index), "sysctl", "-q", "-w", key)
        # The image: the static server and nothing else, imported from a rootfs tar.
        rootfs = os.path.join(work, "rootfs")
        os.makedirs(os.path.join(rootfs, "etc"))
        os.makedirs(os.path.join(rootfs, "tmp"))
        sh("gcc", "-O2", "-static", "-pthread", "-o", os.path.join(rootfs, "kv"), os.path.join(HERE, "criu/kv.c"))
        sh("tar", "-C", rootfs, "-cf", os.path.join(work, "rootfs.tar"), ".")
        podman("import", "--change", 'CMD ["/kv"]', os.path.join(work, "rootfs.tar"), self.image)
        self.image_bytes = os.path.getsize(os.path.join(work, "rootfs.tar"))
        # runc hands CRIU the config file its `org.criu.config` annotation names. A connection the
        # kernel accepted but the server has not (the listen queue) cannot be dumped; CRIU refuses
        # the whole checkpoint unless told to drop such connections (their clients see a reset).
        self.criu_config = os.path.join(work, "criu.conf")
        with open(self.criu_config, "w") as f:
            f.write("skip-in-flight\n")
        # Resident transfer agents: a receiver in each host, a sender in each towards the other.
        # The client takes a gratuitous ARP at once (the default locktime ignores one that comes
        # within 1 s of the entry's last update: the client would go on sending to the old host).
        sh("ip", "netns", "exec", fabric.ns(3), "sysctl", "-q", "-w", f"net.ipv4.neigh.{fabric.prefix}e3.locktime=0")
        self.recv = {i: Line(fabric.ns(i), sys.executable, os.path.join(HERE, "criu/xfer.py"), "recv",
                             self.addr(i), str(XFER_PORT), os.path.join(work, f"h{i}"),
                             log=os.path.join(work, f"recv{i}.log")) for i in (1, 2)}
        self.send = {i: Line(fabric.ns(i), sys.executable, os.path.join(HERE, "criu/xfer.py"), "send",
                             self.addr(3 - i), str(XFER_PORT), log=os.path.join(work, f"send{i}.log")) for i in (1, 2)}

    def addr(self, host):
        return f"{self.fabric.subnet}.{10 + host}"

    def service_address(self, i):
        return f"{self.fabric.subnet}.{100 + i}"

    def name(self, i):
        return f"{self.fabric.prefix}-kv{i}"

    def netns_path(self, i):
        return os.path.join(self.mounts, f"net-{i}")

    def svc_ns(self, i, host):
        return f"{self.fabric.prefix}s{i}h{host}"

    def plumb(self, i, host):
        """The container's own network namespace on a host, as podman's bridge network would make it: a
        veth into the host, the service address on it, the host routing to it and answering ARP for it.
        (CRIU locks the network namespace of the container it dumps until the restore: it must not be
        the host's.)"""
        ns, host_ns, dev = self.svc_ns(i, host), self.fabric.ns(host), f"{self.fabric.prefix}q{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", dev, "netns", host_ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
        for step in (["-n", ns, "addr", "add", self.service_address(i) + "/32", "dev", "eth0"],
                     ["-n", ns, "link", "set", "eth0", "up"], ["-n", ns, "link", "set", "lo", "up"],
                     ["-n", ns, "route", "add", "default", "dev", "eth0"],
                     ["-n", host_ns, "link", "set", dev, "up"]):
            sh("ip", *step)
        for key in (f"net.ipv4.conf.{dev}.proxy_arp=1", f"net.ipv4.neigh.{dev}.proxy_delay=0"):
            sh("ip", "netns", "exec", host_ns, "sysctl", "-q", "-w", key)
        sh("ip", "-n", host_ns, "route", "add", self.service_address(i) + "/32", "dev", dev)
        # Proxy ARP for this address only (the proxy_arp switch would answer for the whole subnet).
        sh("ip", "-n", host_ns, "neigh", "add", "proxy", self.service_address(i), "dev", f"{self.fabric.prefix}f{host}")

    def unplumb(self, i, host):
        sh("ip", "-n", self.fabric.ns(host), "neigh", "del", "proxy", self.service_address(i), "dev",
           f"{self.fabric.prefix}f{host}", check=False)
        sh("ip", "-n", self.fabric.ns(host), "link", "del", f"{self.fabric.prefix}q{i}", check=False)
        sh("ip", "netns", "del", self.svc_ns(i, host), check=False)

    def point(self, i, host):
        path = self.netns_path(i)
        if os.path.ismount(path):
            sh("umount", path)
        open(path, "a").close()
        sh("mount", "--bind", f"/run/netns/{self.svc_ns(i, host)}", path)

    def start(self, i, host=1):
        self.plumb(i, host)
        self.point(i, host)
        podman("run", "-d", "--name", self.name(i), "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
               "--network", "ns:" + self.netns_path(i), "--annotation", "org.criu.config=" + self.criu_config, self.image, "/kv", self.service_address(i), "80")
        self.containers.add(self.name(i))
        self.services[i] = host

    def migrate(self, i):
        src = self.services[i]
        dst = 3 - src
        archive = f"kv{i}-{now()}.tar.zst"
        t = {"start": now()}
        podman("container", "checkpoint", "--tcp-established", "--export=" + os.path.join(self.work, f"h{src}", archive),
               self.name(i))
        t["checkpointed"] = now()
        self.send[src].send(os.path.join(self.work, f"h{src}", archive))
        removed = threading.Thread(target=podman, args=("rm", self.name(i)))
        removed.start()
        self.unplumb(i, src)
        self.plumb(i, dst)
        self.recv[dst].send(f"garp {self.fabric.prefix}f{dst} {self.service_address(i)}")
        self.recv[dst].wait(f"garp {self.service_address(i)}")
        try:
            got = self.recv[dst].wait(f"got {archive}", timeout=120)
        except RuntimeError as e:
            raise RuntimeError(f"{e}; sender: {open(self.send[src].log).read()[-500:]}") from None
        t["transferred"] = now()
        t["archive_bytes"] = int(got.split()[2])
        removed.join()
        self.point(i, dst)
        podman("container", "restore", "--tcp-established", "--import=" + os.path.join(self.work, f"h{dst}", archive))
        t["restored"] = now()
        self.services[i] = dst
        for host in (src, dst):
            path = os.path.join(self.work, f"h{host}", archive)
            if os.path.exists(path):
                os.remove(path)
        return t

    def clean(self):
        for name in self.containers:
            podman("rm", "-f", "-t", "0", name, check=False, timeout=60)
        podman("rmi", "-f", self.image, check=False, timeout=60)
        for line in list(self.recv.values()) + list(self.send.values()):
            line.stop()
        for name in os.listdir(self.mounts):
            path = os.path.join(self.mounts, name)
            while os.path.ismount(path):
                sh("umount", path, check=False)
                if os.path.ismount(path):
                    sh("umount", "-l", path, check=False)
        shutil.rmtree(self.mounts, ignore_errors=True)


def podman_link(pm, fabric, link, rounds):
    client_ns = fabric.ns(3)
    address = pm.service_address(0)
    rows = []
    base = probe(client_ns, address)
    client = Client(client_ns, address)
    time.sleep(1.0)
    marks = []
    try:
        for _ in range(rounds):
            src = pm.services[0]
            before = link_bytes(fabric, src)
            t = pm.migrate(0)
            time.sleep(0.6)  # the client's answers from the target, and the link quiet again
            t["link"] = delta(link_bytes(fabric, src), before)
            # The migration's own bytes on the link: the transfer (the link also carries the other
            # system's control traffic when both run side by side, which is not Podman's).
            t["link_bytes"] = t["link"].get("xfer", 0)
            marks.append(t)
            time.sleep(0.4)
    finally:
        data = client.stop()
    final = probe(client_ns, address)
    answers = data["answers"]
    for t in marks:
        after = [a for a, _ in answers if a > t["checkpointed"]]
        t["first_target_answer"] = after[0] if after else None
        t["downtime"] = downtime_of(answers, t["start"], after[0]) if after else None
        t["total"] = after[0] - t["start"] if after else None
    return {"system": "podman+criu", "link": link, "migrations": marks, "continuity": continuity(data, base, final)}


def podman_parallel(pm, fabric, n):
    """N services on host 1 moved to host 2 at once; total: first checkpoint -> all answering on host 2."""
    started = []
    try:
        for i in range(1, n + 1):
            pm.start(i, 1)
            started.append(i)
    except Exception as e:
        return {"system": "podman+criu", "n": n, "error": f"started {len(started)} of {n}: {e}"}
    before = {i: probe(fabric.ns(3), pm.service_address(i)) for i in started}
    link0 = link_bytes(fabric, 1)
    errors, done = [], {}
    t0 = now()

    def move(i):
        try:
            pm.migrate(i)
            value = probe(fabric.ns(3), pm.service_address(i))
            done[i] = (now(), value == before[i] + 1)
        except Exception as e:  # noqa: BLE001 (reported)
            errors.append(f"kv{i}: {e}")

    threads = [threading.Thread(target=move, args=(i,)) for i in started]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = max(d[0] for d in done.values()) - t0 if done else None
    out = {"system": "podman+criu", "link": "10mbit", "n": n, "moved": len(done), "total_ms": run.ms(total),
           "counters_continue": sum(1 for d in done.values() if d[1]),
           "link_bytes": delta(link_bytes(fabric, 1), link0).get("xfer", 0),
           "errors": errors[:5]}
    for i in started:
        podman("rm", "-f", "-t", "0", pm.name(i), check=False)
        pm.containers.discard(pm.name(i))
        pm.unplumb(i, pm.services.pop(i))
    return out


# ---------------------------------------------------------------- Swiftlet

class Swiftlet:
    def __init__(self, fabric, work):
        self.fabric = fabric
        kernel = os.path.join(work, "kv.elf")
        sh(os.path.join(ROOT, "guest/build.sh"), os.path.join(ROOT, "guest/examples/kv"), "-o", kernel, timeout=900)
        self.server = Controller(fabric)
        self.agents = [self.server.join(fabric, 1), self.server.join(fabric, 2)]
        with open(kernel, "rb") as f:
            status, answer = self.server.call("POST", "/v1/images?name=kv&property=state_interface%3Dkit-console", raw=f.read(),
                                              ctype="application/octet-stream")
        if status != 201:
            raise RuntimeError(f"image upload: {status} {answer}")
        self.prefix24 = f"10.{150 + int(fabric.subnet.split('.')[1]) % 10}.{fabric.subnet.split('.')[2]}"
        status, answer = self.server.call("POST", "/v1/networks", {"name": "overlay", "cidr": self.prefix24 + ".0/24"})
        if status not in (200, 201):
            raise RuntimeError(f"network: {status} {answer}")
        self.network = answer
        self.client_ns = fabric.prefix + "cl"
        self.instances = {}

    def create(self, name, host="node1"):
        status, answer = self.server.call("POST", "/v1/instances", {
            "image": "kv", "name": name, "host": host, "wait": True, "networks": [{"network": "overlay"}]})
        if status != 201 or answer["instances"][0]["state"] != "RUNNING":
            raise RuntimeError(f"create {name}: {status} {answer}")
        made = answer["instances"][0]
        self.instances[name] = made
        return made

    def plug_client(self):
        """The client's namespace on host 1's bridge of the overlay network (as MigrationTests does)."""
        p, ns = self.fabric.prefix, self.client_ns
        bridge = self.server.call("GET", f"/v1/networks/{self.network['id']}")[1].get("bridge") or self.network["bridge"]
        for step in (["netns", "add", ns], ["link", "add", p + "c1", "type", "veth", "peer", "name", p + "c0"],
                     ["link", "set", p + "c0", "netns", ns], ["link", "set", p + "c1", "netns", self.fabric.ns(1)],
                     ["-n", self.fabric.ns(1), "link", "set", p + "c1", "master", bridge, "up"],
                     ["-n", ns, "addr", "add", self.prefix24 + ".250/24", "dev", p + "c0"],
                     ["-n", ns, "link", "set", p + "c0", "up"], ["-n", ns, "link", "set", "lo", "up"]):
            sh("ip", *step)

    def migrate(self, instance_id, host, mode):
        body = {"host": host, "mode": mode}
        start = now()
        status, migration = self.server.call("POST", f"/v1/instances/{instance_id}/migrate", body)
        if status != 202:
            raise RuntimeError(f"migrate to {host} ({mode}): {status} {migration}")
        while True:
            migration = self.server.call("GET", f"/v1/migrations/{migration['id']}")[1]
            if migration["status"] in ("completed", "failed", "cancelled"):
                break
            if now() - start > 600e9:
                raise RuntimeError("migration did not end in 600 s")
            time.sleep(0.01)
        end = now()
        if migration["status"] != "completed":
            raise RuntimeError(f"migration to {host}: {migration['status']} {migration.get('reason')}")
        return start, end, migration

    def stop(self):
        for proc in self.agents:
            proc.kill()
        self.server.stop()
        for data in self.server.agent_data:
            shutil.rmtree(data, ignore_errors=True)
            if os.path.exists(data + ".log"):
                os.remove(data + ".log")


def swiftlet_link(sw, fabric, link, mode, rounds):
    made = sw.instances["kv"]
    address = made["ports"][0]["address"]
    base = probe(sw.client_ns, address)
    client = Client(sw.client_ns, address)
    time.sleep(1.0)
    marks = []
    try:
        for _ in range(rounds):
            current = sw.server.call("GET", f"/v1/instances/{made['id']}")[1]["hostId"]
            src = 1 if current == "host-node1" else 2
            before = link_bytes(fabric, src)
            start, end, migration = sw.migrate(made["id"], f"node{3 - src}", mode)
            time.sleep(0.6)
            crossed = delta(link_bytes(fabric, src), before)
            # Everything on the source's side of the link but the client's own (VXLAN) packets: the
            # migration stream and Swiftlet's control traffic meanwhile.
            marks.append({"start": start, "completed": end, "link": crossed,
                          "link_bytes": crossed["frames"] - crossed.get("vxlan", 0) - crossed.get("relayed", 0),
                          "transferred_bytes": migration.get("transferredBytes"),
                          "api_downtime_ms": migration.get("downtimeMs"), "api_total_ms": migration.get("totalMs"),
                          "mode": migration.get("mode")})
            time.sleep(0.4)
    finally:
        data = client.stop()
    final = probe(sw.client_ns, address)
    answers = data["answers"]
    for t in marks:
        after = [a for a, _ in answers if a > t["completed"]]
        end = after[0] if after else t["completed"]
        t["downtime"] = downtime_of(answers, t["start"], end)
        t["total"] = int(t["api_total_ms"] * 1e6) if t.get("api_total_ms") is not None else t["completed"] - t["start"]
    return {"system": f"swiftlet-{mode}", "link": link, "migrations": marks, "continuity": continuity(data, base, final)}


def swiftlet_parallel(sw, fabric, n, mode):
    names = []
    try:
        for i in range(n):
            sw.create(f"kvp{i}")
            names.append(f"kvp{i}")
    except Exception as e:
        for name in names:
            sw.server.call("DELETE", f"/v1/instances/{sw.instances[name]['id']}")
        return {"system": f"swiftlet-{mode}", "n": n, "error": f"created {len(names)} of {n}: {e}"}
    link0 = link_bytes(fabric, 1)
    done, errors = {}, []
    t0 = now()

    def move(name):
        try:
            start, end, migration = sw.migrate(sw.instances[name]["id"], "node2", mode)
            done[name] = end
        except Exception as e:  # noqa: BLE001 (reported)
            errors.append(f"{name}: {e}")

    threads = [threading.Thread(target=move, args=(name,)) for name in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = max(done.values()) - t0 if done else None
    out = {"system": f"swiftlet-{mode}", "link": "10mbit", "n": n, "moved": len(done), "total_ms": run.ms(total),
           "link_bytes": (lambda d: d["frames"] - d.get("vxlan", 0))(delta(link_bytes(fabric, 1), link0)), "errors": errors[:5]}
    for name in names:
        sw.server.call("DELETE", f"/v1/instances/{sw.instances.pop(name)['id']}")
    return out


# ---------------------------------------------------------------- report

def summarize(run_):
    ms = [m for m in run_["migrations"] if m.get("downtime") is not None]
    down = [m["downtime"] for m in ms]
    total = [m["total"] for m in ms if m.get("total") is not None]
    link = [m["link_bytes"] for m in run_["migrations"]]
    own = [m.get("archive_bytes", m.get("transferred_bytes")) for m in run_["migrations"]]
    own = [b for b in own if b is not None]
    return {"system": run_["system"], "link": run_["link"], "migrations": len(run_["migrations"]),
            "downtime_ms": {"p50": run.ms(run.pct(down, 50)), "p90": run.ms(run.pct(down, 90)),
                            "max": run.ms(max(down)) if down else None, "raw": [run.ms(d) for d in down]},
            "total_ms": {"p50": run.ms(run.pct(total, 50)), "max": run.ms(max(total)) if total else None,
                         "raw": [run.ms(d) for d in total]},
            "link_bytes_p50": int(statistics.median(link)) if link else None,
            "veth_frames_p50": int(statistics.median(m["link"]["frames"] for m in run_["migrations"]))
            if run_["migrations"] else None,
            "relayed_client_bytes_p50": int(statistics.median(m["link"].get("relayed", 0) for m in run_["migrations"]))
            if run_["migrations"] else None,
            "phases_ms_p50": {k: run.ms(run.pct([m[b] - m[a] for m in run_["migrations"] if a in m and b in m], 50))
                              for k, a, b in (("checkpoint", "start", "checkpointed"),
                                              ("transfer", "checkpointed", "transferred"),
                                              ("restore", "transferred", "restored"))
                              if any(b in m for m in run_["migrations"])},
            "own_bytes_p50": int(statistics.median(own)) if own else None,
            "continuity": run_["continuity"]}


def table(rows, parallel):
    print("| link | system | n | downtime p50 / p90 / max (ms) | total p50 (ms) | link bytes p50 | own bytes p50 | "
          "counter == acked | downtime ratio | link bytes ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = r["downtime_ms"]
        print(f"| {r['link']} | {r['system']} | {r['migrations']} | {d['p50']} / {d['p90']} / {d['max']} | "
              f"{r['total_ms']['p50']} | {r['link_bytes_p50']} | {r['own_bytes_p50']} | "
              f"{'yes' if r['continuity']['ok'] else 'no'} ({r['continuity']['acknowledged']}/{r['continuity']['counter_increments']}, "
              f"dup {r['continuity']['duplicates']}) | "
              f"{r.get('downtime_ratio', '')} | {r.get('link_bytes_ratio', '')} |")
    for p in parallel:
        print(f"| 10mbit parallel | {p['system']} | {p['n']} | | total {p.get('total_ms')} ms, moved "
              f"{p.get('moved')} | {p.get('link_bytes')} | | {p.get('counters_continue', '')} | "
              f"{p.get('total_ratio', '')} | {p.get('error', '') or '; '.join(p.get('errors', []))} |")


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("SIGTERM"))  # clean up on the way out
    if os.getuid() != 0:
        sys.exit("bench/podman_criu.py needs root (namespace hosts, podman, tc)")
    links = [link for link in ARGS.links.split(",") if link]
    for link in links:
        if link not in RATES:
            sys.exit(f"unknown link {link}: {', '.join(RATES)}")
    if not ARGS.no_podman and not shutil.which("podman"):
        sys.exit("podman is missing: scripts/setup-criu.sh")
    revision = run.revision()
    work = tempfile.mkdtemp(prefix="swiftlet-criu-")
    fabric = Fabric(hosts=3)  # h1, h2: the hosts; h3: the client of the Podman services
    pm = sw = None
    runs, parallel, notes = [], [], []
    try:
        if not ARGS.no_podman:
            pm = Podman(fabric, work)
            pm.start(0, 1)
        if ARGS.swiftlet:
            sw = Swiftlet(fabric, work)
            sw.create("kv")
            sw.plug_client()
        count_client(fabric, f"{fabric.subnet}.13")
        refused = set()
        modes = [m for m in ARGS.swiftlet_modes.split(",") if m]
        for link in links:
            shape(fabric, link)
            if pm:
                runs.append(podman_link(pm, fabric, link, ARGS.rounds))
                print(json.dumps(summarize(runs[-1])), flush=True)
            for mode in modes if sw else []:
                try:
                    runs.append(swiftlet_link(sw, fabric, link, mode, ARGS.rounds))
                    print(json.dumps(summarize(runs[-1])), flush=True)
                except Exception as e:  # noqa: BLE001 (a mode this binary refuses is reported, not fatal)
                    notes.append(f"swiftlet {mode} on {link}: {e}")
                    if "migration.bad_mode" in str(e):
                        refused.add(mode)
                    print(notes[-1], flush=True)
        if ARGS.parallel or (sw and ARGS.swiftlet_parallel):
            shape(fabric, "10mbit")
            if pm and ARGS.parallel:
                parallel.append(podman_parallel(pm, fabric, ARGS.parallel))
                print(json.dumps(parallel[-1]), flush=True)
            n = ARGS.swiftlet_parallel if ARGS.swiftlet_parallel is not None else ARGS.parallel
            for mode in [m for m in modes if m not in refused] if sw and n else []:
                parallel.append(swiftlet_parallel(sw, fabric, n, mode))
                print(json.dumps(parallel[-1]), flush=True)
    finally:
        try:
            shape(fabric, "unshaped")
        except Exception:  # noqa: BLE001
            pass
        if pm:
            pm.clean()
        if sw:
            sw.stop()
        fabric.clean()
        shutil.rmtree(work, ignore_errors=True)
    rows = [summarize(r) for r in runs]
    for r in rows:
        base = next((b for b in rows if b["system"] == "podman+criu" and b["link"] == r["link"]), None)
        if base and r is not base and base["downtime_ms"]["p50"] and r["downtime_ms"]["p50"] is not None:
            r["downtime_ratio"] = round(r["downtime_ms"]["p50"] / base["downtime_ms"]["p50"], 3)
            r["total_ratio"] = round(r["total_ms"]["p50"] / base["total_ms"]["p50"], 3)
            r["link_bytes_ratio"] = round(r["link_bytes_p50"] / base["link_bytes_p50"], 4)
            if r["own_bytes_p50"] is not None and base["own_bytes_p50"]:
                r["own_bytes_ratio"] = round(r["own_bytes_p50"] / base["own_bytes_p50"], 4)
    pbase = next((p for p in parallel if p["system"] == "podman+criu" and p.get("total_ms")), None)
    for p in parallel:
        if pbase and p is not pbase and p.get("total_ms") and p["n"] == pbase["n"]:
            p["total_ratio"] = round(p["total_ms"] / pbase["total_ms"], 3)
    table(rows, parallel)
    for note in notes:
        print("note:", note)
    out = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "revision": revision,
           "swiftlet_binary": ARGS.swiftlet, "rounds": ARGS.rounds,
           "swiftlet_binary_mtime": datetime.datetime.fromtimestamp(os.path.getmtime(ARGS.swiftlet)).isoformat(
               timespec="seconds") if ARGS.swiftlet else None,
           "load_average_after": open("/proc/loadavg").read().split()[:3],
           "setup": {"podman": sh("podman", "--version").stdout.strip() if pm else None,
                     "criu": sh("criu", "--version").stdout.split("\n")[0] if pm else None,
                     "runtime": "runc", "client": "POST /counter every 1 ms, new TCP connection each",
                     "links": "tc tbf on both ends of both hosts' veths; no netem on this kernel: no added delay",
                     "checkpoint_compression": "zstd (podman's default)"},
           "rows": rows, "parallel": parallel, "notes": notes, "runs": runs}
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    for name in ["podman-criu-latest.json", f"podman-criu-{stamp}.json"]:
        with open(os.path.join(ROOT, "bench/results", name), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
