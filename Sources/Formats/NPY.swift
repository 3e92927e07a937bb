import Foundation
import Tensors

/// NumPy `.npy` files, format versions 1.0–3.0, little-endian, C order.
///
/// Reference: numpy/lib/format.py (magic `\x93NUMPY`, header dict with `descr`, `fortran_order`,
/// `shape`, padded so the data starts on a 64-byte boundary).
public enum NPY {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]

    static func descr(_ dtype: DType) -> String {
        switch dtype {
        case .float32: "<f4"
        case .float64: "<f8"
        case .int32: "<i4"
        case .int64: "<i8"
        case .uint8: "|u1"
        case .bool: "|b1"
        case .float16: "<f2"
        case .bfloat16: "<V2" // numpy has no bfloat16; written as raw 2-byte values
        }
    }

    static func dtype(descr: String) -> DType? {
        switch descr {
        case "<f4", "=f4": .float32
        case "<f8", "=f8": .float64
        case "<i4", "=i4": .int32
        case "<i8", "=i8": .int64
        case "|u1", "<u1", "u1": .uint8
        case "|b1", "b1": .bool
        case "<f2", "=f2": .float16
        default: nil
        }
    }

    /// Reads an `.npy` file into a tensor. Errors name the file and the field at fault.
    public static func read(path: String) throws -> Tensor {
        // Memory-mapped (only regular files: a FIFO or device is refused); the data is copied out.
        let file = try MappedFile(path: path)
        let data = Data(
            bytesNoCopy: UnsafeMutableRawPointer(mutating: file.bytes), count: file.count,
            deallocator: .custom { _, _ in withExtendedLifetime(file) {} })
        return try decode(data, path: path)
    }

    /// numpy's `_MAX_HEADER_SIZE`: `np.load` refuses longer headers (they "may not be safe to load").
    static let maxHeaderLength = 10_000

    /// What an `.npy` header says: the dtype, the shape and where the data starts.
    public struct Header: Equatable, Sendable {
        public var dtype: DType
        public var shape: [Int]
        public var dataOffset: Int
        /// The bytes of the data (checked against overflow when the header is read).
        public var byteCount: Int
    }

    /// Reads and checks the header of an `.npy` file's bytes; the data must be all there.
    public static func header(_ data: Data, path: String = "<memory>") throws -> Header {
        let bytes = [UInt8](data.prefix(12))
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw FormatError(path: path, "not a .npy file (missing the \\x93NUMPY magic)")
        }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw FormatError(path: path, "truncated .npy header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw FormatError(path: path, ".npy format version \(major) is not supported (1, 2 and 3 are)")
        }
        guard headerLength <= maxHeaderLength else {
            throw FormatError(path: path, ".npy header length \(headerLength) exceeds numpy's limit of \(maxHeaderLength) bytes: corrupt or not a .npy file")
        }
        guard headerStart + headerLength <= data.count,
            let header = String(data: data.subdata(in: headerStart..<(headerStart + headerLength)), encoding: .utf8)
        else { throw FormatError(path: path, "truncated or non-text .npy header") }

        guard let descr = field("descr", in: header)?.trimmingCharacters(in: CharacterSet(charactersIn: "'\" ")) else {
            throw FormatError(path: path, ".npy header has no 'descr'")
        }
        guard let dtype = dtype(descr: descr) else {
            throw FormatError(path: path, "dtype '\(descr)' is not supported; save as float32, float64, int32, int64, uint8 or bool (little-endian)")
        }
        if let fortran = field("fortran_order", in: header), fortran.contains("True") {
            throw FormatError(path: path, "Fortran-ordered arrays are not supported; save with np.ascontiguousarray")
        }
        guard let shapeText = field("shape", in: header) else { throw FormatError(path: path, ".npy header has no 'shape'") }
        let dims = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "() "))
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for d in dims {
            guard let v = Int(d), v >= 0 else { throw FormatError(path: path, "bad dimension '\(d)' in shape \(shapeText)") }
            shape.append(v)
        }
        let dataStart = headerStart + headerLength
        // Overflow-checked, zero dimensions included (their strides must fit too); nothing is
        // allocated before the file is known to hold the bytes.
        let count = try Limits.elements(shape, what: "shape \(shape)", source: path)
        let (needed, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else { throw FormatError(path: path, "shape \(shape) is too large to hold in memory") }
        guard data.count - dataStart >= needed else {
            throw FormatError(path: path, "shape \(shape) of \(dtype.name) needs \(needed) bytes of data; the file has \(data.count - dataStart)")
        }
        return Header(dtype: dtype, shape: shape, dataOffset: dataStart, byteCount: needed)
    }

    /// Decodes the bytes of an `.npy` file.
    public static func decode(_ data: Data, path: String = "<memory>") throws -> Tensor {
        let h = try header(data, path: path)
        var tensor = Tensor(zeros: h.dtype, shape: h.shape)
        tensor.withUnsafeMutableBytes { out in
            data.withUnsafeBytes { raw in
                out.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[h.dataOffset..<(h.dataOffset + h.byteCount)]))
            }
        }
        return tensor
    }

    /// The text of `key`'s value in a Python dict literal (the value ends at the next top-level comma).
    static func field(_ key: String, in header: String) -> String? {
        guard let keyRange = header.range(of: "'\(key)'") ?? header.range(of: "\"\(key)\"") else { return nil }
        var rest = header[keyRange.upperBound...].drop(while: { $0 == " " || $0 == ":" })
        var depth = 0
        var value = ""
        while let c = rest.first {
            if c == "(" || c == "[" { depth += 1 }
            if c == ")" || c == "]" { depth -= 1 }
            if (c == "," && depth == 0) || c == "}" { break }
            value.append(c)
            rest = rest.dropFirst()
        }
        return value.trimmingCharacters(in: .whitespaces)
    }

    /// Encodes a tensor as `.npy` (version 1.0).
    public static func encode(_ tensor: Tensor) -> Data {
        var data = encodeHeader(dtype: tensor.dtype, shape: tensor.shape)
        tensor.withUnsafeBytes { data.append(contentsOf: $0) }
        return data
    }

    /// The header of a version-1.0 `.npy` file (padded to 64 bytes, as numpy writes it); the data
    /// follows it directly.
    public static func encodeHeader(dtype: DType, shape: [Int]) -> Data {
        let shapeText = shape.isEmpty ? "()" : shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr(dtype))', 'fortran_order': False, 'shape': \(shapeText), }"
        let total = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        var data = Data(magic + [1, 0])
        let n = header.utf8.count
        data.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        data.append(header.data(using: .utf8)!)
        return data
    }
}
