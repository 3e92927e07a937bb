import Foundation

/// A value built by the restricted unpickler (`Unpickler`). Containers live in the unpickler's
/// arena and are referred to by index, so that a value is small, a deeply nested or cyclic pickle
/// cannot recurse in a destructor, and a list mutated after it was memoized (as pickle does) is
/// seen the same through every reference.
public enum PickleValue: Sendable, Hashable {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer wider than 64 bits (LONG1/LONG4); kept as its byte length only.
    case bigInt(bytes: Int)
    case float(Double)
    case string(String)
    /// Bytes: an index into `PickleResult.blobs`.
    case bytes(Int)
    case list(Int), tuple(Int), dict(Int), set(Int)
    /// A tensor or array: an index into `PickleResult.tensors`.
    case tensor(Int)
    /// A torch storage (from a persistent id): an index into `PickleResult.storages`, and the
    /// element type its persistent id names.
    case storage(Int, StoredDType)
    /// A numpy dtype under construction: an index into the unpickler's dtypes.
    case numpyDType(Int)
    /// A torch dtype named as a value (`torch.float32`).
    case torchDType(StoredDType)
    /// An allowed callable or class, named "module.name", waiting for REDUCE or NEWOBJ.
    case global(String)
    /// An instance of a class the caller allowed by name (`TorchFile(path:objectClasses:)`): an index
    /// into `PickleResult.objects`, which keeps only its class name and its `__setstate__` dict.
    case object(Int)

    var kind: String {
        switch self {
        case .none: "None"
        case .bool: "bool"
        case .int, .bigInt: "int"
        case .float: "float"
        case .string: "str"
        case .bytes: "bytes"
        case .list: "list"
        case .tuple: "tuple"
        case .dict: "dict"
        case .set: "set"
        case .tensor: "tensor"
        case .storage: "storage"
        case .numpyDType: "numpy.dtype"
        case .torchDType: "torch.dtype"
        case .global(let name): "'\(name)'"
        case .object: "object"
        }
    }
}

/// The element types a checkpoint may store (torch's storage types, numpy's dtypes).
public enum StoredDType: String, Sendable, CaseIterable, Hashable {
    case f64, f32, f16, bf16, i64, i32, i16, i8, u8, bool

    public var size: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8, .u8, .bool: 1
        }
    }

    /// The safetensors name ("F32", "BF16", …).
    public var safetensorsName: String { rawValue == "bool" ? "BOOL" : rawValue.uppercased() }

    /// torch's legacy typed storage class names (`torch.FloatStorage`, as `torch.save` writes them).
    static let torchStorages: [String: StoredDType] = [
        "DoubleStorage": .f64, "FloatStorage": .f32, "HalfStorage": .f16, "BFloat16Storage": .bf16, "LongStorage": .i64,
        "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8, "ByteStorage": .u8, "BoolStorage": .bool,
    ]
    /// torch dtype objects (`torch.float32`).
    static let torchDTypes: [String: StoredDType] = [
        "float64": .f64, "double": .f64, "float32": .f32, "float": .f32, "float16": .f16, "half": .f16, "bfloat16": .bf16,
        "int64": .i64, "long": .i64, "int32": .i32, "int": .i32, "int16": .i16, "short": .i16, "int8": .i8, "uint8": .u8, "bool": .bool,
    ]
    /// numpy type strings without the byte-order character ("f4", "i8", "b1").
    static let numpy: [String: StoredDType] = [
        "f8": .f64, "f4": .f32, "f2": .f16, "i8": .i64, "i4": .i32, "i2": .i16, "i1": .i8, "u1": .u8, "b1": .bool,
    ]
}

/// A tensor or array found in a pickle: a strided view of a storage.
public struct StoredTensor: Sendable, Equatable {
    public let dtype: StoredDType
    public let shape: [Int]
    /// Strides in elements (≥ 0).
    public let strides: [Int]
    /// The first element's offset into the storage, in elements.
    public let offset: Int
    /// An index into `PickleResult.storages`.
    public let storage: Int
    /// Elements (the product of `shape`).
    public let count: Int

    /// Whether the elements are back to back in row-major order (size-1 dimensions may have any stride).
    public var isContiguous: Bool {
        var expected = 1
        for (d, s) in zip(shape, strides).reversed() where d != 1 {
            guard s == expected else { return false }
            expected *= d
        }
        return true
    }
}

/// A run of bytes a tensor reads: a range of the mapped file (a zip record, or a bytes value inside
/// a plain pickle), or bytes decoded while unpickling.
public struct StorageBytes: Sendable {
    public enum Source: Sendable {
        /// `count` bytes at `offset` of the mapped file; `record` names the zip record (CRC checked on use).
        case mapped(offset: Int, record: String?)
        case owned(Data)
    }
    public let source: Source
    public let count: Int
    /// The storage key (`data/<key>` in a torch archive), for messages.
    public let key: String
}
