#!/usr/bin/python3
"""The dashboard's instance list with many instances, timed in headless Chromium.

  bench/ui.py [--hosts 50] [--per-host 20] [--samples 10]

The instances are real records of a real controller, placed on SIMULATED hosts (`swiftlet agent
--simulate N`, as bench/scale.py: each host a real agent link, lease and uplink, with the fake
hypervisor driver, so no VMM runs: booting 1,000 QEMU guests on 2 shared cores is not practical).
What is measured is the browser's side of the page with that many rows:

  - ui_instances_load: navigation start -> every row of the instance table drawn (the page's own
    `performance.now()` when the last row is in the DOM), a fresh page load each sample;
  - ui_instances_dom_loaded: navigation start -> DOMContentLoaded (Navigation Timing), the shell alone;
  - ui_instances_filter_one / _all: a filter typed (one instance's name) or cleared -> the table
    redrawn with the rows that match;
  - ui_instances_refresh: one of the page's 2 s refreshes of an unchanged list (fetch + compare).

Writes bench/results/ui-latest.json, a dated copy, and prints a Markdown table. The binary is
$SWIFTLET_BIN (default .build/release/swiftlet)."""
import argparse, datetime, json, os, shutil, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ui"))
import run  # noqa: E402
import scale  # noqa: E402
from browser import chromium, screenshot  # noqa: E402

ROOT = run.ROOT

# Resolves with performance.now() once the instance table has `count` rows (checked every frame).
ROWS_DRAWN = """
const [count, done] = arguments;
const check = () => {
  if (document.querySelectorAll('#instance-list tbody tr').length >= count) done(performance.now());
  else requestAnimationFrame(check);
};
check();
"""

FILTER = """
const [text, done] = arguments;
const box = document.getElementById('filter');
const started = performance.now();
box.value = text;
box.dispatchEvent(new Event('input'));
requestAnimationFrame(() => done([performance.now() - started,
  document.querySelectorAll('#instance-list tbody tr').length]));
"""

REFRESH = """
const done = arguments[0];
const started = performance.now();
fetch('/v1/instances', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('swiftlet.token')}})
  .then(r => r.json()).then(list => { JSON.stringify(list.instances); done(performance.now() - started); });
"""


def fill(server, hosts, per_host):
    def create(host):
        status, answer = server.call("POST", "/v1/instances", {"image": "hello", "name": f"x-{host}", "host": host,
                                                                "count": per_host})
        if status != 201:
            raise RuntimeError(f"create on {host}: {status} {answer}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, hosts))
    deadline = time.time() + 900
    while time.time() < deadline and server.call("GET", "/v1/instances?state=BUILDING&limit=1")[1]["instances"]:
        time.sleep(1)


def sample(name, timed, values_ms, unit="ms", note=""):
    return run.result(name, timed, [int(v * 1e6) for v in values_ms], unit=unit, note=note)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--per-host", type=int, default=20)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    server, agent_port, kernel_dir = scale.controller_with_hello()
    sims, sim_dir, driver, results, notes = [], tempfile.mkdtemp(prefix="swiftlet-bench-ui-"), None, [], {}
    try:
        hosts = scale.join_simulated_hosts(server, agent_port, args.hosts, 1, sim_dir, sims)
        started = time.time()
        fill(server, hosts, args.per_host)
        instances = server.call("GET", "/v1/instances")[1]["instances"]
        count = len(instances)
        notes.update(instances=count, running=sum(i["state"] == "RUNNING" for i in instances),
                     fill_seconds=round(time.time() - started, 1),
                     list_json_bytes=len(json.dumps({"instances": instances})))
        print(f"{count} instances ({notes['running']} RUNNING) on {len(hosts)} simulated hosts", flush=True)

        driver = chromium()
        driver.get(server.base + "/ui")
        driver.execute_script("sessionStorage.setItem('swiftlet.token', arguments[0])", server.token)
        driver.set_script_timeout(120)
        loads, dom_loaded = [], []
        for _ in range(args.samples + 1):  # the first load warms the caches and is not counted
            driver.get(server.base + "/ui/instances")
            drawn = driver.execute_async_script(ROWS_DRAWN, count)
            navigation = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0]; return n.domContentLoadedEventEnd;")
            loads.append(drawn)
            dom_loaded.append(navigation)
        loads, dom_loaded = loads[1:], dom_loaded[1:]
        screenshot(driver, "bench-instances-1000")
        results.append(sample("ui_instances_load", f"navigation start -> {count} rows drawn, Chromium headless",
                              loads, note="fresh load each sample: shell, script, /v1/images, /v1/flavors, "
                                          "/v1/hosts, /v1/instances, table"))
        results.append(sample("ui_instances_dom_loaded", "navigation start -> DOMContentLoaded (shell + script)",
                              dom_loaded))
        # Alternately down to one row and back to all of them: each kind is its own row.
        to_one, to_all = [], []
        for _ in range(args.samples):
            took, matched = driver.execute_async_script(FILTER, instances[0]["name"])
            assert matched >= 1, matched
            to_one.append(took)
            took, matched = driver.execute_async_script(FILTER, "")
            assert matched == count, matched
            to_all.append(took)
        results.append(sample("ui_instances_filter_one", "filter input (one instance's name) -> table redrawn "
                              "with the matching rows", to_one))
        results.append(sample("ui_instances_filter_all", f"filter cleared -> table redrawn with all {count} rows",
                              to_all))
        refreshes = [driver.execute_async_script(REFRESH) for _ in range(args.samples)]
        results.append(sample("ui_instances_refresh", f"one 2 s refresh of the unchanged list of {count} "
                              "(fetch + JSON parse + compare), no redraw", refreshes))
    finally:
        if driver:
            driver.quit()
        scale.stop_simulators(sims)
        server.stop()
        shutil.rmtree(sim_dir, ignore_errors=True)
        shutil.rmtree(kernel_dir, ignore_errors=True)
    print("| name | samples | p50 | p90 | unit | timed |\n|---|---|---|---|---|---|")
    for r in results:
        r.pop("raw_ns", None)
        print(f"| {r['name']} | {r['samples']} | {r['p50']} | {r['p90']} | {r['unit']} | {r['timed']} |")
    print("notes:", json.dumps(notes))
    out = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "revision": run.revision(),
           "binary": os.path.relpath(run.SWIFTLET, ROOT), "hosts": args.hosts, "per_host": args.per_host,
           "notes": notes, "results": results}
    scale.write_results("ui", out)


if __name__ == "__main__":
    main()
