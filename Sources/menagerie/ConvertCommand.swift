import ArgumentParser
import Formats
import Foundation
import MenagerieHost
import Tensors

/// `menagerie convert IN OUT`: a PyTorch checkpoint, pickle or safetensors file to safetensors, or
/// a model folder to a folder whose weights are safetensors.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert weights to safetensors: a file to OUT.safetensors, or a model folder to a new folder.",
        discussion: """
            A file: the state dict (under "state_dict" or "model" when wrapped so, "module." dropped; --key picks
            another) is written to OUT.safetensors. A folder: every .bin/.pt/.pth weights file becomes .safetensors
            (pytorch_model*.bin → model*.safetensors, open_clip_pytorch_model.bin → open_clip_model.safetensors,
            the .bin index → model.safetensors.index.json), other files are copied. Files are written atomically;
            a folder is assembled beside OUT and renamed into place.
            """)

    @Argument(help: "A weights file (.pt, .pth, .bin, .ckpt, .pkl, .safetensors) or a model folder.")
    var input: String

    @Argument(help: "OUT.safetensors, or a folder that does not exist yet.")
    var output: String

    @Option(name: .long, help: "The dotted key of the state dict in a PyTorch checkpoint (e.g. 'ema' or 'model.backbone').")
    var key: String?

    @Option(name: .long, help: "Store floating-point tensors as f32, f16 or bf16 (integers and bools keep their type).")
    var dtype: String?

    func run() throws {
        var target: DType?
        if let dtype {
            guard let d = DType(name: dtype), [.float32, .float16, .bfloat16].contains(d) else {
                throw HostError(.usage, "--dtype '\(dtype)' is not one of f32, f16, bf16")
            }
            target = d
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: input, isDirectory: &isDir) else { throw HostError(.usage, "\(input) does not exist") }
        if isDir.boolValue {
            try convertFolder(target)
        } else {
            guard output.hasSuffix(".safetensors") else { throw HostError(.usage, "the output must be a .safetensors file (got \(output))") }
            let (count, bytes) = try ConvertCommand.convert(input, to: output, key: key, dtype: target)
            print("wrote \(output): \(count) tensors, \(Limits.formatBytes(bytes))")
        }
    }

    /// Writes the state dict of `file` to `out`; returns the tensor count and data bytes.
    static func convert(_ file: String, to out: String, key: String?, dtype target: DType?) throws -> (Int, Int) {
        let w = try WeightsFile(path: file)
        let names = try w.stateDict(key: key)
        let byName = Dictionary(uniqueKeysWithValues: w.items.map { ($0.name, $0) })
        let floats: Set<String> = ["f64", "f32", "f16", "bf16"]
        var entries: [SafeTensors.StreamEntry] = [], sources: [(full: String, convert: Bool)] = []
        for name in names.keys.sorted() {
            let item = byName[names[name]!]!
            let count = item.shape.reduce(1, *)
            if let target, floats.contains(item.dtype), item.dtype != target.name {
                entries.append(.init(name: name, dtype: safetensorsName(target.name), shape: item.shape, byteCount: count * target.size))
                sources.append((item.name, true))
            } else {
                entries.append(.init(name: name, dtype: safetensorsName(item.dtype), shape: item.shape, byteCount: item.bytes))
                sources.append((item.name, false))
            }
        }
        do {
            try SafeTensors.stream(entries, metadata: ["format": "pt"], to: out) { i in
                let s = sources[i]
                if s.convert { return try w.tensor(s.full).converted(to: target!) }
                return try w.raw(s.full)
            }
        } catch let e as FormatError { throw HostError(.failed, "\(e)") }
        return (entries.count, entries.reduce(0) { $0 + $1.byteCount })
    }

    static func safetensorsName(_ dtype: String) -> String { dtype == "bool" ? "BOOL" : dtype.uppercased() }

    /// The safetensors name of a torch weights file in a model folder, or nil when it is not one.
    static func convertedName(_ name: String) -> String? {
        let ext = (name as NSString).pathExtension.lowercased()
        guard ["bin", "pt", "pth", "ckpt"].contains(ext) else { return nil }
        var stem = (name as NSString).deletingPathExtension
        if stem.hasPrefix("open_clip_pytorch_model") {
            stem = "open_clip_model" + stem.dropFirst("open_clip_pytorch_model".count)
        } else if stem.hasPrefix("pytorch_model") {
            stem = "model" + stem.dropFirst("pytorch_model".count)
        }
        return stem + ".safetensors"
    }

    func convertFolder(_ target: DType?) throws {
        guard !FileManager.default.fileExists(atPath: output) else { throw HostError(.usage, "\(output) exists: choose a new folder (nothing is overwritten)") }
        let files = try FileManager.default.contentsOfDirectory(atPath: input).sorted()
        let staging =
            (output as NSString).deletingLastPathComponent.isEmpty
            ? ".\(output).tmp-\(getpid())"
            : (output as NSString).deletingLastPathComponent + "/." + (output as NSString).lastPathComponent + ".tmp-\(getpid())"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        var converted: [String] = [], copied = 0
        do {
            for f in files where RegularFile.isRegular(input + "/" + f) {
                if f == "pytorch_model.bin.index.json" {
                    try convertIndex(input + "/" + f, to: staging + "/model.safetensors.index.json")
                } else if let name = ConvertCommand.convertedName(f) {
                    guard !files.contains(name) else { continue } // the folder already has it
                    _ = try ConvertCommand.convert(input + "/" + f, to: staging + "/" + name, key: key, dtype: target)
                    converted.append("\(f) → \(name)")
                } else {
                    try FileManager.default.copyItem(atPath: input + "/" + f, toPath: staging + "/" + f)
                    copied += 1
                }
            }
            guard !converted.isEmpty else { throw HostError(.usage, "\(input) holds no .bin, .pt or .pth weights to convert") }
            guard rename(staging, output) == 0 else { throw HostError(.failed, "cannot move \(staging) to \(output): \(String(cString: strerror(errno)))") }
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        for c in converted { print("converted \(c)") }
        print("wrote \(output): \(converted.count) converted, \(copied) copied")
    }

    /// pytorch_model.bin.index.json → model.safetensors.index.json, its shard names renamed.
    func convertIndex(_ path: String, to out: String) throws {
        do {
            var index = try JSONValue.parse(try RegularFile.text(path, limit: 256 << 20), source: path)
            guard case .object(var top) = index, let map = top["weight_map"]?.objectValue else {
                throw HostError(.failed, "\(path) has no \"weight_map\" object")
            }
            top["weight_map"] = .object(
                try map.mapValues {
                    guard let s = $0.stringValue, let n = ConvertCommand.convertedName(s) else {
                        throw HostError(.failed, "\(path): weight_map entry \($0.compactText) is not a .bin file name")
                    }
                    return .string(n)
                })
            index = .object(top)
            try AtomicFile.write(index.prettyText + "\n", to: out)
        } catch let e as FormatError { throw HostError(.failed, "\(e)") }
    }
}
