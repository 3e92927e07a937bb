import Foundation
import Tensors

/// A safetensors file (https://github.com/huggingface/safetensors, format version 0.x):
/// an 8-byte little-endian header length N, N bytes of JSON
/// `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}`, then the data,
/// offsets relative to its start.
///
/// The file is memory-mapped; tensors borrow its pages (no copy of the checkpoint). Everything is
/// validated before any tensor memory is touched, as strictly as the reference implementation (the
/// Rust crate's `read_metadata` and `Metadata::validate`): the header length is at most 100,000,000
/// and fits the file, the header is UTF-8 JSON starting with '{', every dtype is known, shape × dtype
/// size equals the byte range (overflow-checked), and the ranges, sorted, are contiguous from 0 to
/// the end of the file (no gap, overlap or trailing byte).
// @unchecked: immutable after init; the bytes are a read-only memory map (PROT_READ), never written.
public final class SafeTensorsFile: @unchecked Sendable {
    /// One tensor's place in the file.
    public struct Entry: Sendable, Equatable {
        public let name: String
        /// The dtype as the file names it ("F32", "BF16", ...).
        public let fileDType: String
        public let shape: [Int]
        public let begin: Int
        public let end: Int
    }

    public let path: String
    public let metadata: [String: String]
    public let entries: [String: Entry]
    let file: MappedFile
    let dataStart: Int

    /// Element sizes of the dtypes of the format.
    static let dtypeSizes: [String: Int] = [
        "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
        "I8": 1, "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1,
        "F8_E4M3": 1, "F8_E5M2": 1,
    ]
    /// The reference implementation's MAX_HEADER_SIZE.
    static let maxHeader = 100_000_000

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.file = file
        self.path = path
        func fail(_ m: String) -> FormatError { FormatError(path: path, m) }
        guard file.count >= 8 else { throw fail("not a safetensors file: \(file.count) bytes, shorter than the 8-byte header length") }
        let declared = UInt64(littleEndian: file.bytes.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(SafeTensorsFile.maxHeader) else {
            throw fail("header length \(declared) exceeds the limit of \(SafeTensorsFile.maxHeader) bytes: not a safetensors file, or corrupt")
        }
        let n = Int(declared)
        guard n >= 2, 8 + n <= file.count else {
            throw fail("header length \(n) does not fit in the \(file.count)-byte file: truncated or not a safetensors file")
        }
        guard let headerText = String(validating: UnsafeRawBufferPointer(start: file.bytes + 8, count: n), as: UTF8.self) else {
            throw fail("the header is not valid UTF-8: not a safetensors file, or corrupt")
        }
        guard headerText.utf8.first == UInt8(ascii: "{") else { throw fail("the header does not start with '{': not a safetensors file, or corrupt") }
        let header: JSONValue
        do { header = try JSONValue.parse(headerText, source: "the safetensors header") } catch { throw fail("\(error)") }
        guard let object = header.objectValue else { throw fail("the header is not a JSON object") }
        dataStart = 8 + n
        let dataSize = file.count - dataStart
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value.objectValue else { throw fail("__metadata__ must be an object of strings") }
                for (k, v) in m {
                    guard let s = v.stringValue else { throw fail("__metadata__ value '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let dtype = value["dtype"]?.stringValue else { throw fail("tensor '\(name)' has no dtype") }
            guard let size = SafeTensorsFile.dtypeSizes[dtype] else { throw fail("tensor '\(name)' has unknown dtype '\(dtype)'") }
            guard let dims = value["shape"]?.arrayValue else { throw fail("tensor '\(name)' has no shape") }
            var shape: [Int] = []
            for d in dims {
                guard let v = d.intValue, v >= 0, v < 1 << 40 else { throw fail("tensor '\(name)' has an invalid dimension \(d.compactText)") }
                shape.append(v)
            }
            guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
                let begin = offsets[0].intValue, let end = offsets[1].intValue
            else {
                throw fail("tensor '\(name)' needs \"data_offsets\": [begin, end]")
            }
            guard 0 <= begin, begin <= end, end <= dataSize else {
                throw fail("tensor '\(name)' occupies bytes \(begin)..<\(end) but the data section has \(dataSize): truncated file?")
            }
            // Zero dimensions included: (0, 2^39, 2^39) holds nothing but its strides overflow.
            let count: Int
            do { count = try Limits.elements(shape, what: "tensor '\(name)'", source: path) } catch let e as FormatError { throw fail(e.problem) }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow, bytes == end - begin else {
                throw fail(
                    "tensor '\(name)': shape \(shape) of \(dtype) needs \(overflow ? "more than 2^63" : "\(bytes)") bytes, data_offsets give \(end - begin)")
            }
            entries[name] = Entry(name: name, fileDType: dtype, shape: shape, begin: begin, end: end)
        }
        // As the reference implementation (safetensors' Metadata::validate): sorted by their
        // offsets, each tensor begins where the previous one ended (no gap, no overlap, empty
        // tensors included) and the last one ends where the file does (no trailing bytes: a
        // truncated or padded file is refused).
        let sorted = entries.values.sorted { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var position = 0, previous: Entry?
        for e in sorted {
            guard e.begin == position else {
                if let previous, e.begin < position {
                    throw fail(
                        "tensors '\(previous.name)' and '\(e.name)' overlap (bytes \(previous.begin)..<\(previous.end) and \(e.begin)..<\(e.end)): the data section must hold the tensors back to back"
                    )
                }
                throw fail(
                    "tensor '\(e.name)' begins at byte \(e.begin) of the data section, but the tensors before it end at \(position): a gap (the data section must hold the tensors back to back)"
                )
            }
            position = e.end
            previous = e
        }
        guard position == dataSize else {
            throw fail(
                "the tensors end at byte \(position) of the data section, but it holds \(dataSize) bytes: "
                    + (position < dataSize ? "\(dataSize - position) trailing bytes (a padded or corrupt file)" : "truncated file"))
        }
        self.entries = entries
        self.metadata = metadata
    }

    /// Tensor names, sorted.
    public var names: [String] { entries.keys.sorted() }

    public func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else {
            let close = names.filter { $0.hasSuffix(name.split(separator: ".").last.map(String.init) ?? name) }.prefix(3)
            throw FormatError(path: path, "no tensor '\(name)'" + (close.isEmpty ? "" : "; similar: " + close.joined(separator: ", ")))
        }
        return e
    }

    /// The tensor as stored. F32, F64, I32, I64, U8 and BOOL borrow the mapped pages when aligned;
    /// F16 and BF16 come as raw 2-byte values (use `float32(_:)` to widen).
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        let dtype: DType
        switch e.fileDType {
        case "F32": dtype = .float32
        case "F64": dtype = .float64
        case "I32": dtype = .int32
        case "I64": dtype = .int64
        case "U8": dtype = .uint8
        case "BOOL": dtype = .bool
        case "F16": dtype = .float16
        case "BF16": dtype = .bfloat16
        default: throw FormatError(path: path, "tensor '\(name)' has dtype \(e.fileDType), which Menagerie does not read")
        }
        let p = file.bytes + dataStart + e.begin
        if Int(bitPattern: p) % dtype.size == 0 {
            let storage = TensorStorage(borrowing: UnsafeMutableRawPointer(mutating: p), byteCount: e.end - e.begin, owner: file)
            return try Tensor(dtype: dtype, shape: e.shape, storage: storage)
        }
        var t = Tensor(zeros: dtype, shape: e.shape)
        t.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: p, count: e.end - e.begin)) }
        return t
    }

    /// Calls `body` with the tensor's bytes exactly as stored (any dtype of the format).
    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let e = try entry(name)
        return try withExtendedLifetime(file) { try body(UnsafeRawBufferPointer(start: file.bytes + dataStart + e.begin, count: e.end - e.begin)) }
    }

    /// The tensor as float32: F32 as stored (no copy when aligned), F16, BF16 and F64 converted.
    public func float32(_ name: String) throws -> Tensor {
        let t = try tensor(name)
        return try t.converted(to: .float32)
    }

    /// Checks that `name` exists with `shape`; the error names both shapes.
    public func float32(_ name: String, shape: [Int]) throws -> Tensor {
        let e = try entry(name)
        guard e.shape == shape else {
            throw FormatError(path: path, "tensor '\(name)' has shape \(e.shape), expected \(shape) from the model's config")
        }
        return try float32(name)
    }
}

/// Writing safetensors files.
public enum SafeTensors {
    /// Encodes tensors (F32, F64, I32, I64, U8, BOOL, F16, BF16) with optional string metadata.
    /// The header is padded with spaces so that the data starts on an 8-byte boundary.
    public static func encode(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:]) throws -> Data {
        var header: [String: JSONValue] = [:]
        if !metadata.isEmpty { header["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        var offset = 0
        for (name, t) in tensors {
            guard header[name] == nil, name != "__metadata__" else { throw FormatError(path: "<safetensors>", "duplicate tensor name '\(name)'") }
            let dtype: String
            switch t.dtype {
            case .float32: dtype = "F32"
            case .float64: dtype = "F64"
            case .int32: dtype = "I32"
            case .int64: dtype = "I64"
            case .uint8: dtype = "U8"
            case .bool: dtype = "BOOL"
            case .float16: dtype = "F16"
            case .bfloat16: dtype = "BF16"
            }
            header[name] = [
                "dtype": .string(dtype), "shape": .array(t.shape.map { .number(Double($0)) }),
                "data_offsets": [.number(Double(offset)), .number(Double(offset + t.byteCount))],
            ]
            offset += t.byteCount
        }
        var text = JSONValue.object(header).compactText
        text += String(repeating: " ", count: (8 - (8 + text.utf8.count) % 8) % 8)
        var data = Data(capacity: 8 + text.utf8.count + offset)
        withUnsafeBytes(of: UInt64(text.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(text.utf8))
        for (_, t) in tensors { t.withUnsafeBytes { data.append(contentsOf: $0) } }
        return data
    }

    /// Writes atomically (temp file + rename).
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:], to path: String) throws {
        try AtomicFile.write(try encode(tensors, metadata: metadata), to: path)
    }

    /// One tensor to stream: its safetensors dtype name ("F32", "I16", …), shape and byte count.
    public struct StreamEntry: Sendable {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        public let byteCount: Int
        public init(name: String, dtype: String, shape: [Int], byteCount: Int) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.byteCount = byteCount
        }
    }

    /// Writes `entries` atomically, asking `bytes(i)` for each tensor's contiguous bytes (any tensor
    /// whose byte count is the entry's) only when it is written: one tensor in memory at a time.
    public static func stream(
        _ entries: [StreamEntry], metadata: [String: String] = [:], to path: String,
        bytes: (Int) throws -> Tensor
    ) throws {
        var header: [String: JSONValue] = [:]
        if !metadata.isEmpty { header["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        var offset = 0
        for e in entries {
            guard header[e.name] == nil, e.name != "__metadata__" else { throw FormatError(path: path, "duplicate tensor name '\(e.name)'") }
            guard SafeTensorsFile.dtypeSizes[e.dtype] != nil else { throw FormatError(path: path, "unknown safetensors dtype '\(e.dtype)'") }
            header[e.name] = [
                "dtype": .string(e.dtype), "shape": .array(e.shape.map { .number(Double($0)) }),
                "data_offsets": [.number(Double(offset)), .number(Double(offset + e.byteCount))],
            ]
            offset += e.byteCount
        }
        var text = JSONValue.object(header).compactText
        text += String(repeating: " ", count: (8 - (8 + text.utf8.count) % 8) % 8)
        try AtomicFile.stream(to: path) { write in
            try withUnsafeBytes(of: UInt64(text.utf8.count).littleEndian) { try write($0) }
            try Array(text.utf8).withUnsafeBytes { try write($0) }
            for (i, e) in entries.enumerated() {
                let t = try bytes(i)
                guard t.byteCount == e.byteCount else { throw FormatError(path: path, "tensor '\(e.name)' has \(t.byteCount) bytes, \(e.byteCount) expected") }
                try t.withUnsafeBytes { try write($0) }
            }
        }
    }
}
