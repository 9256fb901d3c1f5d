// virtio over MMIO (virtio 1.2 spec §4.2): device discovery on the QEMU
// microvm slots, modern (version 2) and legacy (version 1) register layouts,
// and split virtqueues. Memory is identity-mapped, so DMA addresses are
// pointer values.

import Synchronization
import _Volatile

/// Register offsets of a virtio-mmio transport.
enum VirtioRegister {
    static let magic = 0x000
    static let version = 0x004
    static let deviceID = 0x008
    static let deviceFeatures = 0x010
    static let deviceFeaturesSelect = 0x014
    static let driverFeatures = 0x020
    static let driverFeaturesSelect = 0x024
    static let legacyGuestPageSize = 0x028
    static let queueSelect = 0x030
    static let queueSizeMax = 0x034
    static let queueSize = 0x038
    static let legacyQueueAlign = 0x03c
    static let legacyQueuePFN = 0x040
    static let queueReady = 0x044
    static let queueNotify = 0x050
    static let interruptStatus = 0x060
    static let interruptAck = 0x064
    static let status = 0x070
    static let queueDescLow = 0x080
    static let queueDescHigh = 0x084
    static let queueDriverLow = 0x090
    static let queueDriverHigh = 0x094
    static let queueDeviceLow = 0x0a0
    static let queueDeviceHigh = 0x0a4
    static let config = 0x100
}

enum VirtioStatus {
    static let acknowledge: UInt32 = 1
    static let driver: UInt32 = 2
    static let driverOK: UInt32 = 4
    static let featuresOK: UInt32 = 8
    static let failed: UInt32 = 128
}

/// One virtio-mmio transport window.
struct VirtioMMIO {
    let base: UInt

    /// microvm puts its transports at 0xfeb00000 in 512-byte slots; with a PVH
    /// boot they are not described anywhere, so probe them all.
    static let firstSlot: UInt = 0xfeb0_0000
    static let slotSize: UInt = 0x200
    static let slotCount: UInt = 32
    static let magicValue: UInt32 = 0x7472_6976  // "virt"

    /// Every transport whose device has `deviceID` (1 = network), in slot order.
    static func all(deviceID: UInt32) -> [(device: VirtioMMIO, slot: Int)] {
        var found: [(device: VirtioMMIO, slot: Int)] = []
        for slot in 0..<Int(slotCount) {
            let device = VirtioMMIO(base: firstSlot + UInt(slot) * slotSize)
            if device.read32(VirtioRegister.magic) == magicValue,
                device.read32(VirtioRegister.deviceID) == deviceID
            {
                found.append((device, slot))
            }
        }
        return found
    }

    @inline(__always) func read32(_ offset: Int) -> UInt32 {
        VolatileMappedRegister<UInt32>(unsafeBitPattern: base + UInt(offset)).load()
    }
    @inline(__always) func write32(_ offset: Int, _ value: UInt32) {
        VolatileMappedRegister<UInt32>(unsafeBitPattern: base + UInt(offset)).store(value)
    }
    func readConfig8(_ offset: Int) -> UInt8 {
        VolatileMappedRegister<UInt8>(unsafeBitPattern: base + UInt(VirtioRegister.config + offset)).load()
    }

    var version: UInt32 { read32(VirtioRegister.version) }

    func deviceFeatures(word: UInt32) -> UInt32 {
        write32(VirtioRegister.deviceFeaturesSelect, word)
        return read32(VirtioRegister.deviceFeatures)
    }
    func setDriverFeatures(word: UInt32, _ value: UInt32) {
        write32(VirtioRegister.driverFeaturesSelect, word)
        write32(VirtioRegister.driverFeatures, value)
    }
    func addStatus(_ bits: UInt32) {
        write32(VirtioRegister.status, read32(VirtioRegister.status) | bits)
    }
}

/// A split virtqueue whose descriptor i always points at buffer i, so a
/// used-ring id names the buffer directly.
final class Virtqueue {
    let index: UInt32
    let size: Int
    let bufferSize: Int
    private let descriptors: UnsafeMutableRawPointer
    private let availRing: UnsafeMutableRawPointer
    private let usedRing: UnsafeMutableRawPointer
    let buffers: UnsafeMutableRawPointer
    private var availIndex: UInt16 = 0
    private var lastUsedIndex: UInt16 = 0

    /// Allocates and registers queue `index` with the device (which must be
    /// between FEATURES_OK and DRIVER_OK).
    init?(device: VirtioMMIO, index: UInt32, maxSize: Int, bufferSize: Int) {
        device.write32(VirtioRegister.queueSelect, index)
        let deviceMax = Int(device.read32(VirtioRegister.queueSizeMax))
        if deviceMax == 0 { return nil }
        var size = 1
        while size * 2 <= min(deviceMax, maxSize) { size *= 2 }
        self.index = index
        self.size = size
        self.bufferSize = bufferSize
        // Legacy layout (also valid for modern): descriptors, then the available
        // ring, then the used ring on the next page boundary.
        let descBytes = 16 * size
        let availBytes = 6 + 2 * size
        let usedOffset = (descBytes + availBytes + 4095) & ~4095
        let usedBytes = 6 + 8 * size
        let ringBytes = (usedOffset + usedBytes + 4095) & ~4095
        let ring = UnsafeMutableRawPointer.allocate(byteCount: ringBytes, alignment: 4096)
        ring.initializeMemory(as: UInt8.self, repeating: 0, count: ringBytes)
        descriptors = ring
        availRing = ring + descBytes
        usedRing = ring + usedOffset
        // Buffers need no clearing: the device fills rx ones, we fill tx ones.
        buffers = UnsafeMutableRawPointer.allocate(byteCount: size * bufferSize, alignment: 4096)
        for slot in 0..<size {
            let desc = descriptors + 16 * slot
            desc.storeBytes(of: UInt64(UInt(bitPattern: buffers + slot * bufferSize)), as: UInt64.self)
            desc.storeBytes(of: UInt32(bufferSize), toByteOffset: 8, as: UInt32.self)
        }

        device.write32(VirtioRegister.queueSize, UInt32(size))
        let ringAddress = UInt64(UInt(bitPattern: ring))
        if device.version == 1 {
            device.write32(VirtioRegister.legacyQueueAlign, 4096)
            device.write32(VirtioRegister.legacyQueuePFN, UInt32(truncatingIfNeeded: ringAddress >> 12))
        } else {
            let availAddress = ringAddress + UInt64(descBytes)
            let usedAddress = ringAddress + UInt64(usedOffset)
            device.write32(VirtioRegister.queueDescLow, UInt32(truncatingIfNeeded: ringAddress))
            device.write32(VirtioRegister.queueDescHigh, UInt32(truncatingIfNeeded: ringAddress >> 32))
            device.write32(VirtioRegister.queueDriverLow, UInt32(truncatingIfNeeded: availAddress))
            device.write32(VirtioRegister.queueDriverHigh, UInt32(truncatingIfNeeded: availAddress >> 32))
            device.write32(VirtioRegister.queueDeviceLow, UInt32(truncatingIfNeeded: usedAddress))
            device.write32(VirtioRegister.queueDeviceHigh, UInt32(truncatingIfNeeded: usedAddress >> 32))
            device.write32(VirtioRegister.queueReady, 1)
        }
    }

    func buffer(_ slot: Int) -> UnsafeMutableRawPointer { buffers + slot * bufferSize }

    /// Whether the device interrupts when it has used buffers
    /// (VIRTQ_AVAIL_F_NO_INTERRUPT cleared). Tx runs without them, reclaimed
    /// by polling, except while waiting for room.
    func setInterrupts(enabled: Bool) {
        VolatileMappedRegister<UInt16>(unsafeBitPattern: UInt(bitPattern: availRing)).store(enabled ? 0 : 1)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Offers buffer `slot` to the device: `length` bytes, device-writable for rx.
    func post(slot: Int, length: Int, deviceWritable: Bool) {
        let desc = descriptors + 16 * slot
        desc.storeBytes(of: UInt32(length), toByteOffset: 8, as: UInt32.self)
        desc.storeBytes(of: deviceWritable ? UInt16(2) : 0, toByteOffset: 12, as: UInt16.self)
        let ringSlot = Int(availIndex) & (size - 1)
        (availRing + 4 + 2 * ringSlot).storeBytes(of: UInt16(slot), as: UInt16.self)
        availIndex &+= 1
    }

    /// Publishes posted buffers; the fence keeps descriptor and buffer stores
    /// ahead of the index store.
    func publish() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        VolatileMappedRegister<UInt16>(unsafeBitPattern: UInt(bitPattern: availRing + 2)).store(availIndex)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Whether the device asked not to be notified (VIRTQ_USED_F_NO_NOTIFY).
    var deviceWantsNotify: Bool {
        VolatileMappedRegister<UInt16>(unsafeBitPattern: UInt(bitPattern: usedRing)).load() & 1 == 0
    }

    /// The next buffer the device has finished with: its slot and written length.
    func nextUsed() -> (slot: Int, length: Int)? {
        let deviceIndex = VolatileMappedRegister<UInt16>(unsafeBitPattern: UInt(bitPattern: usedRing + 2)).load()
        if deviceIndex == lastUsedIndex { return nil }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let element = usedRing + 4 + 8 * (Int(lastUsedIndex) & (size - 1))
        let slot = Int(element.load(as: UInt32.self))
        let length = Int(element.load(fromByteOffset: 4, as: UInt32.self))
        lastUsedIndex &+= 1
        // A device that names a descriptor we never had is broken; skip it.
        if slot >= size { return nextUsed() }
        return (slot, length)
    }
}
