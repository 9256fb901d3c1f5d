#!/usr/bin/python3
"""Confined VMMs against unconfined ones, side by side in one run (as root).

  bench/confinement.py [--quick]

Two servers on this host, one with `--confine-vmms` (each VMM as the swiftlet-vmm user, in
QEMU's seccomp sandbox, chrooted, in its own cgroup) and one without, and QEMU started by hand,
in a rotating order: cold API accepted -> guest READY for each, and its ratio against the same
hand-started baseline. Goal: confined / unconfined <= 1.05 p50 (so that confinement can be on
by default), and each <= 1.10x QEMU by hand. Writes bench/results/confinement-<stamp>.json.
"""
import argparse, datetime, json, os, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the shared server harness and measures of bench/run.py)
import store  # noqa: E402  (its side-by-side cold loop)

GOAL = "confined / unconfined <= 1.05 (p50)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a run of a minute or two")
    args = parser.parse_args()
    root = bench.ROOT
    kernel = os.path.join(tempfile.mkdtemp(prefix="swiftlet-bench-k-"), "hello.elf")
    subprocess.run([os.path.join(root, "guest/build.sh"), os.path.join(root, "guest/examples/hello"), "-o", kernel],
                   check=True, capture_output=True)
    servers = {"unconfined": bench.Server(), "confined": bench.Server(extra_args=["--confine-vmms"])}
    try:
        for server in servers.values():
            status, _ = server.call("POST", "/v1/images?name=hello", raw=open(kernel, "rb").read(),
                                    ctype="application/octet-stream")
            assert status == 201
        results = store.cold_side_by_side(servers, kernel, 10 if args.quick else 60)
    finally:
        for server in servers.values():
            server.stop()
    by_name = {r["name"]: r for r in results}
    ratio = round(by_name["api_cold_confined"]["p50"] / by_name["api_cold_unconfined"]["p50"], 3)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "git": bench.revision(), "quick": args.quick, "goal": GOAL, "confined_over_unconfined_p50": ratio,
              "results": [{k: v for k, v in r.items() if k != "raw_ns"} for r in results]}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    os.makedirs(os.path.join(root, "bench/results"), exist_ok=True)
    with open(os.path.join(root, "bench/results", f"confinement-{stamp}{'-quick' if args.quick else ''}.json"),
              "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nconfinement bench {report['date']} rev {report['git']}\n")
    print("| name | n | p50 ms | p99 ms | vs QEMU by hand |")
    print("|---|---|---|---|---|")
    for r in report["results"]:
        print(f"| {r['name']} | {r.get('samples', '')} | {r.get('p50', '')} | {r.get('p99', '')} | "
              f"{r.get('ratio', '')} |")
    print(f"\nconfined / unconfined, p50: {ratio} (goal {GOAL})")


if __name__ == "__main__":
    main()
