// The C functions the Embedded Swift runtime links against, implemented here.

@_cdecl("posix_memalign")
public func posix_memalign(_ result: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ alignment: Int, _ size: Int)
    -> Int32
{
    guard alignment > 0, alignment & (alignment - 1) == 0 else { return 22 }  // EINVAL
    guard let pointer = Heap.allocate(size: size, alignment: alignment) else { return 12 }  // ENOMEM
    result.pointee = pointer
    return 0
}

/// `free` itself is a jump to this in entry.S: Swift reserves the name.
@_cdecl("kit_free")
public func kitFree(_ pointer: UnsafeMutableRawPointer?) {
    guard let pointer else { return }
    Heap.release(pointer)
}

// memcpy/memmove/memset work in 8-byte words where they can: NET copies
// packets with them. (-disable-loop-idiom-all keeps these loops from being
// turned back into calls to themselves.)

@_cdecl("memcpy")
public func memcpy(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, _ count: Int)
    -> UnsafeMutableRawPointer
{
    var offset = 0
    while offset + 8 <= count {
        destination.storeBytes(
            of: source.loadUnaligned(fromByteOffset: offset, as: UInt64.self), toByteOffset: offset, as: UInt64.self)
        offset += 8
    }
    while offset < count {
        destination.storeBytes(
            of: source.load(fromByteOffset: offset, as: UInt8.self), toByteOffset: offset, as: UInt8.self)
        offset += 1
    }
    return destination
}

@_cdecl("memmove")
public func memmove(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, _ count: Int)
    -> UnsafeMutableRawPointer
{
    if UInt(bitPattern: destination) <= UInt(bitPattern: source)
        || UInt(bitPattern: destination) >= UInt(bitPattern: source) + UInt(count)
    {
        return memcpy(destination, source, count)
    }
    // Overlapping with destination above source: copy backwards.
    var remaining = count
    while remaining >= 8 {
        remaining -= 8
        destination.storeBytes(
            of: source.loadUnaligned(fromByteOffset: remaining, as: UInt64.self), toByteOffset: remaining,
            as: UInt64.self)
    }
    while remaining > 0 {
        remaining -= 1
        destination.storeBytes(
            of: source.load(fromByteOffset: remaining, as: UInt8.self), toByteOffset: remaining, as: UInt8.self)
    }
    return destination
}

@_cdecl("memset")
public func memset(_ destination: UnsafeMutableRawPointer, _ value: Int32, _ count: Int) -> UnsafeMutableRawPointer {
    let byte = UInt8(truncatingIfNeeded: value)
    let word = UInt64(byte) &* 0x0101_0101_0101_0101
    var offset = 0
    while offset + 8 <= count {
        destination.storeBytes(of: word, toByteOffset: offset, as: UInt64.self)
        offset += 8
    }
    while offset < count {
        destination.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
        offset += 1
    }
    return destination
}

@_cdecl("memcmp")
public func memcmp(_ left: UnsafeRawPointer, _ right: UnsafeRawPointer, _ count: Int) -> Int32 {
    var offset = 0
    while offset < count {
        let a = left.load(fromByteOffset: offset, as: UInt8.self)
        let b = right.load(fromByteOffset: offset, as: UInt8.self)
        if a != b { return Int32(a) - Int32(b) }
        offset += 1
    }
    return 0
}

@_cdecl("strlen")
public func strlen(_ string: UnsafePointer<CChar>) -> Int {
    var length = 0
    while string[length] != 0 { length += 1 }
    return length
}

/// `print` ends up here.
@_cdecl("putchar")
public func putchar(_ character: Int32) -> Int32 {
    Console.write(byte: UInt8(truncatingIfNeeded: character))
    return character
}

/// Hasher seeds. Not cryptographic: mixes the TSC with a xorshift state.
@_cdecl("arc4random_buf")
public func arc4random_buf(_ buffer: UnsafeMutableRawPointer, _ count: Int) {
    for index in 0..<count {
        RandomState.value ^= kit_rdtsc()
        RandomState.value ^= RandomState.value << 13
        RandomState.value ^= RandomState.value >> 7
        RandomState.value ^= RandomState.value << 17
        buffer.storeBytes(of: UInt8(truncatingIfNeeded: RandomState.value), toByteOffset: index, as: UInt8.self)
    }
}

enum RandomState {
    nonisolated(unsafe) static var value: UInt64 = 0x9E37_79B9_7F4A_7C15
}
