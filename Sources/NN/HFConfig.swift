import Formats
import Foundation

/// A Hugging Face decoder-only language model's `config.json` (OPT and LLaMA families), with every
/// size read from the file. Keys follow `transformers` (v4 and v5: `rope_theta` at the top level
/// or inside `rope_parameters`); a key the architecture needs and the file lacks is an error that
/// names it, never a silent default, except where `transformers` itself has a default (noted).
public struct DecoderConfig: Sendable, Equatable {
    public enum Architecture: String, Sendable { case opt, llama }
    /// gelu is exact (erf); geluTanh is the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    public enum Activation: String, Sendable { case relu, gelu, geluTanh, silu }

    public var architecture: Architecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var layers: Int
    public var heads: Int
    /// Key/value heads (grouped-query attention); equals `heads` for OPT.
    public var keyValueHeads: Int
    public var headDim: Int
    /// The MLP's inner width (`ffn_dim` for OPT, `intermediate_size` for LLaMA).
    public var intermediateSize: Int
    public var maxPositions: Int
    public var activation: Activation
    /// LayerNorm eps for OPT (torch's 1e-5), RMSNorm eps for LLaMA.
    public var normEps: Double
    /// RoPE base (LLaMA).
    public var ropeTheta: Double
    public var tieWordEmbeddings: Bool
    /// OPT: the embedding width when it differs from `hiddenSize` (project_in / project_out).
    public var wordEmbedProjDim: Int
    /// OPT: pre-LN (true for every OPT but the 350m model).
    public var layerNormBefore: Bool
    /// Biases on the attention projections (OPT: `enable_bias`; LLaMA: `attention_bias`).
    public var attentionBias: Bool
    /// Biases on the MLP (OPT: `enable_bias`; LLaMA: `mlp_bias`).
    public var mlpBias: Bool
    public var bosTokenID: Int?
    /// Every end-of-sequence id (`eos_token_id` may be a list).
    public var eosTokenIDs: [Int]
    public var padTokenID: Int?
    /// `torch_dtype` / `dtype` as written ("float32", "bfloat16"…), if any.
    public var dtype: String?

    /// Reads `config.json` at `path` (a file, or a folder holding one).
    public static func load(path: String) throws -> DecoderConfig {
        var isDir: ObjCBool = false
        let file = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue ? path + "/config.json" : path
        let json: JSONValue
        do { json = try JSONValue.parse(try RegularFile.text(file, limit: 16 << 20), source: file) } catch let e as FormatError {
            throw e
        } catch {
            throw FormatError(path: file, "\(error)")
        }
        return try DecoderConfig(json: json, path: file)
    }

    public init(json: JSONValue, path: String = "config.json") throws {
        func int(_ key: String, in range: ClosedRange<Int> = Limits.dimension) throws -> Int {
            guard let v = json[key], v != .null else { throw FormatError(path: path, "config has no '\(key)'") }
            return try Limits.int(v, key: key, in: range, source: path)
        }
        func optionalInt(_ key: String, in range: ClosedRange<Int> = Limits.dimension) throws -> Int? {
            guard let v = json[key], v != .null else { return nil }
            return try Limits.int(v, key: key, in: range, source: path)
        }
        // Token ids: 0 ..< 2^24 (a negative id is written by some configs for "none": ignored).
        let ids = 0...(Limits.vocabulary.upperBound - 1)
        func tokenID(_ v: JSONValue, _ key: String) throws -> Int? {
            if let n = v.doubleValue, n < 0, n.rounded() == n { return nil }
            return try Limits.int(v, key: key, in: ids, source: path)
        }
        func optionalID(_ key: String) throws -> Int? {
            guard let v = json[key], v != .null else { return nil }
            return try tokenID(v, key)
        }
        func bool(_ key: String, default d: Bool) throws -> Bool {
            guard let v = json[key], v != .null else { return d }
            guard let b = v.boolValue else { throw FormatError(path: path, "'\(key)' must be true or false, got \(v)") }
            return b
        }
        guard let type = json["model_type"]?.stringValue else { throw FormatError(path: path, "config has no 'model_type'") }
        guard let arch = Architecture(rawValue: type) else {
            throw FormatError(path: path, "model_type '\(type)' is not supported (supported: opt, llama)")
        }
        architecture = arch
        vocabSize = try int("vocab_size", in: Limits.vocabulary)
        hiddenSize = try int("hidden_size")
        layers = try int("num_hidden_layers")
        heads = try int("num_attention_heads")
        maxPositions = try int("max_position_embeddings")
        bosTokenID = try optionalID("bos_token_id")
        padTokenID = try optionalID("pad_token_id")
        if let list = json["eos_token_id"]?.arrayValue {
            eosTokenIDs = try list.enumerated().compactMap { i, v in try tokenID(v, "eos_token_id[\(i)]") }
        } else {
            eosTokenIDs = try optionalID("eos_token_id").map { [$0] } ?? []
        }
        dtype = json["torch_dtype"]?.stringValue ?? json["dtype"]?.stringValue
        tieWordEmbeddings = try bool("tie_word_embeddings", default: true) // transformers' PretrainedConfig default

        func readActivation(_ key: String, default d: String) throws -> Activation {
            let name = json[key]?.stringValue ?? d
            switch name {
            case "relu": return .relu
            case "gelu": return .gelu
            case "gelu_new", "gelu_pytorch_tanh": return .geluTanh
            case "silu", "swish": return .silu
            default: throw FormatError(path: path, "'\(key)' = '\(name)' is not supported (relu, gelu, gelu_new, gelu_pytorch_tanh, silu)")
            }
        }

        switch arch {
        case .opt:
            keyValueHeads = heads
            guard hiddenSize % heads == 0 else { throw FormatError(path: path, "hidden_size \(hiddenSize) is not divisible by num_attention_heads \(heads)") }
            headDim = hiddenSize / heads
            intermediateSize = try int("ffn_dim")
            activation = try readActivation("activation_function", default: "relu")
            normEps = 1e-5
            ropeTheta = 0
            wordEmbedProjDim = try optionalInt("word_embed_proj_dim") ?? hiddenSize
            layerNormBefore = try bool("do_layer_norm_before", default: true)
            let bias = try bool("enable_bias", default: true)
            (attentionBias, mlpBias) = (bias, bias)
            if try bool("_remove_final_layer_norm", default: false) {
                throw FormatError(path: path, "'_remove_final_layer_norm' = true is not supported")
            }
        case .llama:
            keyValueHeads = try optionalInt("num_key_value_heads") ?? heads
            guard heads % keyValueHeads == 0 else {
                throw FormatError(path: path, "num_attention_heads \(heads) is not a multiple of num_key_value_heads \(keyValueHeads)")
            }
            headDim = try optionalInt("head_dim") ?? hiddenSize / heads
            guard headDim > 0 else {
                throw FormatError(path: path, "hidden_size \(hiddenSize) / num_attention_heads \(heads) gives no head dimension (set head_dim)")
            }
            intermediateSize = try int("intermediate_size")
            activation = try readActivation("hidden_act", default: "silu")
            guard let eps = json["rms_norm_eps"]?.doubleValue else { throw FormatError(path: path, "config has no 'rms_norm_eps'") }
            normEps = try Limits.finite(eps, key: "rms_norm_eps", in: 0...1, source: path)
            // transformers v5 keeps RoPE settings in `rope_parameters`, v4 at the top level.
            let rope = json["rope_parameters"] ?? json["rope_scaling"]
            if let kind = rope?["rope_type"]?.stringValue ?? rope?["type"]?.stringValue, kind != "default" {
                throw FormatError(path: path, "RoPE type '\(kind)' is not supported (only the default, unscaled RoPE)")
            }
            ropeTheta = try Limits.finite(
                rope?["rope_theta"]?.doubleValue ?? json["rope_theta"]?.doubleValue ?? 10_000, // transformers' default
                key: "rope_theta", in: 1...1e12, source: path)
            wordEmbedProjDim = hiddenSize
            layerNormBefore = true
            attentionBias = try bool("attention_bias", default: false)
            mlpBias = try bool("mlp_bias", default: false)
        }
        try validate(source: path)
    }

    /// Checks the sizes together before a model is built: each in range, heads dividing the width,
    /// and the parameter memory (embeddings, attention, MLP, output head) within `Limits.allocation`.
    public func validate(source: String) throws {
        let checks: [(String, Int, ClosedRange<Int>)] = [
            ("vocab_size", vocabSize, Limits.vocabulary), ("hidden_size", hiddenSize, Limits.dimension),
            ("num_hidden_layers", layers, Limits.dimension), ("num_attention_heads", heads, Limits.dimension),
            ("num_key_value_heads", keyValueHeads, Limits.dimension), ("head_dim", headDim, Limits.dimension),
            ("intermediate_size", intermediateSize, Limits.dimension), ("max_position_embeddings", maxPositions, Limits.dimension),
            ("word_embed_proj_dim", wordEmbedProjDim, Limits.dimension),
        ]
        for (k, v, r) in checks { _ = try Limits.check(v, key: k, in: r, source: source) }
        guard heads % keyValueHeads == 0 else {
            throw FormatError(path: source, "'num_attention_heads' = \(heads) is not a multiple of 'num_key_value_heads' = \(keyValueHeads)")
        }
        if architecture == .opt, hiddenSize % heads != 0 {
            throw FormatError(path: source, "'hidden_size' = \(hiddenSize) is not divisible by 'num_attention_heads' = \(heads)")
        }
        let qDim = try Limits.product([heads, headDim], what: "num_attention_heads × head_dim", source: source)
        let kvDim = try Limits.product([keyValueHeads, headDim], what: "num_key_value_heads × head_dim", source: source)
        try Limits.parameters(
            [
                [vocabSize, wordEmbedProjDim], [tieWordEmbeddings ? 0 : vocabSize, wordEmbedProjDim],
                [architecture == .opt ? maxPositions : 0, hiddenSize],
                [layers, hiddenSize, qDim], [layers, 2, hiddenSize, kvDim], [layers, qDim, hiddenSize],
                [layers, architecture == .llama ? 3 : 2, hiddenSize, intermediateSize],
            ], what: "the model's parameters", source: source)
    }
}
