#!/usr/bin/env bash
# HTTP performance of the `http` unikernel (TCG, microvm, 16 MiB) measured with
# wrk from the host: latency of GET / on one keep-alive connection (p50, p99)
# and requests/s with 32 keep-alive connections. Side by side in one run:
# TAP + legacy virtio-mmio, TAP + modern virtio-mmio, and QEMU user
# networking (slirp, hostfwd) + legacy. Prints a table and writes
# bench/results/guest-http.json.
# Needs root (bridge + TAP; removed on exit) and wrk (apt-get install -y wrk).
# Usage: bench/guest-http.sh [seconds per wrk run]   (default 10)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_RUN="${1:-10}"
[ "$(id -u)" = 0 ] || { echo "guest-http.sh: needs root (bridge and TAP device)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "guest-http.sh: wrk missing: apt-get install -y wrk" >&2; exit 1; }

work="$(mktemp -d)"
bridge="swbbr$$"
tap="swbtap$$"
cleanup() {
    ip link del "$tap" 2>/dev/null || true
    ip link del "$bridge" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$ROOT/guest/build.sh" "$ROOT/guest/examples/http" -o "$work/http.elf" >/dev/null
ip link add "$bridge" type bridge
ip addr add 10.214.0.1/24 dev "$bridge"
ip link set "$bridge" up
ip tuntap add dev "$tap" mode tap
ip link set "$tap" master "$bridge"
ip link set "$tap" up
mkdir -p "$ROOT/bench/results"

python3 - "$work/http.elf" "$tap" "$SECONDS_PER_RUN" "$ROOT/bench/results/guest-http.json" <<'PY'
import json, platform, re, socket, subprocess, sys, time

kernel, tap, seconds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
qemu = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,rtc=off", "-nodefaults",
        "-no-user-config", "-nographic", "-accel", "tcg", "-cpu", "max", "-m", "16M",
        "-device", "isa-debug-exit,iobase=0x501", "-serial", "stdio", "-no-reboot",
        "-kernel", kernel]

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def to_micros(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1000, "s": 1000000}[unit]

def wrk(url, connections, threads, duration):
    result = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
                            capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", result, re.M))
    errors = re.search(r"Socket errors: (.*)$", result, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result)
    return {"requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", result).group(1)),
            "p50_us": to_micros(percentiles["50"]), "p99_us": to_micros(percentiles["99"]),
            "requests": int(re.search(r"(\d+) requests in", result).group(1)),
            "socket_errors": errors.group(1) if errors else "none",
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}

setups = [
    ("tap-legacy", ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"], "http://10.214.0.2/"),
    ("tap-modern", ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                    "-global", "virtio-mmio.force-legacy=false"], "http://10.214.0.2/"),
]
port = free_port()
setups.append(("user-net-legacy", ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:80"],
               f"http://127.0.0.1:{port}/"))

rows = []
for name, netdev, url in setups:
    append = "name=bench ip=10.214.0.2/24 gw=10.214.0.1" if name.startswith("tap") else "name=bench"
    proc = subprocess.Popen(qemu + ["-append", append, "-device", "virtio-net-device,netdev=n0"] + netdev,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in proc.stdout:
            if line.startswith(b"SWIFTLET-READY http "):
                break
        else:
            raise SystemExit(f"{name}: QEMU ended before READY")
        wrk(url, 1, 1, 2)  # warm-up
        single = wrk(url, 1, 1, seconds)
        many = wrk(url, 32, 2, seconds)
        rows.append({"setup": name, "one_connection": single, "32_connections": many})
    finally:
        proc.stdin.write(b"poweroff\n"); proc.stdin.flush()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait()

print(f"http unikernel, GET / (127-byte page), TCG, {seconds} s per wrk run")
print(f"{'setup':<17} {'p50 1 conn':>11} {'p99 1 conn':>11} {'req/s 1 conn':>13} {'req/s 32 conns':>15} {'p50 32 conns':>13} {'p99 32 conns':>13}")
for row in rows:
    one, many = row["one_connection"], row["32_connections"]
    print(f"{row['setup']:<17} {one['p50_us']:>9.0f}us {one['p99_us']:>9.0f}us {one['requests_per_second']:>13.0f}"
          f" {many['requests_per_second']:>15.0f} {many['p50_us']:>11.0f}us {many['p99_us']:>11.0f}us")
base = rows[0]["32_connections"]["requests_per_second"]
for row in rows[1:]:
    print(f"{row['setup']}: {row['32_connections']['requests_per_second'] / base:.2f}x the req/s of {rows[0]['setup']}")
json.dump({"benchmark": "guest-http", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": platform.node(), "accelerator": "tcg", "seconds_per_run": seconds,
           "qemu": subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
           "results": rows}, open(out, "w"), indent=2)
print(f"wrote {out}")
PY
