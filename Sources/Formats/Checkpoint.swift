import Foundation
import Tensors

/// The weights of a model, in whichever format they came: a `.safetensors` file, a sharded
/// checkpoint (`model.safetensors.index.json` or `pytorch_model.bin.index.json`, whose
/// `weight_map` names each tensor's shard), a PyTorch checkpoint (`.pt`, `.pth`, `.bin`, `.ckpt`)
/// or a plain pickle of arrays. Files are memory-mapped, shards on first use.
///
/// In a PyTorch checkpoint the state dict is found by the rule of `TorchFile`
/// (Docs/checkpoints.md): the dict under "state_dict" or "model" when the file wraps it so,
/// without the "module." prefix DataParallel adds.
// @unchecked: immutable after init; its shards are read-only memory maps.
public final class Checkpoint: @unchecked Sendable {
    /// One tensor's name, shape and stored type (safetensors' names: "F32", "BF16", …).
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let dtype: String
    }

    enum Shard {
        case safetensors(SafeTensorsFile)
        case torch(TorchFile, names: [String: String])
    }

    public let path: String
    /// Tensor names, sorted.
    public let names: [String]
    let nameSet: Set<String>
    let weightMap: [String: String]
    let directory: String
    private var shards: [String: Shard] = [:]
    private let lock = NSLock()

    /// The weight files a timm or Hugging Face folder may hold, in the order they are preferred.
    public static let huggingFaceFiles = [
        "model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
        "pytorch_model.bin", "model.pt", "model.pth", "model.bin",
    ]
    /// The weight files of an open_clip folder (Hugging Face's open_clip layout), in order of preference.
    public static let openCLIPFiles = [
        "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_model.pt",
        "open_clip_model.pth", "open_clip_model.bin",
    ]
    /// The extensions read as PyTorch checkpoints or pickles.
    public static let torchExtensions: Set<String> = ["pt", "pth", "bin", "ckpt", "pkl", "pickle"]

    /// The first of `files` that exists in `folder` (as anything but a folder: a FIFO of that name
    /// is found, and refused with its own message when opened), as a path.
    public static func weightsFile(in folder: String, _ files: [String] = huggingFaceFiles) -> String? {
        files.lazy.map { folder + "/" + $0 }.first { path in
            var st = stat()
            return stat(path, &st) == 0 && st.st_mode & S_IFMT != S_IFDIR
        }
    }

    /// `path` is a weights file, an index `.json`, or a folder holding one of `huggingFaceFiles`.
    public init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw FormatError(path: path, "does not exist") }
        var file = path
        if isDir.boolValue {
            guard let found = Checkpoint.weightsFile(in: path) else {
                throw FormatError(path: path, "holds no weights: looked for " + Checkpoint.huggingFaceFiles.joined(separator: ", "))
            }
            file = found
        }
        self.path = file
        self.directory = (file as NSString).deletingLastPathComponent
        if file.hasSuffix(".json") {
            guard let text = try? RegularFile.text(file, limit: 256 << 20) else { throw FormatError(path: file, "cannot read") }
            let index: JSONValue
            do { index = try JSONValue.parse(text, source: file) } catch { throw FormatError(path: file, "\(error)") }
            guard let map = index["weight_map"]?.objectValue else { throw FormatError(path: file, "has no \"weight_map\" object") }
            var m: [String: String] = [:]
            for (k, v) in map {
                guard let shard = v.stringValue, !shard.contains("/"), !shard.isEmpty else {
                    throw FormatError(path: file, "weight_map entry '\(k)' is not a file name")
                }
                m[k] = shard
            }
            weightMap = m
        } else {
            let name = (file as NSString).lastPathComponent
            let single = try Checkpoint.open(file)
            shards[name] = single
            weightMap = Dictionary(uniqueKeysWithValues: Checkpoint.names(of: single).map { ($0, name) })
        }
        names = weightMap.keys.sorted()
        nameSet = Set(names)
    }

    /// Opens one file by its extension (safetensors, or a torch checkpoint / pickle).
    static func open(_ file: String) throws -> Shard {
        let ext = (file as NSString).pathExtension.lowercased()
        if torchExtensions.contains(ext) {
            let torch = try TorchFile(path: file)
            return .torch(torch, names: try torch.stateDict())
        }
        return .safetensors(try SafeTensorsFile(path: file))
    }

    static func names(of shard: Shard) -> [String] {
        switch shard {
        case .safetensors(let f): f.names
        case .torch(_, let names): Array(names.keys)
        }
    }

    public func contains(_ name: String) -> Bool { nameSet.contains(name) }

    func shard(for name: String) throws -> Shard {
        guard let file = weightMap[name] else { throw FormatError(path: path, "no tensor '\(name)' in the checkpoint") }
        lock.lock()
        defer { lock.unlock() }
        if let s = shards[file] { return s }
        let s = try Checkpoint.open(directory + "/" + file)
        shards[file] = s
        return s
    }

    public func entry(_ name: String) throws -> Entry {
        switch try shard(for: name) {
        case .safetensors(let f):
            let e = try f.entry(name)
            return Entry(name: name, shape: e.shape, dtype: e.fileDType)
        case .torch(let f, let map):
            guard let full = map[name], let t = f.tensors[full] else { throw FormatError(path: f.path, "no tensor '\(name)'") }
            return Entry(name: name, shape: t.shape, dtype: t.dtype.safetensorsName)
        }
    }

    /// The tensor as stored (see `SafeTensorsFile.tensor` and `TorchFile.tensor`).
    public func tensor(_ name: String) throws -> Tensor {
        switch try shard(for: name) {
        case .safetensors(let f): return try f.tensor(name)
        case .torch(let f, let map):
            guard let full = map[name] else { throw FormatError(path: f.path, "no tensor '\(name)'") }
            return try f.tensor(full)
        }
    }

    public func float32(_ name: String) throws -> Tensor { try tensor(name).converted(to: .float32) }

    /// Checks that `name` exists with `shape`; the error names both shapes.
    public func float32(_ name: String, shape: [Int]) throws -> Tensor {
        let e = try entry(name)
        guard e.shape == shape else {
            throw FormatError(path: path, "tensor '\(name)' has shape \(e.shape), expected \(shape) from the model's config")
        }
        return try float32(name)
    }
}

/// The name `Checkpoint` had when it read safetensors only (kept: it is SDK API).
public typealias SafeTensorsCheckpoint = Checkpoint
