import CMenagerie
import Formats
import Foundation
import Tensors

extension Tensor {
    /// Wraps an ABI tensor without copying, after checking that its header is coherent.
    /// The memory stays owned by the caller; the result is valid only while it is.
    public init(borrowing c: mng_tensor) throws {
        let name = c.name.map { String(cString: $0) } ?? "<unnamed>"
        guard let dtype = DType(rawValue: c.dtype) else {
            throw MenagerieError.invalidArgument("tensor '\(name)' has unknown dtype code \(c.dtype)")
        }
        guard c.rank >= 0, c.rank <= 32, c.rank == 0 || c.shape != nil else {
            throw MenagerieError.invalidArgument("tensor '\(name)' has invalid rank \(c.rank)")
        }
        let shape = (0..<Int(c.rank)).map { Int(c.shape![$0]) }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw MenagerieError.invalidArgument("tensor '\(name)' has a negative dimension in \(shape)")
        }
        // Overflow-checked: a shape such as [2^40, 2^40, 2^40] is refused, not trapped on.
        var need = dtype.size
        for d in shape {
            let (p, o) = need.multipliedReportingOverflow(by: d)
            guard !o else { throw MenagerieError.invalidArgument("tensor '\(name)': shape \(shape) of \(dtype.name) has more bytes than can be addressed") }
            need = p
        }
        guard UInt64(need) == c.nbytes else {
            throw MenagerieError.invalidArgument("tensor '\(name)': shape \(shape) of \(dtype.name) needs \(need) bytes, nbytes says \(c.nbytes)")
        }
        guard need == 0 || c.data != nil else {
            throw MenagerieError.invalidArgument("tensor '\(name)' has no data pointer")
        }
        let storage = TensorStorage(borrowing: c.data ?? UnsafeMutableRawPointer(bitPattern: 64)!, byteCount: need)
        try self.init(dtype: dtype, shape: shape, storage: storage)
    }
}

/// Owns the C view (names, shapes, the `mng_tensor` array) of a list of Swift tensors, for as long
/// as the C side may read it. Used for requests (host → plugin) and responses (plugin → host).
// @unchecked: immutable after init (the C arrays are only read by the other side) and freed in deinit.
public final class TensorArena: @unchecked Sendable {
    public let tensors: [(name: String, tensor: Tensor)]
    public let array: UnsafeMutablePointer<mng_tensor>?
    private var strings: [UnsafeMutablePointer<CChar>] = []
    private var shapes: [UnsafeMutablePointer<Int64>] = []

    public init(_ tensors: [(name: String, tensor: Tensor)]) {
        self.tensors = tensors
        guard !tensors.isEmpty else {
            array = nil
            return
        }
        let arr = UnsafeMutablePointer<mng_tensor>.allocate(capacity: tensors.count)
        for (i, (name, t)) in tensors.enumerated() {
            let cname = strdup(name)!
            strings.append(cname)
            let shape = UnsafeMutablePointer<Int64>.allocate(capacity: max(t.rank, 1))
            for (d, v) in t.shape.enumerated() { shape[d] = Int64(v) }
            shapes.append(shape)
            arr[i] = mng_tensor(
                name: UnsafePointer(cname), dtype: t.dtype.rawValue, rank: Int32(t.rank),
                shape: UnsafePointer(shape), data: t.storage.bytes, nbytes: UInt64(t.byteCount))
        }
        array = arr
    }

    /// A C string that lives as long as the arena.
    public func cString(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return UnsafePointer(p)
    }

    deinit {
        array?.deallocate()
        strings.forEach { free($0) }
        shapes.forEach { $0.deallocate() }
    }
}

/// The most tensors one request or response may carry (a count beyond it is a corrupt response).
public let maxTensorCount: UInt64 = 1 << 20

/// Reads the tensors of an ABI array (borrowed) into a dictionary keyed by name.
public func borrowTensors(_ base: UnsafePointer<mng_tensor>?, count: UInt64, owner: String) throws -> [(name: String, tensor: Tensor)] {
    guard count > 0 else { return [] }
    guard count <= maxTensorCount else {
        throw MenagerieError.invalidArgument("\(owner): tensor_count is \(count), more than the \(maxTensorCount) tensors one call may carry")
    }
    guard let base else { throw MenagerieError.invalidArgument("\(owner): tensor_count is \(count) but tensors is NULL") }
    var out: [(String, Tensor)] = []
    for i in 0..<Int(count) {
        let c = base[i]
        guard let cname = c.name else { throw MenagerieError.invalidArgument("\(owner): tensor \(i) has no name") }
        out.append((String(cString: cname), try Tensor(borrowing: c)))
    }
    return out
}
