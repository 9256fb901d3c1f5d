#!/usr/bin/python3
"""PostgreSQL against SQLite on one host, side by side in one run.

  bench/store.py [--quick]

Two servers run at once on this host, one on its SQLite file and one on a fresh PostgreSQL
database (scripts/setup-postgres.sh). Measured for each:
- cold API accepted -> guest READY, rounds interleaved with QEMU started by hand (SQLite, PostgreSQL
  and hand in a rotating order), so each engine has its ratio against the same baseline;
- creation rate (concurrent creates, first POST -> last READY), in rounds SQLite, PostgreSQL,
  PostgreSQL, SQLite, each on an empty host;
- GET /v1/instances with N instances alive (wrk; 1,000 in a full run).
Writes bench/results/store-<stamp>.json and prints a table with PostgreSQL/SQLite ratios.
"""
import argparse, datetime, json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the shared server harness and measures of bench/run.py)

GOAL = "PostgreSQL within 1.2x of SQLite"


def cold_side_by_side(servers, kernel, rounds):
    """Each server's cold API accepted -> READY, and QEMU by hand, in a rotating order (each comes
    after each other one equally often); each server has its ratio against the same baseline."""
    accelerator = next(iter(servers.values())).host()["chosenAccelerator"]
    order = list(servers) + ["hand"]
    samples = {name: [] for name in order}
    for i in range(rounds + 1):  # the first round warms caches and is dropped
        shift = i % len(order)
        for name in order[shift:] + order[:shift]:
            time.sleep(bench.SETTLE_SECONDS)
            if name == "hand":
                value = bench.hand_qemu_ready(kernel, accelerator)
            else:
                server = servers[name]
                _, body = server.call("POST", "/v1/instances", {"image": "hello", "flavor": "tiny", "wait": True,
                                                                 "name": f"cold-{i}"})
                inst = body["instances"][0]
                assert inst["state"] == "RUNNING", inst
                server.call("DELETE", f"/v1/instances/{inst['id']}")
                value = inst["timeline"]["ready"] - inst["timeline"]["accepted"]
            if i > 0:
                samples[name].append(value)
    base = bench.result("qemu_by_hand_cold", "qemu-system-x86_64 spawn -> READY line on its stdout", samples["hand"])
    rows = [base]
    for name in servers:
        rows.append(bench.result(f"api_cold_{name}", f"API accepted -> guest READY ({name})", samples[name], base,
                                 "p50 <= 1.10x qemu_by_hand_cold"))
    return rows


def delete_all(server):
    for inst in server.call("GET", "/v1/instances")[1]["instances"]:
        server.call("DELETE", f"/v1/instances/{inst['id']}")


def creation_rates(servers, count):
    """Each engine's creation rate in rounds ordered SQLite, PostgreSQL, PostgreSQL, SQLite, each
    round on an empty host (the instances of the one before deleted), so neither engine creates
    beside the other's idle VMs or always goes first."""
    rounds = {name: [] for name in servers}
    for name in ("sqlite", "postgres", "postgres", "sqlite"):
        rounds[name].append(bench.creation_rate(servers[name], count))
        delete_all(servers[name])
    rows = []
    for name, measured in rounds.items():
        for kind in (0, 1):  # the rate, and the API's answers meanwhile
            samples = [ns for r in measured for ns in r[kind]["raw_ns"]]
            row = bench.result(measured[0][kind]["name"] + f"_{name}", measured[0][kind]["timed"] + " (2 rounds)",
                               samples, goal=measured[0][kind].get("goal"))
            if kind == 0:
                row["rounds_instances_per_second"] = [r[0]["instances_per_second"] for r in measured]
                row["instances_per_second"] = round(statistics.mean(row["rounds_instances_per_second"]), 2)
                row["note"] = ", ".join(r[0]["note"] for r in measured)
            rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a run of a few minutes")
    args = parser.parse_args()
    root = bench.ROOT
    kernel = os.path.join(tempfile.mkdtemp(prefix="swiftlet-bench-k-"), "hello.elf")
    subprocess.run([os.path.join(root, "guest/build.sh"), os.path.join(root, "guest/examples/hello"), "-o", kernel],
                   check=True, capture_output=True)
    url = subprocess.run([os.path.join(root, "scripts/setup-postgres.sh"), "--fresh", "swiftlet_bench"],
                         check=True, capture_output=True, text=True).stdout.strip()
    servers = {"sqlite": bench.Server(), "postgres": bench.Server(extra_args=["--database", url])}
    results = []
    try:
        for server in servers.values():
            status, _ = server.call("POST", "/v1/images?name=hello", raw=open(kernel, "rb").read(),
                                    ctype="application/octet-stream")
            assert status == 201
        results += cold_side_by_side(servers, kernel, 10 if args.quick else 60)
        results += creation_rates(servers, 20 if args.quick else 100)
        for name, server in servers.items():
            rows = bench.density(server, 100 if args.quick else 1000, api_seconds=3 if args.quick else 10)
            for row in rows:
                row["name"] += f"_{name}"
                results.append(row)
    finally:
        for server in servers.values():
            server.stop()
    by_name = {r["name"]: r for r in results}
    ratios = {}
    cold_sqlite, cold_pg = by_name["api_cold_sqlite"], by_name["api_cold_postgres"]
    ratios["cold_p50"] = round(cold_pg["p50"] / cold_sqlite["p50"], 3)
    rate_sqlite, rate_pg = by_name["creation_rate_sqlite"], by_name["creation_rate_postgres"]
    # Rates: higher is better, so the ratio is SQLite's over PostgreSQL's (<= 1.2 meets the goal).
    ratios["creation_rate"] = round(rate_sqlite["instances_per_second"] / rate_pg["instances_per_second"], 3)
    list_sqlite, list_pg = by_name.get("api_list_instances_sqlite"), by_name.get("api_list_instances_postgres")
    if list_sqlite and list_pg and "requests_per_second" in list_sqlite:
        ratios["list_req_per_s"] = round(list_sqlite["requests_per_second"] / list_pg["requests_per_second"], 3)
        ratios["list_p99"] = round(bench.lat_ms(list_pg["latency"]["99"]) / bench.lat_ms(list_sqlite["latency"]["99"]), 3)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "git": bench.revision(),
              "quick": args.quick, "goal": GOAL, "postgres_over_sqlite": ratios,
              "results": [{k: v for k, v in r.items() if k != "raw_ns"} for r in results]}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    os.makedirs(os.path.join(root, "bench/results"), exist_ok=True)
    with open(os.path.join(root, "bench/results", f"store-{stamp}{'-quick' if args.quick else ''}.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nstore bench {report['date']} rev {report['git']}\n")
    print("| name | n | p50 ms | p99 ms | result |")
    print("|---|---|---|---|---|")
    for r in report["results"]:
        extra = ""
        if "ratio" in r:
            extra = f"{r['ratio']}x {r['baseline']}"
        if "instances_per_second" in r:
            extra = f"{r['instances_per_second']} inst/s"
        if "requests_per_second" in r:
            extra = f"{r['requests_per_second']} req/s, latency {r['latency']}"
        if "instances" in r and "answering" in r:
            extra = f"{r['instances']} alive"
        print(f"| {r['name']} | {r.get('samples', '')} | {r.get('p50', '')} | {r.get('p99', '')} | {extra} |")
    print(f"\nPostgreSQL / SQLite (cost ratios; goal {GOAL}: each <= 1.2): {ratios}")


if __name__ == "__main__":
    main()
