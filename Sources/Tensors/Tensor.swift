import Foundation
import Synchronization

/// Contiguous bytes behind a tensor: either owned (allocated here, freed on deinit) or
/// borrowed (memory that someone else owns for a known lifetime, such as an ABI input).
// @unchecked: every field is `let`; the bytes are written only through a Tensor that holds the storage uniquely (copy on write) or by the kernel filling it before it is shared.
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let byteCount: Int
    public let isOwned: Bool
    /// What keeps borrowed memory alive (e.g. a memory-mapped file), if anything.
    public let owner: AnyObject?

    /// Allocates `byteCount` zeroed bytes, 64-byte aligned. Large buffers come from `BufferPool`.
    public init(zeroed byteCount: Int) {
        self.bytes = BufferPool.shared.take(max(byteCount, 1))
        self.bytes.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
        self.byteCount = byteCount
        self.isOwned = true
        self.owner = nil
    }

    /// Allocates `byteCount` bytes without clearing them, for kernels that write every element.
    init(uninitialized byteCount: Int) {
        self.bytes = BufferPool.shared.take(max(byteCount, 1))
        self.byteCount = byteCount
        self.isOwned = true
        self.owner = nil
    }

    /// Wraps memory owned elsewhere. Either `owner` keeps it alive (it is retained here), or the
    /// caller guarantees that it outlives every use of this storage.
    public init(borrowing bytes: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject? = nil) {
        self.bytes = bytes
        self.byteCount = byteCount
        self.isOwned = false
        self.owner = owner
    }

    deinit { if isOwned { BufferPool.shared.give(bytes, max(byteCount, 1)) } }
}

/// Keeps freed large buffers (≥ 64 KiB) for reuse by the next allocation of the same size, so that
/// a training loop, which allocates the same shapes every step, does not pay the kernel's page
/// faults and page clearing for fresh memory each time (measured: ~45 % of a ConvNet-3 step
/// without it). At most `MENAGERIE_POOL_MB` (default 4096) MiB are kept. Sizes are rounded up to
/// quarter steps of their leading power of two, so that workloads whose shapes vary a little from
/// step to step (a detector's proposal count) reuse buffers instead of filling the pool with sizes
/// that never come back (measured: Faster-TAD training peaked at 2.8 GB resident before, 0.42 GB after, and ran 10 % faster).
/// Sendable: the free lists live in a Mutex (addresses as integers); `limit` is a `let`.
public final class BufferPool: Sendable {
    public static let shared = BufferPool()
    static let minimum = 1 << 16
    private struct State {
        /// Size class → addresses of free buffers of that size.
        var free: [Int: [UInt]] = [:]
        var kept = 0
    }
    private let state = Mutex(State())
    private let limit: Int

    init() {
        let mb = ProcessInfo.processInfo.environment["MENAGERIE_POOL_MB"].flatMap(Int.init) ?? 4096
        limit = max(0, mb) << 20
    }

    /// The size a buffer of `size` bytes is allocated and pooled at: up to 25 % more.
    static func sizeClass(_ size: Int) -> Int {
        guard size >= minimum else { return size }
        let step = 1 << (Int.bitWidth - size.leadingZeroBitCount - 3)
        return (size + step - 1) & ~(step - 1)
    }

    func take(_ requested: Int) -> UnsafeMutableRawPointer {
        let size = BufferPool.sizeClass(requested)
        if size >= BufferPool.minimum {
            let hit: UInt? = state.withLock { s in
                guard let p = s.free[size]?.popLast() else { return nil }
                s.kept -= size
                return p
            }
            if let hit, let p = UnsafeMutableRawPointer(bitPattern: hit) { return p }
        }
        return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    }

    func give(_ p: UnsafeMutableRawPointer, _ requested: Int) {
        let size = BufferPool.sizeClass(requested)
        if size >= BufferPool.minimum {
            let address = UInt(bitPattern: p)
            let limit = limit
            let pooled = state.withLock { s -> Bool in
                guard s.kept + size <= limit else { return false }
                s.free[size, default: []].append(address)
                s.kept += size
                return true
            }
            if pooled { return }
        }
        p.deallocate()
    }

    /// Returns every kept buffer to the system.
    public func drain() {
        let all = state.withLock { s -> [UInt] in
            let all = s.free.values.flatMap { $0 }
            s.free = [:]
            s.kept = 0
            return all
        }
        for a in all { UnsafeMutableRawPointer(bitPattern: a)?.deallocate() }
    }

    /// Bytes currently kept for reuse.
    public var keptBytes: Int { state.withLock { $0.kept } }
}

/// Errors raised when a tensor's declared shape and bytes or types do not agree.
public struct TensorError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A row-major, contiguous, n-dimensional array with value semantics (copy on write).
///
/// This is the plain data tensor that crosses plugin boundaries and is read from files;
/// it carries no autograd state.
public struct Tensor: Sendable {
    public let dtype: DType
    public let shape: [Int]
    public private(set) var storage: TensorStorage

    /// Number of elements: the product of `shape` (1 for a scalar).
    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var byteCount: Int { count * dtype.size }

    /// A zero-filled tensor. Cost: O(bytes).
    public init(zeros dtype: DType, shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.dtype = dtype
        self.shape = shape
        self.storage = TensorStorage(zeroed: shape.reduce(1, *) * dtype.size)
    }

    /// A tensor holding `scalars` in row-major order.
    public init<T: TensorScalar>(_ scalars: [T], shape: [Int]) throws {
        let n = shape.reduce(1, *)
        guard n == scalars.count else {
            throw TensorError("shape \(shape) holds \(n) elements but \(scalars.count) were given")
        }
        self.init(zeros: T.dtype, shape: shape)
        scalars.withUnsafeBytes { storage.bytes.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// A tensor holding `scalars` in row-major order, for callers that build the values and the
    /// shape together: a count that does not match the shape is a programming error (precondition),
    /// not a thrown error. Use the throwing `init(_:shape:)` for counts that come from outside.
    public init<T: TensorScalar>(shape: [Int], scalars: [T]) {
        let n = shape.reduce(1, *)
        precondition(n == scalars.count, "shape \(shape) holds \(n) elements but \(scalars.count) were given")
        self.init(zeros: T.dtype, shape: shape)
        scalars.withUnsafeBytes { storage.bytes.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// A 1-D tensor of `scalars`.
    public init<T: TensorScalar>(_ scalars: [T]) {
        self.init(shape: [scalars.count], scalars: scalars)
    }

    /// Wraps existing bytes without copying (see `TensorStorage(borrowing:)`).
    public init(dtype: DType, shape: [Int], storage: TensorStorage) throws {
        let n = shape.reduce(1, *) * dtype.size
        guard shape.allSatisfy({ $0 >= 0 }), n <= storage.byteCount else {
            throw TensorError("shape \(shape) of \(dtype.name) needs \(n) bytes; storage has \(storage.byteCount)")
        }
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// Wraps storage allocated here for exactly this shape (no check to fail).
    init(dtype: DType, shape: [Int], exactStorage storage: TensorStorage) {
        assert(shape.reduce(1, *) * dtype.size <= storage.byteCount)
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    /// The elements as a Swift array. Throws when `T` is not the tensor's dtype.
    public func scalars<T: TensorScalar>(as type: T.Type = T.self) throws -> [T] {
        guard T.dtype == dtype else {
            throw TensorError("tensor holds \(dtype.name), not \(T.dtype.name)")
        }
        return Array(UnsafeBufferPointer(start: storage.bytes.assumingMemoryBound(to: T.self), count: count))
    }

    /// Elements converted to Double, whatever the (numeric, non-half) dtype. Cost: O(n).
    public func doubles() throws -> [Double] {
        let p = storage.bytes
        let n = count
        switch dtype {
        case .float32: return (0..<n).map { Double(p.load(fromByteOffset: $0 * 4, as: Float.self)) }
        case .float64: return (0..<n).map { p.load(fromByteOffset: $0 * 8, as: Double.self) }
        case .int32: return (0..<n).map { Double(p.load(fromByteOffset: $0 * 4, as: Int32.self)) }
        case .int64: return (0..<n).map { Double(p.load(fromByteOffset: $0 * 8, as: Int64.self)) }
        case .uint8, .bool: return (0..<n).map { Double(p.load(fromByteOffset: $0, as: UInt8.self)) }
        case .float16, .bfloat16: throw TensorError("\(dtype.name) tensors must be converted before reading as numbers")
        }
    }

    /// Integer elements as Int (for labels and masks). Throws for floating dtypes.
    public func integers() throws -> [Int] {
        let p = storage.bytes
        let n = count
        switch dtype {
        case .int32: return (0..<n).map { Int(p.load(fromByteOffset: $0 * 4, as: Int32.self)) }
        case .int64: return (0..<n).map { Int(p.load(fromByteOffset: $0 * 8, as: Int64.self)) }
        case .uint8, .bool: return (0..<n).map { Int(p.load(fromByteOffset: $0, as: UInt8.self)) }
        default: throw TensorError("expected an integer tensor (i32, i64, u8), got \(dtype.name)")
        }
    }

    /// Read-only access to the contiguous bytes.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: storage.bytes, count: byteCount))
    }

    /// Mutable access; copies first when the storage is shared or borrowed.
    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) || !storage.isOwned {
            let copy = TensorStorage(zeroed: byteCount)
            copy.bytes.copyMemory(from: storage.bytes, byteCount: byteCount)
            storage = copy
        }
        return try body(UnsafeMutableRawBufferPointer(start: storage.bytes, count: byteCount))
    }

    /// Rewrites every float32 element with one pass of `body(destination, source)`, where
    /// `destination[i]` is computed from `source[i]` (and state of the caller's own). Copy on
    /// write: when this tensor owns its storage and nothing else refers to it, `destination` and
    /// `source` are the same memory (in place, no allocation); when the storage is shared (another
    /// tensor, a graph) or borrowed (a memory-mapped checkpoint), `body` writes a fresh buffer that
    /// this tensor then holds: the old memory is never written through. Optimizers use this.
    public mutating func updateFloats(_ body: (UnsafeMutableBufferPointer<Float>, UnsafeBufferPointer<Float>) throws -> Void) rethrows {
        precondition(dtype == .float32, "updateFloats needs f32, got \(dtype.name)")
        let n = count
        if storage.isOwned && isKnownUniquelyReferenced(&storage) {
            let p = storage.bytes.assumingMemoryBound(to: Float.self)
            try body(UnsafeMutableBufferPointer(start: p, count: n), UnsafeBufferPointer(start: p, count: n))
        } else {
            let fresh = TensorStorage(uninitialized: n * 4)
            try body(
                UnsafeMutableBufferPointer(start: fresh.bytes.assumingMemoryBound(to: Float.self), count: n),
                UnsafeBufferPointer(start: storage.bytes.assumingMemoryBound(to: Float.self), count: n))
            storage = fresh
        }
    }

    /// Same elements, new shape with the same element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.reduce(1, *) == count else {
            throw TensorError("cannot reshape \(shape) (\(count) elements) to \(newShape)")
        }
        return try Tensor(dtype: dtype, shape: newShape, storage: storage)
    }

    /// A copy that owns its memory (for keeping a borrowed tensor beyond a call).
    public func owned() -> Tensor {
        if storage.isOwned { return self }
        var copy = Tensor(zeros: dtype, shape: shape)
        copy.withUnsafeMutableBytes { dst in withUnsafeBytes { dst.copyMemory(from: $0) } }
        return copy
    }
}
