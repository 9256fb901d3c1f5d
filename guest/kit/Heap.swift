// The kit's heap: one address-ordered free list over the RAM above the kernel.
//
// Every block starts with a 16-byte header: the block's total size (a multiple
// of 16, header included) and a second word that is the next free block's
// address while the block is free, or `usedMark` while it is allocated.
// `free` inserts the block back in address order and merges it with both
// neighbours, so memory that is freed is really reusable: a server whose live
// set is steady does not grow. Not reentrant: never allocate from an interrupt
// handler.

enum Heap {
    static let headerSize = 16
    static let minimumBlock = 32
    static let usedMark: UInt = 0x5357_4946_544C_4554  // "SWIFTLET"

    nonisolated(unsafe) static var freeList: UInt = 0
    nonisolated(unsafe) static var start: UInt = 0
    nonisolated(unsafe) static var end: UInt = 0
    nonisolated(unsafe) static var usedBytes = 0
    nonisolated(unsafe) static var peakUsedBytes = 0
    nonisolated(unsafe) static var liveAllocations = 0

    /// Hands the region [start, end) to the heap as one free block.
    static func initialize(start regionStart: UInt, end regionEnd: UInt) {
        start = (regionStart + 15) & ~15
        end = regionEnd & ~15
        freeList = start
        setSize(start, Int(end - start))
        setNext(start, 0)
    }

    static var totalBytes: Int { Int(end - start) }

    /// Size of the largest free block (what the next big allocation can get).
    static var largestFreeBlock: Int {
        var largest = 0
        var block = freeList
        while block != 0 {
            largest = max(largest, size(of: block))
            block = next(of: block)
        }
        return largest
    }

    static func allocate(size requested: Int, alignment requestedAlignment: Int) -> UnsafeMutableRawPointer? {
        let alignment = UInt(max(requestedAlignment, 16))
        let payload = (max(requested, 1) + 15) & ~15
        var need = payload + headerSize
        var previous: UInt = 0
        var block = freeList
        while block != 0 {
            let blockSize = size(of: block)
            var header = alignUp(block + UInt(headerSize), alignment) - UInt(headerSize)
            if header != block && header - block < UInt(minimumBlock) {
                header = alignUp(block + UInt(headerSize + minimumBlock), alignment) - UInt(headerSize)
            }
            let lead = Int(header - block)
            if lead + need <= blockSize {
                var tail = blockSize - lead - need
                if tail < minimumBlock {
                    need += tail
                    tail = 0
                }
                let following = next(of: block)
                // The pieces left free: [block, header) and the tail.
                var successor = following
                if tail > 0 {
                    let tailBlock = header + UInt(need)
                    setSize(tailBlock, tail)
                    setNext(tailBlock, following)
                    successor = tailBlock
                }
                if lead > 0 {
                    setSize(block, lead)
                    setNext(block, successor)
                } else if previous == 0 {
                    freeList = successor
                } else {
                    setNext(previous, successor)
                }
                setSize(header, need)
                setNext(header, usedMark)
                usedBytes += need
                peakUsedBytes = max(peakUsedBytes, usedBytes)
                liveAllocations += 1
                return UnsafeMutableRawPointer(bitPattern: header + UInt(headerSize))
            }
            previous = block
            block = next(of: block)
        }
        Console.writeStatic("swiftlet: out of memory\n")
        return nil
    }

    static func release(_ pointer: UnsafeMutableRawPointer) {
        let block = UInt(bitPattern: pointer) - UInt(headerSize)
        guard block >= start, block < end, next(of: block) == usedMark else {
            Kit.panic(staticMessage: "free of a pointer the heap did not hand out")
        }
        let blockSize = size(of: block)
        usedBytes -= blockSize
        liveAllocations -= 1
        var previous: UInt = 0
        var following = freeList
        while following != 0 && following < block {
            previous = following
            following = next(of: following)
        }
        setNext(block, following)
        if following != 0 && block + UInt(blockSize) == following {
            setSize(block, blockSize + size(of: following))
            setNext(block, next(of: following))
        }
        if previous == 0 {
            freeList = block
        } else if previous + UInt(size(of: previous)) == block {
            setSize(previous, size(of: previous) + size(of: block))
            setNext(previous, next(of: block))
        } else {
            setNext(previous, block)
        }
    }

    @inline(__always) static func alignUp(_ value: UInt, _ alignment: UInt) -> UInt {
        (value + alignment - 1) & ~(alignment - 1)
    }
    @inline(__always) static func size(of block: UInt) -> Int {
        UnsafePointer<Int>(bitPattern: block).unsafelyUnwrapped.pointee
    }
    @inline(__always) static func setSize(_ block: UInt, _ value: Int) {
        UnsafeMutablePointer<Int>(bitPattern: block).unsafelyUnwrapped.pointee = value
    }
    @inline(__always) static func next(of block: UInt) -> UInt {
        UnsafePointer<UInt>(bitPattern: block + 8).unsafelyUnwrapped.pointee
    }
    @inline(__always) static func setNext(_ block: UInt, _ value: UInt) {
        UnsafeMutablePointer<UInt>(bitPattern: block + 8).unsafelyUnwrapped.pointee = value
    }
}

/// Heap figures an app can print or serve (see the `heap` console command).
public enum HeapStatistics {
    public static var usedBytes: Int { Heap.usedBytes }
    public static var peakUsedBytes: Int { Heap.peakUsedBytes }
    public static var totalBytes: Int { Heap.totalBytes }
    public static var liveAllocations: Int { Heap.liveAllocations }
    public static var largestFreeBlock: Int { Heap.largestFreeBlock }
}
