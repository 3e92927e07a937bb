/// The kinds of component a plugin can provide, each with its primary operation.
/// `Docs/kinds.md` gives every kind's request and response conventions.
public enum Kind: String, Codable, Sendable, CaseIterable {
    case dataset, backbone, objective, distiller, explainer, segmenter, detector, generator, metric

    /// The operation a kind's components all support; `run COMPONENT` without an operation runs it.
    public var primaryOperation: String {
        switch self {
        case .dataset: "batch"
        case .backbone: "embed"
        case .objective: "loss"
        case .distiller: "distill"
        case .explainer: "explain"
        case .segmenter: "segment"
        case .detector: "detect"
        case .generator: "generate"
        case .metric: "evaluate"
        }
    }
}

/// One tensor an operation reads or writes.
public struct TensorSpec: Codable, Sendable, Equatable {
    public var name: String
    /// Accepted dtypes ("f32", "i64", ...); empty means any.
    public var dtypes: [String]
    /// Shape in words, e.g. "N×C" or "H×W".
    public var shape: String
    public var summary: String
    public var optional: Bool

    public init(_ name: String, dtypes: [String] = [], shape: String = "", summary: String = "", optional: Bool = false) {
        self.name = name
        self.dtypes = dtypes
        self.shape = shape
        self.summary = summary
        self.optional = optional
    }
}

/// One operation of a component.
public struct OperationSpec: Codable, Sendable, Equatable {
    public var name: String
    public var summary: String
    public var inputs: [TensorSpec]
    public var outputs: [TensorSpec]
    /// Present when the operation maps over the files of a folder, each file's outputs independent
    /// of the others: the host can then split a run into shards and resumable chunks, and merge
    /// them (`run --shard I/N --resume`, `menagerie merge`; Docs/scale.md).
    public var sharding: ShardingSpec?

    public init(_ name: String, summary: String, inputs: [TensorSpec] = [], outputs: [TensorSpec] = [], sharding: ShardingSpec? = nil) {
        self.name = name
        self.summary = summary
        self.inputs = inputs
        self.outputs = outputs
        self.sharding = sharding
    }
}

/// How an operation over a folder of files is split and how its outputs merge. The files are
/// the folder's top-level files with one of `extensions`, sorted by name (the order the operation
/// itself reads them in); each chunk of them runs as one call, and the chunks' outputs are joined
/// in that order:
/// - `.npy` tensors along their first axis, `.csv` files row by row (one header), `.txt` and
///   `.jsonl` line by line;
/// - `jsonMaps`: a JSON file whose named top-level member is an object of per-file entries — the
///   entries' text is joined, byte for byte;
/// - `indexed`: files named `<prefix><number>.<ext>` (numbered by position within the call) are
///   renumbered by the chunk's offset; files in subfolders (named per input file) are collected;
/// - in `result`: arrays are concatenated, the `sum` keys added, other values must agree (or are
///   kept per shard).
public struct ShardingSpec: Codable, Sendable, Equatable {
    /// The string option naming the folder (or single file) the operation maps over.
    public var option: String
    /// What the items are: "files" (the default: a folder's files) or "lines" (the non-blank
    /// lines of a text file, `FolderFiles.lines`; each chunk is a file of its lines).
    public var items: String?
    /// The file extensions it reads (lower case, without the dot).
    public var extensions: [String]
    /// An integer option giving the files per forward pass: chunks are a multiple of it, so that a
    /// merged run batches every file exactly as an unsharded run does.
    public var batchOption: String?
    /// Result keys that are counts over the files (added when merging).
    public var sum: [String]?
    public var jsonMaps: [String: String]?
    public var indexed: [String]?
    /// Option values that cannot be split, with the reason (e.g. `{"output=safetensors": "…"}`).
    public var refuses: [String: String]?

    public init(
        option: String, items: String? = nil, extensions: [String], batchOption: String? = nil, sum: [String]? = nil, jsonMaps: [String: String]? = nil,
        indexed: [String]? = nil, refuses: [String: String]? = nil
    ) {
        self.option = option
        self.items = items
        self.extensions = extensions
        self.batchOption = batchOption
        self.sum = sum
        self.jsonMaps = jsonMaps
        self.indexed = indexed
        self.refuses = refuses
    }

    enum CodingKeys: String, CodingKey {
        case option, items, extensions, sum, indexed, refuses
        case batchOption = "batch_option"
        case jsonMaps = "json_maps"
    }
}

/// The paper a plugin implements.
public struct Paper: Codable, Sendable, Equatable {
    public var title: String
    public var url: String
    public init(title: String, url: String) {
        self.title = title
        self.url = url
    }
}

/// A component as the metadata JSON describes it.
public struct ComponentInfo: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var summary: String
    public var operations: [OperationSpec]
    /// JSON Schema of the options object (type "object", properties with defaults).
    public var options: JSONValue
    /// True when the component has a `tour` operation that runs on embedded data.
    public var tour: Bool?
    /// The benchmarks it measures through the reserved operation `benchmark` (absent: none).
    public var benchmarks: [BenchmarkSpec]?

    public init(
        id: String, kind: String, summary: String, operations: [OperationSpec], options: JSONValue, tour: Bool? = nil,
        benchmarks: [BenchmarkSpec]? = nil
    ) {
        self.id = id
        self.kind = kind
        self.summary = summary
        self.operations = operations
        self.options = options
        self.tour = tour
        self.benchmarks = benchmarks
    }
}

/// The metadata document every plugin publishes through its descriptor.
public struct PluginMetadata: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    public var summary: String
    public var license: String
    public var authors: [String]
    public var paper: Paper?
    public var components: [ComponentInfo]

    public init(
        name: String, version: String, summary: String, license: String, authors: [String],
        paper: Paper?, components: [ComponentInfo]
    ) {
        self.name = name
        self.version = version
        self.summary = summary
        self.license = license
        self.authors = authors
        self.paper = paper
        self.components = components
    }

    /// Lower-case letters, digits, '.', '_' and '-', starting with a letter or digit.
    public static func isValidName(_ s: String) -> Bool {
        guard let first = s.utf8.first, (97...122).contains(first) || (48...57).contains(first) else { return false }
        return s.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 46 || $0 == 95 || $0 == 45 }
    }

    /// Checks what the host relies on; returns the problems found (empty when valid).
    public func problems() -> [String] {
        var out: [String] = []
        if !PluginMetadata.isValidName(name) {
            out.append("plugin name '\(name)' must be lower-case letters, digits, '.', '_' or '-'")
        }
        if version.isEmpty { out.append("plugin '\(name)' has an empty version") }
        if components.isEmpty { out.append("plugin '\(name)' declares no components") }
        var seen = Set<String>(), benchmarkNames = Set<String>()
        for c in components {
            for b in c.benchmarks ?? [] {
                if !PluginMetadata.isValidName(b.name) {
                    out.append("benchmark name '\(b.name)' of '\(c.id)' must be lower-case letters, digits, '.', '_' or '-'")
                }
                if !benchmarkNames.insert(b.name).inserted { out.append("benchmark '\(b.name)' is declared twice") }
                if b.unit.isEmpty { out.append("benchmark '\(b.name)' of '\(c.id)' has no unit") }
            }
            if !PluginMetadata.isValidName(c.id) {
                out.append("component id '\(c.id)' must be lower-case letters, digits, '.', '_' or '-'")
            }
            if !seen.insert(c.id).inserted { out.append("component id '\(c.id)' appears twice") }
            if Kind(rawValue: c.kind) == nil {
                out.append("component '\(c.id)' has unknown kind '\(c.kind)' (known: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            if c.operations.isEmpty { out.append("component '\(c.id)' declares no operations") }
            if c.options["type"]?.stringValue != "object" {
                out.append("component '\(c.id)': options must be a JSON Schema with \"type\": \"object\"")
            }
        }
        return out
    }
}
