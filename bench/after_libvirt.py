#!/usr/bin/python3
"""Which predecessor slows a cold boot: an API boot and a hand-started one, each timed right after
one of four things (another API boot, 0.7 s idle, a libvirt boot, a boot by hand of the same `pc`
machine libvirt runs). Prints p50s; see bench/README.md ("The order of the cold loop").

  bench/after_libvirt.py [rounds]      (root, release build: make bench once first)
"""
import os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    kernel = os.path.join(tempfile.mkdtemp(prefix="swiftlet-after-libvirt-"), "hello.elf")
    subprocess.run([os.path.join(bench.ROOT, "guest/build.sh"), os.path.join(bench.ROOT, "guest/examples/hello"),
                    "-o", kernel], check=True, capture_output=True)
    server = bench.Server()
    try:
        status, _ = server.call("POST", "/v1/images?name=hello", raw=open(kernel, "rb").read(),
                                ctype="application/octet-stream")
        assert status == 201
        libvirt = bench.Libvirt()
        accelerator = server.host()["chosenAccelerator"]

        def api(index):
            """accepted → READY, accepted → VMM spawned, VMM spawned → VMM up, VMM up → READY."""
            _, body = server.call("POST", "/v1/instances", {"image": "hello", "flavor": "tiny", "wait": True,
                                                            "name": f"after-{index}"})
            instance = body["instances"][0]
            assert instance["state"] == "RUNNING", instance
            server.call("DELETE", f"/v1/instances/{instance['id']}")
            tl = instance["timeline"]
            return (tl["ready"] - tl["accepted"], tl["vmmSpawned"] - tl["accepted"],
                    tl["vmmUp"] - tl["vmmSpawned"], tl["ready"] - tl["vmmUp"])

        def pc_by_hand(_):
            bench.qemu_until_ready([bench.QEMU, "-M", "pc", "-nodefaults", "-no-user-config", "-display", "none",
                                    "-accel", accelerator, "-cpu", "qemu64", "-m", "16M", "-kernel", kernel,
                                    "-append", "name=pc", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0x501",
                                    "-no-reboot"])

        before = {"an API boot": lambda i: api(100_000 + i), "0.7 s idle": lambda i: time.sleep(0.7),
                  "a libvirt boot": lambda i: libvirt.ready(kernel, i), "the same pc boot by hand": pc_by_hand}
        timed = {"API": api, "by hand": lambda i: (bench.hand_qemu_ready(kernel, accelerator),)}
        pairs = [(b, t) for b in before for t in timed]
        samples = {pair: [] for pair in pairs}
        index = 0
        for round_index in range(rounds):
            shift = round_index % len(pairs)
            for first, measured in pairs[shift:] + pairs[:shift]:
                time.sleep(bench.SETTLE_SECONDS)
                before[first](index)
                time.sleep(bench.SETTLE_SECONDS)
                samples[(first, measured)].append(timed[measured](index))
                index += 1
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", os.path.dirname(kernel)])
    print(f"{rounds} rounds, p50 ms; API: total, accepted → VMM spawned, VMM spawned → VMM up, VMM up → READY")
    for (first, measured), values in samples.items():
        medians = " ".join(f"{statistics.median(column) / 1e6:.2f}" for column in zip(*values))
        print(f"{measured:8} right after {first:26} {medians}")


if __name__ == "__main__":
    main()
