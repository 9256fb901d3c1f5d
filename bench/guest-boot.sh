#!/usr/bin/env bash
# Boot time of the hello unikernel against the floor kernel (assembly only):
# QEMU process start -> READY line (hello) / floor line, under TCG on microvm.
# Runs are interleaved (floor, hello, floor, ...); prints a table and writes
# bench/results/guest-boot.json. Also reports hello's own READY figure (guest
# clock, kernel entry -> READY). Usage: bench/guest-boot.sh [runs]  (default 20)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-20}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$ROOT/guest/build.sh" --floor -o "$work/floor.elf" >/dev/null
"$ROOT/guest/build.sh" "$ROOT/guest/examples/hello" -o "$work/hello.elf" >/dev/null
mkdir -p "$ROOT/bench/results"

python3 - "$work" "$RUNS" "$ROOT/bench/results/guest-boot.json" <<'PY'
import json, os, platform, statistics, subprocess, sys, time

work, runs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
qemu = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off", "-nodefaults",
        "-no-user-config", "-nographic", "-accel", "tcg", "-cpu", "max", "-m", "16M",
        "-device", "isa-debug-exit,iobase=0x501", "-serial", "stdio", "-no-reboot"]
kernels = {"floor": ("SWIFTLET-FLOOR", ""), "hello": ("SWIFTLET-READY hello ", "name=bench")}

def boot(name):
    marker, append = kernels[name]
    start = time.monotonic()
    proc = subprocess.Popen(qemu + ["-kernel", f"{work}/{name}.elf", "-append", append],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    guest_us = None
    try:
        for line in proc.stdout:
            text = line.decode(errors="replace").strip()
            if text.startswith(marker.strip()):
                elapsed = (time.monotonic() - start) * 1000
                if name == "hello":
                    guest_us = int(text.split()[2])
                break
        else:
            raise SystemExit(f"{name}: QEMU ended without its line")
    finally:
        if name == "hello":
            proc.stdin.write(b"poweroff\n"); proc.stdin.flush()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait()
    return elapsed, guest_us

samples = {"floor": [], "hello": []}
guest = []
for _ in range(runs):
    for name in ("floor", "hello"):
        elapsed, guest_us = boot(name)
        samples[name].append(elapsed)
        if guest_us is not None:
            guest.append(guest_us)

def summary(values):
    return {"median_ms": round(statistics.median(values), 2), "min_ms": round(min(values), 2),
            "max_ms": round(max(values), 2), "runs": len(values)}

result = {
    "measured": "QEMU process start -> READY line (hello) / floor line, host monotonic clock",
    "qemu": subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
    "accelerator": "tcg -cpu max, -M microvm, 16 MiB",
    "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
    "kernel_bytes": {n: os.path.getsize(f"{work}/{n}.elf") for n in kernels},
    "floor": summary(samples["floor"]),
    "hello": summary(samples["hello"]),
    "hello_guest_entry_to_ready_us_median": int(statistics.median(guest)),
    "hello_guest_entry_to_ready_us_min": min(guest),
    "hello_guest_entry_to_ready_us_samples": guest,
    "samples_ms": {n: [round(v, 2) for v in samples[n]] for n in samples},
}
result["hello_minus_floor_median_ms"] = round(result["hello"]["median_ms"] - result["floor"]["median_ms"], 2)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")

print(f"{'':22}{'floor':>12}{'hello':>12}")
print(f"{'kernel size (bytes)':22}{result['kernel_bytes']['floor']:>12}{result['kernel_bytes']['hello']:>12}")
for key, label in (("median_ms", "median (ms)"), ("min_ms", "min (ms)"), ("max_ms", "max (ms)")):
    print(f"{label:22}{result['floor'][key]:>12}{result['hello'][key]:>12}")
print(f"{'guest entry->READY':22}{'':>12}{result['hello_guest_entry_to_ready_us_median']:>9} us (median; min {min(guest)} us)")
print(f"runs: {runs} each, interleaved; hello - floor (median): {result['hello_minus_floor_median_ms']} ms")
print(f"wrote {out}")
PY
