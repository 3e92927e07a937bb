/// Contiguous bytes behind a tensor: either owned (allocated here, freed on deinit) or
/// borrowed (memory that someone else owns for a known lifetime, such as an ABI input).
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let byteCount: Int
    public let isOwned: Bool
    /// What keeps borrowed memory alive (e.g. a memory-mapped file), if anything.
    public let owner: AnyObject?

    /// Allocates `byteCount` zeroed bytes, 64-byte aligned.
    public init(zeroed byteCount: Int) {
        self.bytes = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        self.bytes.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
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

    deinit { if isOwned { bytes.deallocate() } }
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
public struct Tensor: @unchecked Sendable {
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

    /// A 1-D tensor of `scalars`.
    public init<T: TensorScalar>(_ scalars: [T]) {
        try! self.init(scalars, shape: [scalars.count])
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
