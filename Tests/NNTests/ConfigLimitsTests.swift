import Formats
import Foundation
import NN
import TestSupport
import Testing

/// Issue 19: every size a model config gives is validated through `Limits` before it divides or
/// sizes an allocation. Each case was a SIGILL (divide by zero, overflow) or a terabyte allocation.
@Suite struct ConfigLimitsTests {
    let dir = TempDir("config-limits")

    /// Writes `object` as JSON to `name` in the temporary folder.
    func write(_ object: JSONValue, _ name: String) throws -> String {
        let path = dir.path + "/" + name
        try object.compactText.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            return ""
        } catch { return String(describing: error) }
    }

    // MARK: timm ViT

    func timmConfig(_ args: [String: JSONValue]) -> JSONValue {
        var modelArgs: [String: JSONValue] = [
            "img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 6,
            "mlp_ratio": 4.0,
        ]
        for (k, v) in args { modelArgs[k] = v }
        return ["architecture": "vision_transformer", "num_classes": 6, "model_args": .object(modelArgs)]
    }

    @Test func validTimmConfigStillLoads() throws {
        let c = try ViTConfig.timm(configPath: try write(timmConfig([:]), "ok.json"))
        #expect(c.width == 48 && c.heads == 3 && c.hidden == 192 && c.grid == 4)
    }

    @Test(arguments: [
        ("num_heads", 0 as JSONValue, "'num_heads' = 0 is out of range"),
        ("num_heads", 4294967296 as JSONValue, "'num_heads' = 4294967296 is out of range"),
        ("patch_size", 0 as JSONValue, "'patch_size' = 0 is out of range"),
        ("patch_size", -8 as JSONValue, "'patch_size' = -8 is out of range"),
        ("depth", -1 as JSONValue, "'depth' = -1 is out of range"),
        ("embed_dim", 3e9 as JSONValue, "'embed_dim' = 3000000000 is out of range"),
        ("mlp_ratio", 1e300 as JSONValue, "'mlp_ratio' = 1e+300 is not a finite number"),
        ("mlp_ratio", 0.0 as JSONValue, "'mlp_ratio' = 0.0 is not a finite number in"),
        ("num_heads", 5 as JSONValue, "'embed_dim' = 48 is not divisible by 'num_heads' = 5"),
        ("img_size", 36 as JSONValue, "'img_size' = 36 is not a multiple of 'patch_size' = 8"),
        ("embed_dim", 2.5 as JSONValue, "'embed_dim' = 2.5 is not an integer"),
        ("num_classes", -3 as JSONValue, "'num_classes' = -3 is out of range"),
    ])
    func badTimmConfigNamesTheKeyAndValue(_ key: String, _ value: JSONValue, _ expected: String) throws {
        let path = try write(timmConfig([key: value]), "timm-\(key).json")
        let text = message { _ = try ViTConfig.timm(configPath: path) }
        #expect(text.contains(expected), "\(text)")
        #expect(text.contains(path), "the error names the file: \(text)")
    }

    @Test func timmParameterMemoryIsCheckedBeforeAllocating() throws {
        // Each size in range, together 65,536 layers of 65,536-wide blocks (4 PiB): refused by the allocation cap.
        let path = try write(timmConfig(["embed_dim": 65536, "num_heads": 1, "depth": 65536, "img_size": 8, "patch_size": 8]), "huge.json")
        let text = message { _ = try ViTConfig.timm(configPath: path) }
        #expect(text.contains("the ViT's parameters") && text.contains("more than the limit"), "\(text)")
    }

    @Test func aFIFONamedConfigJSONIsRefusedWithoutHanging() throws {
        let path = dir.path + "/fifo.json"
        try #require(mkfifo(path, 0o600) == 0)
        let text = message { _ = try ViTConfig.timm(configPath: path) }
        #expect(text.contains("FIFO"), "\(text)")
        let clip = message { _ = try OpenCLIPConfig.load(path: path) }
        #expect(clip.contains("FIFO"), "\(clip)")
        let hf = message { _ = try DecoderConfig.load(path: path) }
        #expect(hf.contains("FIFO"), "\(hf)")
    }

    // MARK: open_clip

    func clipConfig(vision: [String: JSONValue] = [:], text: [String: JSONValue] = [:]) -> JSONValue {
        var v: [String: JSONValue] = ["image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "mlp_ratio": 4.0]
        var t: [String: JSONValue] = ["context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2]
        for (k, x) in vision { v[k] = x }
        for (k, x) in text { t[k] = x }
        return ["model_cfg": ["embed_dim": 32, "vision_cfg": .object(v), "text_cfg": .object(t)]]
    }

    @Test func validOpenCLIPConfigStillLoads() throws {
        let c = try OpenCLIPConfig.load(path: try write(clipConfig(), "clip-ok.json"))
        #expect(c.vision.heads == 2 && c.text.heads == 2 && c.vision.hidden == 256)
    }

    @Test(
        arguments: [
            (["head_width": 0], [:], "'vision_cfg.head_width' = 0 is out of range"),
            (["patch_size": 0], [:], "'vision_cfg.patch_size' = 0 is out of range"),
            (["patch_size": -4], [:], "'vision_cfg.patch_size' = -4 is out of range"),
            (["mlp_ratio": 1e300], [:], "'vision_cfg.mlp_ratio' = 1e+300 is not a finite number"),
            (["width": 3e9], [:], "'vision_cfg.width' = 3000000000 is out of range"),
            (["image_size": 36], [:], "'vision_cfg.image_size' = 36 is not a multiple of 'vision_cfg.patch_size' = 8"),
            ([:], ["context_length": -1], "'text_cfg.context_length' = -1 is out of range"),
            ([:], ["heads": 0], "'text_cfg.heads' = 0 is out of range"),
            ([:], ["heads": 4294967296], "'text_cfg.heads' = 4294967296 is out of range"),
            ([:], ["heads": 3], "'text_cfg.width' = 64 is not divisible by 'text_cfg.heads' = 3"),
            ([:], ["vocab_size": 1e12], "'text_cfg.vocab_size' = 1000000000000 is out of range"),
            ([:], ["layers": 1e6, "width": 65536, "heads": 1], "the CLIP model's parameters"),
        ] as [([String: JSONValue], [String: JSONValue], String)])
    func badOpenCLIPConfigNamesTheKeyAndValue(_ vision: [String: JSONValue], _ text: [String: JSONValue], _ expected: String) throws {
        let path = try write(clipConfig(vision: vision, text: text), "clip.json")
        let m = message { _ = try OpenCLIPConfig.load(path: path) }
        #expect(m.contains(expected), "\(m)")
        #expect(m.contains(path), "\(m)")
    }

    // MARK: Hugging Face decoder

    func decoder(_ changes: [String: JSONValue]) throws -> String {
        var c: [String: JSONValue] = [
            "model_type": "llama", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
        ]
        for (k, v) in changes { c[k] = v }
        let path = try write(.object(c), "config.json")
        return message { _ = try DecoderConfig.load(path: path) }
    }

    @Test func validDecoderConfigStillLoads() throws {
        #expect(try decoder([:]) == "")
    }

    @Test(arguments: [
        ("vocab_size", 1e12 as JSONValue, "'vocab_size' = 1000000000000 is out of range"),
        ("num_attention_heads", 0 as JSONValue, "'num_attention_heads' = 0 is out of range"),
        ("num_attention_heads", 4294967296 as JSONValue, "'num_attention_heads' = 4294967296 is out of range"),
        ("num_key_value_heads", 0 as JSONValue, "'num_key_value_heads' = 0 is out of range"),
        ("hidden_size", 1e300 as JSONValue, "'hidden_size' = 1e+300 is not an integer"),
        ("num_hidden_layers", 1e6 as JSONValue, "the model's parameters"),
        ("num_hidden_layers", -1 as JSONValue, "'num_hidden_layers' = -1 is out of range"),
        ("rms_norm_eps", .number(Double.greatestFiniteMagnitude), "'rms_norm_eps'"),
        ("eos_token_id", 3e9 as JSONValue, "'eos_token_id' = 3000000000 is out of range"),
    ])
    func badDecoderConfigNamesTheKeyAndValue(_ key: String, _ value: JSONValue, _ expected: String) throws {
        // 1e6 layers of a 4096-wide model: every size in range, the parameters ~ 1.5 PB.
        var changes: [String: JSONValue] = [key: value]
        if key == "num_hidden_layers", value == 1e6 {
            changes["hidden_size"] = 4096
            changes["intermediate_size"] = 11008
        }
        let m = try decoder(changes)
        #expect(m.contains(expected), "\(m)")
        #expect(m.contains("config.json"), "\(m)")
    }

    // MARK: ConvNet

    @Test(arguments: [
        (1, 10, 0, 3, 32, "'net_width' = 0 is out of range"),
        (1, 10, 128, -1, 32, "'net_depth' = -1 is out of range"),
        (1, 10, 128, 3, 4, "'image_size' = 4 is too small for 'net_depth' = 3"),
        (0, 10, 128, 3, 32, "'in_channels' = 0 is out of range"),
        (3, 10, 1 << 24, 3, 4096, "more than the limit"),
    ])
    func badConvNetSizesNameTheKey(_ channels: Int, _ classes: Int, _ width: Int, _ depth: Int, _ size: Int, _ expected: String) {
        let m = message { try ConvNet.validate(channels: channels, classes: classes, width: width, depth: depth, imageSize: size, source: "c.json") }
        #expect(m.contains(expected), "\(m)")
    }
}
