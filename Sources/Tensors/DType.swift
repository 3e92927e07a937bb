import CMenagerie

/// Element type of a tensor. Raw values are the ABI's `mng_dtype` codes.
public enum DType: Int32, Sendable, CaseIterable, Codable {
    case float32 = 1, float64 = 2, int32 = 3, int64 = 4, uint8 = 5, float16 = 6, bfloat16 = 7, bool = 8

    /// Bytes per element.
    public var size: Int { Int(mng_dtype_size(rawValue)) }

    /// Short name used in metadata, CLI output and docs ("f32", "i64", ...).
    public var name: String {
        switch self {
        case .float32: "f32"
        case .float64: "f64"
        case .int32: "i32"
        case .int64: "i64"
        case .uint8: "u8"
        case .float16: "f16"
        case .bfloat16: "bf16"
        case .bool: "bool"
        }
    }

    public init?(name: String) {
        guard let match = DType.allCases.first(where: { $0.name == name }) else { return nil }
        self = match
    }
}

/// A Swift scalar type that a tensor can hold.
public protocol TensorScalar: Sendable {
    static var dtype: DType { get }
}
extension Float: TensorScalar { public static var dtype: DType { .float32 } }
extension Double: TensorScalar { public static var dtype: DType { .float64 } }
extension Int32: TensorScalar { public static var dtype: DType { .int32 } }
extension Int64: TensorScalar { public static var dtype: DType { .int64 } }
extension UInt8: TensorScalar { public static var dtype: DType { .uint8 } }
extension Bool: TensorScalar { public static var dtype: DType { .bool } }
