#!/usr/bin/python3
"""Live migration between two namespace hosts, each with its own `swiftlet agent` (as root).

  bench/migration.py [--rounds N]

A `hello` instance (16 MiB, the tiny flavor) moves back and forth between the two hosts through the
API (`POST /v1/instances/{id}/migrate`, then `GET /v1/migrations/{id}` until it ends). Rows (see
bench/README.md, "Migration"):
  - live_migration_downtime: the guest paused on the source -> running on the target, as QEMU
    measured it (whole milliseconds: QEMU's own resolution).
  - live_migration_total: accepted -> completed, as the controller recorded it (every step:
    prepare on the target, the transfer, finish, the commit).
  - live_migration_bytes: state sent per move (KB), reported in the note.
The link is the fabric's unshaped veth. Writes bench/results/migration-latest.json and a dated copy.
"""
import argparse, datetime, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from cluster import Controller, Fabric, create  # noqa: E402

ROOT = run.ROOT


def migrate(server, instance_id, host):
    status, migration = server.call("POST", f"/v1/instances/{instance_id}/migrate", {"host": host})
    if status != 202:
        raise RuntimeError(f"migrate to {host}: {status} {migration}")
    deadline = time.time() + 120
    while time.time() < deadline:
        migration = server.call("GET", f"/v1/migrations/{migration['id']}")[1]
        if migration["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    if migration["status"] != "completed":
        raise RuntimeError(f"migration to {host}: {migration['status']} {migration.get('reason')}")
    return migration


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if os.getuid() != 0:
        sys.exit("bench/migration.py needs root (namespace hosts)")
    kernel = os.path.join(tempfile.mkdtemp(prefix="swiftlet-bench-k-"), "hello.elf")
    subprocess.run([os.path.join(ROOT, "guest/build.sh"), os.path.join(ROOT, "guest/examples/hello"), "-o", kernel],
                   check=True, capture_output=True)
    fabric = Fabric(hosts=2)
    server, agents, results = None, [], []
    try:
        server = Controller(fabric)
        agents = [server.join(fabric, 1), server.join(fabric, 2)]
        with open(kernel, "rb") as f:
            status, _ = server.call("POST", "/v1/images?name=hello", raw=f.read(), ctype="application/octet-stream")
        assert status == 201, status
        made = create(server, "mover", "host-node1")
        if made["state"] != "RUNNING":
            raise RuntimeError(f"{made['state']} {made.get('reason')}")
        downtime, total, sent = [], [], []
        for round_index in range(args.rounds + 1):
            time.sleep(run.SETTLE_SECONDS)
            migration = migrate(server, made["id"], "node2" if round_index % 2 == 0 else "node1")
            if round_index > 0:  # the first move fetches the image into the target's cache
                downtime.append(int(migration["downtimeMs"] * 1e6))
                total.append(int(migration["totalMs"] * 1e6))
                sent.append(migration["transferredBytes"])
        note = f"16 MiB guest, unshaped veth; state sent per move: median {statistics.median(sent) / 1024:.0f} KB"
        results += [
            run.result("live_migration_downtime", "guest paused on the source -> running on the target (QEMU's "
                       "figure, whole ms)", downtime, goal="p50 <= 5 ms", note=note),
            run.result("live_migration_total", "accepted -> completed (prepare, transfer, finish, commit)", total,
                       note=note),
        ]
        server.call("DELETE", f"/v1/instances/{made['id']}")
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
        print(f"| {r['name']} | {r['samples']} | {r['p50']} | {r['p90']} | {r['p99']} | {r.get('goal', '')} | "
              f"{r['note']} |")
    out = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "revision": run.revision(),
           "results": results}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
    for name in ["migration-latest.json", f"migration-{stamp}.json"]:
        with open(os.path.join(ROOT, "bench/results", name), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
