// virtio-net over virtio-mmio: one receive and one transmit queue, no offloads,
// checksums in software. Works with modern (version 2) and legacy (version 1)
// transports.

/// The register windows of the NICs being driven, for the interrupt hook (a C
/// function pointer cannot capture). Filled during bring-up, each entry before
/// its device may interrupt.
nonisolated(unsafe) private var interruptDeviceBases = UnsafeMutablePointer<UInt>.allocate(
    capacity: VirtioNet.maxDevices)
nonisolated(unsafe) private var interruptDeviceCount = 0

/// Acknowledges the (level-triggered, shared) virtio interrupt on every NIC
/// so the line drops; the run loop then polls, which drains the rings.
private let virtioNetInterruptHandler: @convention(c) () -> Void = {
    for index in 0..<interruptDeviceCount {
        let device = VirtioMMIO(base: interruptDeviceBases[index])
        let status = device.read32(VirtioRegister.interruptStatus)
        if status != 0 { device.write32(VirtioRegister.interruptAck, status) }
    }
}

final class VirtioNet {
    static let maxDevices = 4
    static let featureMAC: UInt32 = 1 << 5  // VIRTIO_NET_F_MAC, word 0
    static let featureVersion1: UInt32 = 1  // VIRTIO_F_VERSION_1 = bit 32, word 1
    static let bufferSize = 2048
    static let maxFrame = 1514
    /// Transmit slots that must be free before another received frame is
    /// handled: the most one frame can trigger (a 64 KiB window of TCP
    /// segments and an ACK), so replies are not dropped for want of a slot.
    static let txReserve = 48

    let device: VirtioMMIO
    let slot: Int
    let mac: MACAddress
    let isLegacy: Bool
    /// virtio_net_hdr: 10 bytes legacy, 12 with VIRTIO_F_VERSION_1.
    let headerSize: Int
    private let rx: Virtqueue
    private let tx: Virtqueue
    private var txFreeSlots: [Int]
    private var txPosted = false
    private var txInterruptsOn = false

    private init(
        device: VirtioMMIO, slot: Int, mac: MACAddress, isLegacy: Bool, rx: Virtqueue, tx: Virtqueue
    ) {
        self.device = device
        self.slot = slot
        self.mac = mac
        self.isLegacy = isLegacy
        self.headerSize = isLegacy ? 10 : 12
        self.rx = rx
        self.tx = tx
        self.txFreeSlots = Array(0..<tx.size)
    }

    /// The device's MAC, read without driving it: the device is reset before
    /// and after, so one that is not started afterwards stays inert.
    static func peekMAC(_ device: VirtioMMIO) -> MACAddress {
        device.write32(VirtioRegister.status, 0)
        device.addStatus(VirtioStatus.acknowledge)
        device.addStatus(VirtioStatus.driver)
        let mac = readMAC(device, features: device.deviceFeatures(word: 0))
        device.write32(VirtioRegister.status, 0)
        return mac
    }

    /// Initialises the virtio-net device in `slot` (spec §3.1.1). Returns a
    /// reason on failure.
    static func start(device: VirtioMMIO, slot: Int) -> Result<VirtioNet, NetError> {
        precondition(interruptDeviceCount < maxDevices)
        let version = device.version
        if version != 1 && version != 2 {
            return .failure(NetError("virtio-mmio version \(version) not supported (slot \(slot))"))
        }
        let isLegacy = version == 1
        device.write32(VirtioRegister.status, 0)
        device.addStatus(VirtioStatus.acknowledge)
        device.addStatus(VirtioStatus.driver)

        let offered = device.deviceFeatures(word: 0)
        let wanted = offered & featureMAC
        device.setDriverFeatures(word: 0, wanted)
        if isLegacy {
            device.write32(VirtioRegister.legacyGuestPageSize, 4096)
        } else {
            guard device.deviceFeatures(word: 1) & featureVersion1 != 0 else {
                device.addStatus(VirtioStatus.failed)
                return .failure(NetError("modern device without VIRTIO_F_VERSION_1"))
            }
            device.setDriverFeatures(word: 1, featureVersion1)
            device.addStatus(VirtioStatus.featuresOK)
            guard device.read32(VirtioRegister.status) & VirtioStatus.featuresOK != 0 else {
                device.addStatus(VirtioStatus.failed)
                return .failure(NetError("device refused our features"))
            }
        }

        guard let rx = Virtqueue(device: device, index: 0, maxSize: 128, bufferSize: bufferSize),
            let tx = Virtqueue(device: device, index: 1, maxSize: 128, bufferSize: bufferSize)
        else {
            device.addStatus(VirtioStatus.failed)
            return .failure(NetError("virtio-net queues unavailable"))
        }

        let nic = VirtioNet(
            device: device, slot: slot, mac: readMAC(device, features: wanted), isLegacy: isLegacy, rx: rx, tx: tx)

        for slot in 0..<rx.size { rx.post(slot: slot, length: bufferSize, deviceWritable: true) }
        rx.publish()
        tx.setInterrupts(enabled: false)

        interruptDeviceBases[interruptDeviceCount] = device.base
        interruptDeviceCount += 1
        Interrupts.deviceHandler = virtioNetInterruptHandler
        device.addStatus(VirtioStatus.driverOK)
        device.write32(VirtioRegister.queueNotify, 0)
        return .success(nic)
    }

    /// The MAC from the config space, or QEMU's default one if the device has
    /// no `MAC` feature (`features`: offered or negotiated, word 0).
    private static func readMAC(_ device: VirtioMMIO, features: UInt32) -> MACAddress {
        guard features & featureMAC != 0 else { return MACAddress(0x5254_0012_3456) }
        var bits: UInt64 = 0
        for index in 0..<6 { bits = bits << 8 | UInt64(device.readConfig8(index)) }
        return MACAddress(bits)
    }

    /// Hands received frames (without the virtio header) to `handle` and gives
    /// the buffers back to the device. Stops early while the transmit ring is
    /// nearly full; a tx-completion interrupt then wakes the next poll.
    func receive(_ handle: (PacketView) -> Void) {
        var reposted = false
        while hasTransmitRoom(), let used = rx.nextUsed() {
            let slot = used.slot
            let frameLength = min(used.length, Self.bufferSize) - headerSize
            if frameLength > 0 {
                handle(PacketView(base: UnsafeRawPointer(rx.buffer(slot) + headerSize), count: frameLength))
            }
            rx.post(slot: slot, length: Self.bufferSize, deviceWritable: true)
            reposted = true
        }
        if reposted {
            rx.publish()
            if rx.deviceWantsNotify { device.write32(VirtioRegister.queueNotify, 0) }
        }
    }

    /// Builds one frame in a transmit buffer: `fill` writes the Ethernet frame
    /// and returns its length (0 cancels). False when the ring is full.
    func transmit(_ fill: (PacketWriter) -> Int) -> Bool {
        if txFreeSlots.isEmpty { flush() }
        guard let slot = txFreeSlots.popLast() else { return false }
        let buffer = tx.buffer(slot)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: headerSize)
        let length = fill(PacketWriter(base: buffer + headerSize))
        if length <= 0 || length > Self.maxFrame {
            txFreeSlots.append(slot)
            return false
        }
        tx.post(slot: slot, length: headerSize + length, deviceWritable: false)
        txPosted = true
        return true
    }

    /// Notifies the device of frames posted since the last flush (one MMIO exit
    /// per batch, not per frame) and takes back sent buffers.
    func flush() {
        if txPosted {
            tx.publish()
            if tx.deviceWantsNotify { device.write32(VirtioRegister.queueNotify, 1) }
            txPosted = false
        }
        reclaim()
    }

    private func reclaim() {
        while let used = tx.nextUsed() { txFreeSlots.append(used.slot) }
        if txInterruptsOn && txFreeSlots.count >= Self.txReserve {
            tx.setInterrupts(enabled: false)
            txInterruptsOn = false
        }
    }

    private func hasTransmitRoom() -> Bool {
        if txFreeSlots.count >= Self.txReserve { return true }
        flush()
        if txFreeSlots.count >= Self.txReserve { return true }
        // Ask for an interrupt, then look again: a completion that happened
        // before the request is seen now, one after it raises the interrupt.
        tx.setInterrupts(enabled: true)
        txInterruptsOn = true
        reclaim()
        return txFreeSlots.count >= Self.txReserve
    }
}

/// A failure reason for bring-up.
struct NetError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
