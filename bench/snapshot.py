#!/usr/bin/python3
"""Restore from a snapshot -> READY, beside a cold boot of the same image started by hand.

  bench/snapshot.py [--samples N] [--image hello|kv]

A RUNNING instance of the image (16 MiB, the tiny flavor) is snapshotted once through the API; then,
interleaved, each round:
  - snapshot_restore_api: `POST /v1/instances {"fromSnapshot", "wait": true}` sent -> answered
    RUNNING, as the client sees it (the agent fetches and checks the state, the VMM loads it);
  - snapshot_restore_timeline: accepted -> ready on the instance's timeline (the server's own clock).
    The first restore starts a VMM; each later one here takes the VMM the agent held ready since
    the one before (docs/snapshots.md), so the rounds measure the held path;
  - hand_cold_boot (the baseline): QEMU started by hand with the driver's machine and devices,
    spawn -> the guest's READY line on its serial console (bench/run.py's `hand_qemu_ready`);
  - hand_vmm_up: the same QEMU held for an incoming state (-S -incoming defer), spawn -> its QMP
    greeting: what any restore into a new VMM pays before its state is read.
Goal (issue 17): restore -> READY <= 0.25x a cold boot by hand. Writes bench/results/snapshot-latest.json
and a dated copy, and the Markdown table to stdout and bench/results/snapshot-latest.md.
"""
import argparse, datetime, json, os, platform, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

ROOT = run.ROOT
# Where a restore's time goes, from its timeline (docs/snapshots.md): p50 of each span.
PHASES = {"accepted->scheduled": ("accepted", "scheduled"), "scheduled->stateChecked": ("scheduled", "imageReady"),
          "stateChecked->vmmSpawned": ("imageReady", "vmmSpawned"),
          "VMM taken or spawned->state in (a held VMM: the load alone)": ("vmmSpawned", "vmmUp"),
          "state in->ready": ("vmmUp", "ready")}


def hand_vmm_up(kernel, accelerator):
    """The floor of any restore into a new VMM: QEMU by hand with the same machine, held (-S), spawn ->
    its QMP greeting on stdout. A restore adds the state load to this; a cold boot adds the guest's boot."""
    cpu = "host,-arch-capabilities" if accelerator == "kvm" else "max"
    args = [run.QEMU, "-M", "microvm,x-option-roms=off,rtc=off", "-nodefaults", "-no-user-config", "-display",
            "none", "-accel", accelerator, "-cpu", cpu, "-m", "16M", "-smp", "1", "-kernel", kernel, "-S",
            "-incoming", "defer", "-qmp", "stdio", "-serial", "none", "-no-reboot"]
    return run.qemu_until_ready(args, marker=b'"QMP"')


def main():
    rev = run.revision()
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--image", default="hello", help="a guest/examples name without a NIC (hello)")
    args = parser.parse_args()
    kernel = os.path.join(tempfile.mkdtemp(prefix="swiftlet-bench-k-"), args.image + ".elf")
    subprocess.run([os.path.join(ROOT, "guest/build.sh"), os.path.join(ROOT, "guest/examples", args.image), "-o",
                    kernel], check=True, capture_output=True)
    server = run.Server()
    results = []
    try:
        status, _ = server.call("POST", f"/v1/images?name={args.image}", raw=open(kernel, "rb").read(),
                                ctype="application/octet-stream")
        assert status == 201
        accelerator = server.host()["chosenAccelerator"]
        status, body = server.call("POST", "/v1/instances", {"image": args.image, "flavor": "tiny", "wait": True,
                                                               "name": "source"})
        assert status == 201 and body["instances"][0]["state"] == "RUNNING", body
        status, snapshot = server.call("POST", "/v1/instances/source/snapshot", {"name": "bench"})
        assert status == 201, snapshot
        server.call("DELETE", "/v1/instances/source")
        api, timeline, hand, phases, floor = [], [], [], {}, []
        for i in range(args.samples + 1):  # the first round warms caches and is dropped
            order = [[0, 1, 2], [1, 2, 0], [2, 0, 1]][i % 3]
            for which in order:
                time.sleep(run.SETTLE_SECONDS)
                if which == 0:
                    t0 = run.now()
                    status, body = server.call("POST", "/v1/instances", {"image": "", "fromSnapshot": "bench",
                                                                           "wait": True, "name": f"r-{i}"})
                    t1 = run.now()
                    inst = body["instances"][0]
                    assert status == 201 and inst["state"] == "RUNNING", body
                    tl = inst["timeline"]
                    assert tl.get("bootPath") == "snapshot", tl
                    server.call("DELETE", f"/v1/instances/{inst['id']}")
                    if i > 0:
                        api.append(t1 - t0)
                        timeline.append(tl["ready"] - tl["accepted"])
                        for name, (start, end) in PHASES.items():
                            if tl.get(start) is not None and tl.get(end) is not None:
                                phases.setdefault(name, []).append(tl[end] - tl[start])
                elif which == 1:
                    sample = run.hand_qemu_ready(kernel, accelerator)
                    if i > 0:
                        hand.append(sample)
                else:
                    sample = hand_vmm_up(kernel, accelerator)
                    if i > 0:
                        floor.append(sample)
        baseline = run.result("hand_cold_boot", "QEMU by hand: spawn -> READY line (same image, 16 MiB)", hand)
        results.append(baseline)
        results.append(run.result("snapshot_restore_api", "POST fromSnapshot wait=true sent -> answered RUNNING",
                                  api, baseline=baseline, goal="<= 0.25x hand_cold_boot"))
        results.append(run.result("snapshot_restore_timeline", "timeline accepted -> ready (state in, guest running)",
                                  timeline, baseline=baseline, goal="<= 0.25x hand_cold_boot"))
        results.append(run.result("hand_vmm_up", "QEMU by hand, held for -incoming: spawn -> QMP greeting (the floor "
                                  "of a restore into a new VMM)", floor, baseline=baseline))
        host = server.host()
    except BaseException:
        server.log.flush()
        sys.stderr.write("the server's log ends:\n" + open(server.data + ".log").read()[-3000:])
        raise
    finally:
        server.stop()
        shutil.rmtree(os.path.dirname(kernel), ignore_errors=True)
    for r in results:
        if r.get("goal"):
            r["verdict"] = "met" if r["ratio"] <= 0.25 else f"missed ({r['ratio']}x)"
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "git": rev,
              "binary": run.SWIFTLET, "image": args.image,
              "snapshot": {"sizeBytes": snapshot["sizeBytes"], "pausedMs": snapshot["pausedMs"],
                           "hypervisor": snapshot["hypervisor"] + " " + snapshot["hypervisorVersion"]},
              "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "accelerator": host["chosenAccelerator"]},
              "restore_phases_p50_ms": {name: run.ms(run.pct(v, 50)) for name, v in phases.items()},
              "results": [{k: v for k, v in r.items() if k != "raw_ns"} for r in results]}
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    for name in ("snapshot-latest.json", f"snapshot-{stamp}-{rev or 'norev'}.json"):
        with open(os.path.join(ROOT, "bench/results", name), "w") as f:
            json.dump(report, f, indent=1)
    lines = [f"Swiftlet snapshot bench {report['date']} rev {rev}, binary {os.path.relpath(run.SWIFTLET, ROOT)}, "
             f"{report['machine']}, snapshot {report['snapshot']}", "",
             "Restore phases, p50 ms: " + ", ".join(f"{k} {v}" for k, v in report["restore_phases_p50_ms"].items()), "",
             "| name | timed | n | p50 ms | p90 ms | ratio | goal | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        ratio = f"{r['ratio']}x {r['baseline']} (90% CI {r['ratio_ci90']})" if "ratio" in r else ""
        lines.append(f"| {r['name']} | {r['timed']} | {r['samples']} | {r['p50']} | {r['p90']} | {ratio} "
                     f"| {r.get('goal', '')} | {r.get('verdict', '')} |")
    with open(os.path.join(ROOT, "bench/results/snapshot-latest.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))

if __name__ == "__main__":
    main()
