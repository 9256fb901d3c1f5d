import Foundation

/// The files a VM keeps in its runtime directory.
struct RuntimePaths: Sendable {
    var directory: String
    var qmpSocket: String { directory + "/qmp.sock" }
    var consoleSocket: String { directory + "/console.sock" }
    var consoleLog: String { directory + "/console.log" }
    var stderrLog: String { directory + "/qemu.err" }
}

enum QEMUCommandLine {
    /// CPU model per accelerator: `max` under TCG (emulates SSE etc.), the host's under KVM
    /// without the ARCH_CAPABILITIES MSR: a nested KVM here refuses QEMU 7.2's write of MSR 0x10a
    /// and QEMU aborts (`kvm_buf_set_msrs` assertion). Unikernels do not read it; a Linux guest
    /// without it assumes the CPU is affected by the issues it would report, the safe side.
    static func cpuModel(accelerator: String) -> String {
        accelerator == "kvm" ? "host,-arch-capabilities" : "max"
    }

    /// Machine and minimal devices per boot kind: microvm for PVH ELF and bzImage (no PCI, no
    /// firmware option ROMs, no RTC), pc for multiboot (microvm cannot load multiboot images).
    static func machineArguments(_ bootKind: BootKind) -> [String] {
        switch bootKind {
        case .pvh, .bzImage: ["-M", "microvm,x-option-roms=off,rtc=off"]
        case .multiboot, .disk: ["-M", "pc"]
        }
    }

    /// The descriptor numbers QEMU gets the console and QMP listening sockets as: the driver
    /// passes `[console, qmp]` in this order, which the child sees as 3 and 4.
    static let consoleDescriptor = 3
    static let qmpDescriptor = 4

    static func arguments(spec: VMSpec, accelerator: String, paths: RuntimePaths) -> [String] {
        var arguments = ["-name", "guest=" + optionValue(spec.instanceID)]
        arguments +=
            spec.machineType.map { ["-M", $0 == "microvm" ? "microvm,x-option-roms=off,rtc=off" : optionValue($0)] }
            ?? machineArguments(spec.bootKind)
        arguments += ["-nodefaults", "-no-user-config", "-display", "none"]
        arguments += ["-accel", accelerator, "-cpu", cpuModel(accelerator: accelerator)]
        arguments += ["-m", "\(spec.memoryMiB)M", "-smp", "\(spec.vcpus)"]
        if spec.bootKind == .disk {
            // snapshot=on: guest writes go to a temporary overlay, never into the shared cached image.
            arguments += [
                "-drive",
                "file=\(optionValue(spec.kernelPath)),if=none,id=disk0,format=\(spec.diskFormat ?? "raw"),snapshot=on",
                "-device", "virtio-blk-pci,drive=disk0,bootindex=0",
            ]
        } else {
            arguments += ["-kernel", spec.kernelPath, "-append", spec.commandLine]
            if let initrd = spec.initrdPath { arguments += ["-initrd", initrd] }
        }
        arguments += ["-device", "isa-debug-exit,iobase=0x501"]
        // Both sockets are bound by the driver and inherited as fds 3 and 4 (see `spawn`), so the
        // driver connects the moment QEMU exists. wait=on: QEMU goes on only once it has accepted
        // the console client (already queued), so the live stream is attached before the guest
        // runs; the logfile gets every line regardless.
        arguments += [
            "-chardev",
            "socket,id=con0,fd=\(consoleDescriptor),server=on,wait=on,logfile=\(optionValue(paths.consoleLog))",
            "-serial", "chardev:con0",
            "-chardev", "socket,id=qmp0,fd=\(qmpDescriptor),server=on,wait=off",
            "-mon", "chardev=qmp0,mode=control",
        ]
        // A guest reset (triple fault, crash) ends the VMM so the agent sees it; `reboot` switches
        // this to reset for its own QMP system_reset only.
        arguments += ["-no-reboot"]
        // Start paused; spawn sends `cont` once QMP is up, so "VMM up" always precedes any guest
        // output and a guest that exits at once cannot race the QMP handshake.
        arguments += ["-S"]
        let nic = nicModel(spec)
        if spec.userNetwork || !spec.publishedPorts.isEmpty {
            let forwards = spec.publishedPorts.map {
                ",hostfwd=\($0.proto.rawValue)::\($0.hostPort)-:\($0.guestPort)"
            }
            arguments += [
                "-netdev", "user,id=n0" + forwards.joined(),
                "-device", "\(nic),netdev=n0",
            ]
        }
        for (index, tap) in spec.taps.enumerated() {
            arguments += [
                "-netdev", "tap,id=t\(index),ifname=\(optionValue(tap.name)),script=no,downscript=no",
                "-device", "\(nic),netdev=t\(index),mac=\(tap.mac)",
            ]
        }
        return arguments
    }

    /// virtio over MMIO on microvm (no PCI bus there), over PCI on pc/q35.
    static func nicModel(_ spec: VMSpec) -> String {
        let machine =
            spec.machineType ?? (spec.bootKind == .multiboot || spec.bootKind == .disk ? "pc" : "microvm")
        return machine == "microvm" ? "virtio-net-device" : "virtio-net-pci"
    }

    /// The minimal VM that runs the calibration guest: same machine as a PVH unikernel, no console.
    static func calibrationArguments(kernelPath: String, accelerator: String) -> [String] {
        machineArguments(.pvh) + [
            "-nodefaults", "-no-user-config", "-display", "none",
            "-accel", accelerator, "-cpu", cpuModel(accelerator: accelerator),
            "-m", "16M", "-kernel", kernelPath, "-device", "isa-debug-exit,iobase=0x501",
        ]
    }

    /// QEMU option values separate keys with commas; a literal comma is written twice.
    static func optionValue(_ value: String) -> String {
        value.replacingOccurrences(of: ",", with: ",,")
    }
}
