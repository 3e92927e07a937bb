import Foundation
import Synchronization
import Tensors

/// A PyTorch checkpoint (`.pt`, `.pth`, `.bin`, `.ckpt`: torch's zip format, torch ≥ 1.6) or a plain
/// pickle (`.pkl`) of containers and numpy arrays, read without running any of its code.
///
/// A torch archive holds `<archive>/data.pkl` (the pickled object), `<archive>/data/<key>` (one
/// record per storage), `<archive>/byteorder` and `<archive>/version`. The pickle is read by the
/// restricted `Unpickler`; tensors are strided views of the memory-mapped storages (two tensors of
/// one storage share it), made contiguous only when read (`tensor(_:)`). A storage's CRC-32 is
/// checked the first time one of its tensors is read.
///
/// Tensors are named by their path in the pickled object: dict keys and list indices joined by
/// '.' (`{"model": {"blocks": [{"w": t}]}}` → `model.blocks.0.w`); a file holding one bare tensor
/// names it `tensor`.
/// Sendable: immutable after init (the mapping is read-only) but for `verified`, a Mutex.
public final class TorchFile: Sendable {
    public let path: String
    /// Every tensor and array, by full name, in the order the pickle holds them.
    public let names: [String]
    public let tensors: [String: StoredTensor]
    /// The key the state dict is wrapped in ("model", "state_dict") by `stateDictRule`, or nil.
    public let wrapper: String?
    /// Whether every name under the wrapper starts with "module." (saved from DataParallel).
    public let modulePrefixed: Bool
    /// "torch" for a zip checkpoint, "pickle" for a plain pickle.
    public let format: String
    let storages: [StorageBytes]
    let file: MappedFile
    let archive: ZipArchive?
    /// Storages whose CRC was checked (once, on first read).
    private let verified = Mutex<Set<Int>>([])

    /// Nesting deeper than this (or a cycle) is refused while naming the tensors.
    public static let maxNesting = 64
    /// At most this many values are visited while naming (a pickle whose shared references
    /// multiply its paths is refused instead of walked for ever).
    public static let maxVisits = 1 << 22

    /// `objectClasses`: classes ("module.Name", e.g. "sklearn.cluster._kmeans.KMeans") whose
    /// instances in a plain pickle are read as their state dict — its arrays are named by the dict's
    /// keys, as if the object were that dict. No code of the class runs; other classes are refused.
    public init(path: String, objectClasses: Set<String> = []) throws {
        let file = try MappedFile(path: path)
        self.file = file
        self.path = path
        let all = UnsafeRawBufferPointer(start: file.bytes, count: file.count)
        var result: PickleResult
        if ZipArchive.looksLikeZip(all) {
            let archive = try ZipArchive(bytes: all, path: path)
            self.archive = archive
            result = try TorchFile.unpickleArchive(archive, all, path: path)
            format = "torch"
        } else if all.count >= 2, all[0] == 0x80, all.count > 2, all[2] == 0x8A, TorchFile.isLegacyTorch(all) {
            throw FormatError(
                path: path,
                "is a legacy PyTorch checkpoint (torch < 1.6, or saved with _use_new_zipfile_serialization=False), which is not read: "
                    + "re-save it with a recent torch: torch.save(torch.load(f, weights_only=True), 'new.pt')")
        } else if all.count >= 2, all[0] == 0x80 {
            archive = nil
            var u = Unpickler(bytes: all, base: 0, path: path, flavor: .plain, objectClasses: objectClasses)
            result = try u.run()
            format = "pickle"
        } else if all.count > 262, String(decoding: UnsafeRawBufferPointer(rebasing: all[257..<262]), as: UTF8.self) == "ustar" {
            throw FormatError(
                path: path,
                "is a tar archive (torch's oldest checkpoint format), which is not read: re-save it with a recent torch: torch.save(torch.load(f), 'new.pt')")
        } else {
            throw FormatError(path: path, "is neither a PyTorch zip checkpoint nor a pickle (protocol 2–5): not a checkpoint, or corrupt")
        }
        storages = result.storages
        var found: [(String, Int)] = []
        var visits = 0
        try TorchFile.walk(result.root, "", depth: 0, result, into: &found, visits: &visits, path: path)
        var tensors: [String: StoredTensor] = [:]
        var names: [String] = []
        for (name, index) in found {
            guard let t = result.tensors[index] else {
                throw FormatError(path: path, "numpy array '\(name)' has no data (its BUILD is missing): corrupt pickle")
            }
            guard tensors[name] == nil else {
                throw FormatError(path: path, "two tensors are named '\(name)' (keys that contain '.' collide with nested keys)")
            }
            tensors[name] = t
            names.append(name)
        }
        self.tensors = tensors
        self.names = names
        // The state-dict rule (Docs/checkpoints.md): {"state_dict": …} or {"model": …} when the root
        // is a dict holding such a dict, then a "module." prefix shared by every name is dropped.
        var wrapper: String?
        if case .dict(let d) = result.root {
            for key in ["state_dict", "model"] {
                if let i = result.dicts[d].index[.string(key)], case .dict = result.dicts[d].values[i] {
                    wrapper = key
                    break
                }
            }
        }
        self.wrapper = wrapper
        let inner = names.filter { wrapper == nil || $0.hasPrefix(wrapper! + ".") }
        modulePrefixed = !inner.isEmpty && inner.allSatisfy { $0.hasPrefix((wrapper.map { $0 + "." } ?? "") + "module.") }
    }

    static func isLegacyTorch(_ all: UnsafeRawBufferPointer) -> Bool {
        // torch's legacy files start with a pickled magic number 0x1950a86a20f9469cfc6c (LONG1).
        let magic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
        return all.count >= magic.count && zip(all, magic).allSatisfy { $0 == $1 }
    }

    static func unpickleArchive(_ archive: ZipArchive, _ all: UnsafeRawBufferPointer, path: String) throws -> PickleResult {
        guard let pickle = archive.names.first(where: { $0.hasSuffix("/data.pkl") && !$0.dropLast(9).contains("/") }) else {
            let hint =
                archive.names.contains { $0.hasSuffix("constants.pkl") }
                ? " (a TorchScript archive: save the module's state_dict() with torch.save instead)" : ""
            throw FormatError(path: path, "is a zip archive without <name>/data.pkl: not a PyTorch checkpoint" + hint)
        }
        let prefix = String(pickle.dropLast("data.pkl".count))
        let pickleRecord = archive.records[pickle]!
        try archive.verify(pickleRecord, in: all)
        if let order = archive.records[prefix + "byteorder"] {
            try archive.verify(order, in: all)
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: all[order.offset..<(order.offset + order.count)]), as: UTF8.self)
            guard text == "little" else {
                throw FormatError(
                    path: path,
                    "stores its tensors \(text == "big" ? "big-endian" : "in byte order '\(text.prefix(20))'"); only little-endian checkpoints are read: re-save it on a little-endian machine"
                )
            }
        }
        if let version = archive.records[prefix + "version"] ?? archive.records[prefix + ".data/version"] {
            try archive.verify(version, in: all)
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: all[version.offset..<(version.offset + min(version.count, 32))]), as: UTF8.self)
            guard let v = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), (1...10).contains(v) else {
                throw FormatError(path: path, "has archive format version '\(text.trimmingCharacters(in: .whitespacesAndNewlines))'; versions 1–10 are read")
            }
        }
        var u = Unpickler(
            bytes: UnsafeRawBufferPointer(rebasing: all[pickleRecord.offset..<(pickleRecord.offset + pickleRecord.count)]),
            base: pickleRecord.offset, path: path, flavor: .torch
        ) { key, dtype, numel in
            guard !key.contains("/"), let record = archive.records[prefix + "data/" + key] else {
                throw FormatError(path: path, "storage '\(key)' has no record \(prefix)data/\(key): truncated or corrupt checkpoint")
            }
            guard numel * dtype.size <= record.count else {
                throw FormatError(
                    path: path,
                    "storage '\(key)' should hold \(numel) elements of \(dtype.rawValue) (\(numel * dtype.size) bytes) but its record has \(record.count) bytes: truncated or corrupt checkpoint"
                )
            }
            return StorageBytes(source: .mapped(offset: record.offset, record: record.name), count: record.count, key: key)
        }
        return try u.run()
    }

    /// Collects (name, tensor index) pairs below `value`.
    static func walk(
        _ value: PickleValue, _ prefix: String, depth: Int, _ r: PickleResult, into found: inout [(String, Int)],
        visits: inout Int, path: String
    ) throws {
        visits += 1
        guard visits <= maxVisits else {
            throw FormatError(path: path, "holds more than \(maxVisits) values once shared references are followed: refused as hostile")
        }
        guard depth <= maxNesting else {
            throw FormatError(path: path, "nests containers more than \(maxNesting) deep (or in a cycle) at '\(prefix.prefix(200))': refused")
        }
        func join(_ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }
        switch value {
        case .tensor(let i): found.append((prefix.isEmpty ? "tensor" : prefix, i)) // torch.save(a_tensor): "tensor"
        case .dict(let d):
            let dict = r.dicts[d]
            for (k, v) in zip(dict.keys, dict.values) {
                let key: String
                switch k {
                case .string(let s): key = s
                case .int(let n): key = String(n)
                default: continue // keys that cannot name a tensor
                }
                guard key.utf8.count <= 4096 else { throw FormatError(path: path, "a key of \(key.utf8.count) bytes: names are at most 4096") }
                try walk(v, join(key), depth: depth + 1, r, into: &found, visits: &visits, path: path)
            }
        case .list(let l):
            for (i, v) in r.lists[l].enumerated() { try walk(v, join(String(i)), depth: depth + 1, r, into: &found, visits: &visits, path: path) }
        case .tuple(let t):
            for (i, v) in r.tuples[t].enumerated() { try walk(v, join(String(i)), depth: depth + 1, r, into: &found, visits: &visits, path: path) }
        case .object(let o):
            if let state = r.objects[o].state { try walk(state, prefix, depth: depth + 1, r, into: &found, visits: &visits, path: path) }
        default: break
        }
    }

    // MARK: the state dict

    /// The state dict's names (wrapper and "module." removed) mapped to full names. `key` (a dotted
    /// path such as "ema" or "model.backbone") overrides the wrapper of the rule.
    public func stateDict(key: String? = nil) throws -> [String: String] {
        let base = key ?? wrapper
        let under = base.map { $0 + "." } ?? ""
        var map: [String: String] = [:]
        for n in names where n.hasPrefix(under) { map[String(n.dropFirst(under.count))] = n }
        if let key, map.isEmpty {
            let top = Set(names.map { String($0.split(separator: ".").first ?? "") }).sorted().prefix(12)
            throw FormatError(path: path, "holds no tensors under '\(key)'; its top-level keys with tensors: \(top.joined(separator: ", "))")
        }
        if !map.isEmpty, map.keys.allSatisfy({ $0.hasPrefix("module.") }) {
            map = Dictionary(uniqueKeysWithValues: map.map { (String($0.key.dropFirst("module.".count)), $0.value) })
        }
        return map
    }

    // MARK: reading tensors

    func entry(_ name: String) throws -> StoredTensor {
        guard let t = tensors[name] else {
            let close = names.filter { $0.hasSuffix(name.split(separator: ".").last.map(String.init) ?? name) }.prefix(3)
            throw FormatError(path: path, "no tensor '\(name)'" + (close.isEmpty ? "" : "; similar: " + close.joined(separator: ", ")))
        }
        return t
    }

    /// Calls `body` with the storage's bytes, its CRC-32 checked on first use.
    func withStorage<R>(_ index: Int, _ body: (UnsafeRawPointer) throws -> R) throws -> R {
        let s = storages[index]
        switch s.source {
        case .owned(let data):
            return try data.withUnsafeBytes { try body($0.baseAddress ?? file.bytes) }
        case .mapped(let offset, let record):
            if let record, let archive {
                let file = file
                try verified.withLock { verified in
                    if !verified.contains(index) {
                        try archive.verify(archive.records[record]!, in: UnsafeRawBufferPointer(start: file.bytes, count: file.count))
                        verified.insert(index)
                    }
                }
            }
            return try body(file.bytes + offset)
        }
    }

    /// The tensor's elements, contiguous, in its stored type when Menagerie has it (i16 and i8 are
    /// widened to i32). A contiguous, aligned tensor borrows the mapped pages (no copy); a strided
    /// view is gathered into new memory.
    public func tensor(_ name: String) throws -> Tensor {
        let t = try entry(name)
        let raw = try contiguous(t, name: name)
        switch t.dtype {
        case .i16, .i8:
            try Limits.allocation(count: t.count, elementSize: 4, what: "tensor '\(name)' widened to i32", source: path)
            var out = Tensor(zeros: .int32, shape: t.shape)
            raw.withUnsafeBytes { src in
                out.withUnsafeMutableBytes { dst in
                    let d = dst.bindMemory(to: Int32.self)
                    for i in 0..<t.count {
                        d[i] = t.dtype == .i16 ? Int32(src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)) : Int32(Int8(bitPattern: src[i]))
                    }
                }
            }
            return out
        default:
            return try Tensor(dtype: TorchFile.tensorDType(t.dtype)!, shape: t.shape, storage: raw.storage)
        }
    }

    /// The tensor as float32 (f16, bf16, f64 and integers converted).
    public func float32(_ name: String) throws -> Tensor { try tensor(name).converted(to: .float32) }

    static func tensorDType(_ d: StoredDType) -> DType? {
        switch d {
        case .f64: .float64
        case .f32: .float32
        case .f16: .float16
        case .bf16: .bfloat16
        case .i64: .int64
        case .i32: .int32
        case .u8: .uint8
        case .bool: .bool
        case .i16, .i8: nil
        }
    }

    /// The tensor's bytes, contiguous and exactly as stored, in a tensor of its dtype (u8 of
    /// count × size bytes for i16 and i8, which Menagerie's tensors do not have).
    public func rawTensor(_ name: String) throws -> Tensor { try contiguous(try entry(name), name: name) }

    func contiguous(_ t: StoredTensor, name: String) throws -> Tensor {
        let dtype = TorchFile.tensorDType(t.dtype) ?? .uint8
        let shape = TorchFile.tensorDType(t.dtype) == nil ? [t.count * t.dtype.size] : t.shape
        let bytes = t.count * t.dtype.size
        // An empty tensor's offset is not bounded by its storage: it reads nothing.
        guard t.count > 0 else { return Tensor(zeros: dtype, shape: shape) }
        return try withStorage(t.storage) { storage in
            let base = storage + t.offset * t.dtype.size
            if case .mapped = storages[t.storage].source, t.isContiguous, Int(bitPattern: base) % t.dtype.size == 0 {
                return try Tensor(
                    dtype: dtype, shape: shape, storage: TensorStorage(borrowing: UnsafeMutableRawPointer(mutating: base), byteCount: bytes, owner: file))
            }
            try Limits.allocation(count: t.count, elementSize: t.dtype.size, what: "tensor '\(name)'", source: path)
            var out = Tensor(zeros: dtype, shape: shape)
            out.withUnsafeMutableBytes { dst in TorchFile.gather(t, from: base, to: dst.baseAddress!) }
            return out
        }
    }

    /// Copies a strided view into row-major order.
    static func gather(_ t: StoredTensor, from src: UnsafeRawPointer, to dst: UnsafeMutableRawPointer) {
        guard t.count > 0 else { return }
        let size = t.dtype.size, rank = t.shape.count
        guard rank > 0 else {
            dst.copyMemory(from: src, byteCount: size)
            return
        }
        let inner = t.shape[rank - 1], innerStride = t.strides[rank - 1] * size
        var index = [Int](repeating: 0, count: rank)
        var out = dst
        var rows = t.count / inner
        while rows > 0 {
            var offset = 0
            for k in 0..<(rank - 1) { offset += index[k] * t.strides[k] }
            var p = src + offset * size
            for _ in 0..<inner {
                out.copyMemory(from: p, byteCount: size)
                out += size
                p += innerStride
            }
            rows -= 1
            var k = rank - 2
            while k >= 0 {
                index[k] += 1
                if index[k] < t.shape[k] { break }
                index[k] = 0
                k -= 1
            }
        }
    }
}
