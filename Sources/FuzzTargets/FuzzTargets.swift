import DatasetAdapters
import FasterTAD
import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Text

/// The parsers of files that come from outside, each as a function of the file's bytes: what the
/// libFuzzer driver (Fuzz/, `make fuzz`) calls, and what `FuzzReplayTests` runs over the committed
/// corpora (Fuzz/Corpus/<target>/) in every `make test`. A target may throw (a refused file is the
/// expected outcome); it must never trap, hang or allocate without bound.
public enum FuzzTargets {
    /// Target names, in the order `make fuzz` runs them.
    public static let names = [
        "json", "npy", "safetensors", "pickle", "torch", "png", "tiff", "jpeg", "tokenizer", "configs", "metadata", "idx", "activitynet", "yaml",
        "sentencepiece",
    ]

    /// Runs `target` on `data`; errors thrown by the parser are the expected outcome and ignored.
    /// Returns false for an unknown target.
    @discardableResult
    public static func run(_ target: String, _ data: Data) -> Bool {
        do {
            switch target {
            case "json": try json(data)
            case "npy": try npy(data)
            case "safetensors": try safetensors(data)
            case "pickle": try pickled(data, suffix: ".pkl")
            case "torch": try pickled(data, suffix: ".pt")
            case "png": try png(data)
            case "tiff": try tiff(data)
            case "jpeg": try jpeg(data)
            case "tokenizer": try tokenizer(data)
            case "configs": try configs(data)
            case "metadata": try metadata(data)
            case "idx": try idx(data)
            case "activitynet": try activityNet(data)
            case "yaml": try yaml(data)
            case "sentencepiece": try sentencePiece(data)
            default: return false
            }
        } catch {}
        return true
    }

    /// Smaller limits than a user's (the defaults are the machine's memory and Pillow's 89 Mpx) for
    /// the fuzzing process: it must not spend its time decoding legal but huge images, and
    /// libFuzzer's malloc limit (2 GiB) must only ever catch allocations the limits failed to refuse.
    /// Called by the libFuzzer driver before it starts (not by the replay tests: the environment
    /// is the process's); values already in the environment are kept.
    public static func configureLimits() {
        setenv("MENAGERIE_MAX_PIXELS", "4000000", 0)
        setenv("MENAGERIE_MAX_ALLOCATION", String(256 << 20), 0)
    }

    // MARK: the targets

    static func json(_ data: Data) throws {
        let text = String(decoding: data, as: UTF8.self)
        let value = try JSONValue.parse(text)
        _ = value.compactText
        _ = try JSONValue.parse(text, keyOrderDepth: 2)
    }

    static func npy(_ data: Data) throws {
        let t = try NPY.decode(data)
        _ = NPY.encode(t)
        try withFile(data, suffix: ".npy") { _ = try NPY.read(path: $0) }
    }

    static func safetensors(_ data: Data) throws {
        try withFile(data, suffix: ".safetensors") { path in
            let file = try SafeTensorsFile(path: path)
            for name in file.names {
                let t = try? file.tensor(name)
                _ = t?.count
                _ = try? file.float32(name)
            }
        }
    }

    /// A plain pickle (".pkl") or a torch zip checkpoint (".pt"): the restricted unpickler, the zip
    /// reader, the state-dict rule and every tensor read (CRC, strided gather, widening).
    static func pickled(_ data: Data, suffix: String) throws {
        try withFile(data, suffix: suffix) { path in
            let file = try TorchFile(path: path)
            for name in file.names {
                _ = try? file.tensor(name).count
                _ = try? file.rawTensor(name)
            }
            _ = try? file.stateDict()
            _ = try? Checkpoint(path: path).names
        }
    }

    static func png(_ data: Data) throws {
        try withFile(data, suffix: ".png") { path in
            _ = try? PNG.read(path: path)
            _ = try PNG.readSamples(path: path)
        }
    }

    static func tiff(_ data: Data) throws {
        try withFile(data, suffix: ".tif") { path in
            let page = try TIFF.read(path: path)
            _ = try? Image(tensor: page.pixels)
        }
    }

    static func jpeg(_ data: Data) throws {
        try withFile(data, suffix: ".jpg") { _ = try JPEG.read(path: $0) }
    }

    static func tokenizer(_ data: Data) throws {
        try withFile(data, suffix: "tokenizer.json") { path in
            // Whichever tokenizer the file describes: byte-level or SentencePiece-style BPE.
            let tok = try Tokenizers.load(path: path)
            let ids = tok.encode("Hello, world! héllo <|endoftext|> 12 34  \t東京 🌈 <s>")
            _ = tok.decode(ids)
            _ = tok.decode([0, 1, 2, -1, Int32.max, Int32.min], skipSpecial: true)
        }
    }

    /// A SentencePiece `tokenizer.model` (the protobuf reader, the charsmap trie, both encoders), then
    /// encode and decode.
    static func sentencePiece(_ data: Data) throws {
        let tok = try SentencePieceModelTokenizer(bytes: [UInt8](data), path: "fuzz.model")
        let ids = tok.encode("Hello,  wörld!\t東京 🌈 ＡＢＣ 12 <sep> \u{2581}", addSpecial: true)
        _ = tok.decode(ids)
        _ = tok.decode([0, 1, 2, 3, -1, Int32.max, Int32.min], skipSpecial: true)
    }

    /// One JSON file read as a timm config, an open_clip config and a Hugging Face decoder config
    /// (the validation of these belongs to NN).
    static func configs(_ data: Data) throws {
        try withFile(data, suffix: "config.json") { path in
            _ = try? ViTConfig.timm(configPath: path)
            _ = try? OpenCLIPConfig.load(path: path)
            _ = try? DecoderConfig.load(path: path)
        }
    }

    /// A YAML config (the SAM 2 / hydra subset), then read as SAM 2's config.
    static func yaml(_ data: Data) throws {
        let value = try YAML.parse(String(decoding: data, as: UTF8.self), source: "fuzz.yaml")
        _ = try? SAM2Config(json: value, source: "fuzz.yaml")
    }

    /// The metadata document a plugin publishes, decoded and checked as the host does.
    static func metadata(_ data: Data) throws {
        let m = try JSONValue.decode(PluginMetadata.self, from: String(decoding: data, as: UTF8.self))
        _ = m.problems()
    }

    /// MNIST IDX files: the input is `u32 big-endian n`, n bytes of the images file, then the labels
    /// file; the same pair serves as the test split.
    static func idx(_ data: Data) throws {
        let bytes = [UInt8](data)
        guard bytes.count >= 4 else { return }
        let n = min(Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3]), bytes.count - 4)
        let images = Data(bytes[4..<(4 + n)]), labels = Data(bytes[(4 + n)...])
        let dir = scratch + "/idx"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, content) in [
            ("train-images-idx3-ubyte", images), ("t10k-images-idx3-ubyte", images),
            ("train-labels-idx1-ubyte", labels), ("t10k-labels-idx1-ubyte", labels),
        ] {
            try write(content, to: dir + "/" + name)
        }
        let source = try MNISTSource(root: dir, valCount: 1)
        for split in 0..<3 {
            let count = source.count(split: split)
            for i in [0, count / 2, count - 1] where i >= 0 && i < count { _ = try? source.item(split: split, index: i) }
        }
    }

    static func activityNet(_ data: Data) throws {
        try withFile(data, suffix: ".json") { path in
            _ = try? ActivityNet.readGroundTruth(path)
            _ = try? ActivityNet.readPredictions(path)
            _ = try? ActivityNet.readPredictions(path, requireLabels: false)
        }
    }

    // MARK: files

    /// A folder of this process for the inputs of path-based readers (in /dev/shm when it exists).
    static let scratch: String = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let dir = base + "/menagerie-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: FuzzTargets.scratch) }
        return dir
    }()

    static func write(_ data: Data, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FormatError(path: path, "cannot create the fuzz input") }
        defer { close(fd) }
        try data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + done, raw.count - done)
                guard n > 0 else { throw FormatError(path: path, "cannot write the fuzz input") }
                done += n
            }
        }
    }

    static func withFile(_ data: Data, suffix: String, _ body: (String) throws -> Void) throws {
        let path = scratch + "/input" + suffix
        try write(data, to: path)
        try body(path)
    }
}
