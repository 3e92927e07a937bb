import ArgumentParser
import Foundation
import Formats
import MenagerieHost
import NN
import Tensors

/// The numerical core's benchmarks: the workloads of `scripts/bench-reference.py`, named the same,
/// so that `--reference` can put PyTorch's time beside ours. Weights are random (speed does not
/// depend on them), written to a temporary safetensors file and memory-mapped back as a real
/// checkpoint would be.
extension BenchCommand {
    func modelBenchmarks(into records: inout [Record], runtime: Runtime, registry: Registry) throws {
        let scratch = NSTemporaryDirectory() + "/menagerie-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        // The sgemm rate everything else is measured against: 1024³ products.
        if wanted("sgemm.1024") {
            let n = 1024
            let a = Tensor.filled(0.5, shape: [n, n]), b = Tensor.filled(0.25, shape: [n, n])
            var c = Tensor(zeros: .float32, shape: [n, n])
            func product() {
                a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in c.withUnsafeMutableBytes { pc in
                    GEMM.sgemm(m: n, n: n, k: n, a: pa.baseAddress!.assumingMemoryBound(to: Float.self), lda: n,
                               b: pb.baseAddress!.assumingMemoryBound(to: Float.self), ldb: n,
                               c: pc.baseAddress!.assumingMemoryBound(to: Float.self), ldc: n)
                } } }
            }
            product()
            var samples: [Double] = []
            for _ in 0..<max(5, repeats) {
                let t0 = now()
                product()
                samples.append(2 * Double(n * n * n) / ((now() - t0) * 1e6))   // GFLOP/s
            }
            records.append(record("sgemm.1024", unit: "GFLOP/s", samples))
        }

        // CoreInfer on a LLaMA-shaped model of ~200M parameters with random weights (hidden 1024,
        // 12 layers, 16 heads over 4 key-value heads, SwiGLU 2816, vocabulary 32,000): dense decode
        // tokens/s after a 32-token prompt, the FFN's share of a dense decode step, and sparse decode
        // at β = 0.4 over the default converted layers against the Amdahl bound 1/((1−f) + f·(c·β + 1 − c))
        // (f the FFN share, c the converted share of the FFN time).
        if wanted("coreinfer.") {
            let folder = scratch + "/llama-200m"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let (d, layers, heads, kv, dff, vocab) = (1024, 12, 16, 4, 2816, 32000)
            let config = """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": \(d), "intermediate_size": \(dff),
             "num_hidden_layers": \(layers), "num_attention_heads": \(heads), "num_key_value_heads": \(kv), "head_dim": \(d / heads),
             "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": \(vocab),
             "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
            """
            try config.write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
            var rng = SeededGenerator(seed: 5)
            func normal(_ shape: [Int]) throws -> Tensor {
                try Tensor((0..<shape.reduce(1, *)).map { _ in Float(rng.nextUniform() * 2 - 1) * 0.03 }, shape: shape)
            }
            var tensors: [(name: String, tensor: Tensor)] = [("model.embed_tokens.weight", try normal([vocab, d])), ("lm_head.weight", try normal([vocab, d])),
                                                             ("model.norm.weight", Tensor.filled(1, shape: [d]))]
            let hd = d / heads
            for l in 0..<layers {
                let p = "model.layers.\(l)."
                tensors += [(p + "input_layernorm.weight", Tensor.filled(1, shape: [d])), (p + "post_attention_layernorm.weight", Tensor.filled(1, shape: [d])),
                            (p + "self_attn.q_proj.weight", try normal([heads * hd, d])), (p + "self_attn.k_proj.weight", try normal([kv * hd, d])),
                            (p + "self_attn.v_proj.weight", try normal([kv * hd, d])), (p + "self_attn.o_proj.weight", try normal([d, heads * hd])),
                            (p + "mlp.gate_proj.weight", try normal([dff, d])), (p + "mlp.up_proj.weight", try normal([dff, d])),
                            (p + "mlp.down_proj.weight", try normal([d, dff]))]
            }
            try SafeTensors.write(tensors, to: folder + "/model.safetensors")
            let weightBytes = Double(tensors.reduce(0) { $0 + $1.tensor.count * 4 })
            tensors = []
            let before = PeakMemory.resetAndRead()
            let model = try DecoderLM(folder: folder)
            let prompt = (0..<32).map { Int32(($0 * 997) % vocab) }
            let steps = 32
            func decode(sparse: Bool) throws -> (rate: Double, ffnSeconds: Double) {
                for l in 0..<layers { try model.setSparse(layer: l, neurons: nil) }
                let cache = model.makeCache()
                var acts: [Int: [Float]] = [:]
                model.activationHook = { l, a, _ in acts[l] = a }
                var logits = try model.forward(prompt, cache: cache)
                model.activationHook = nil
                if sparse {
                    // start = round(5/32·12) = 2, end = round(27/32·12) = 10: layers 3…9 converted.
                    for l in 3...9 { try model.setSparse(layer: l, neurons: Array(0..<Int(0.4 * Double(dff)))) }
                }
                var ffn = 0.0
                model.ffnTimer = { ffn += $0 }
                let t0 = now()
                for _ in 0..<steps {
                    let id = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
                    logits = try model.forward([id], cache: cache)
                }
                let seconds = (now() - t0) / 1000
                model.ffnTimer = nil
                return (Double(steps) / seconds, ffn)
            }
            _ = try decode(sparse: false)
            var dense: [Double] = [], sparse: [Double] = [], shares: [Double] = []
            for _ in 0..<3 {
                let r = try decode(sparse: false)
                dense.append(r.rate)
                shares.append(r.ffnSeconds / (Double(steps) / r.rate))
                sparse.append(try decode(sparse: true).rate)
            }
            var denseRecord = record("coreinfer.dense_decode", unit: "tokens/s", dense)
            denseRecord.ratioTarget = 0.5                // ≥ 2× transformers' tokens/s
            records.append(denseRecord)
            records.append(record("coreinfer.sparse_decode", unit: "tokens/s", sparse))
            let f = shares.sorted()[shares.count / 2], converted = 7.0 / Double(layers)
            let bound = 1 / ((1 - f) + f * (converted * 0.4 + (1 - converted)))
            let speedup = sparse.sorted()[1] / dense.sorted()[1]
            records.append(record("coreinfer.ffn_share", unit: "%", [100 * f]))
            // Peak resident memory while loading and decoding, over the weights plus the KV cache
            // (12 layers × keys and values × 256 dims × 64 positions × 4 bytes).
            let cacheBytes = Double(layers * 2 * kv * hd * (prompt.count + steps) * 4)
            var memory = record("coreinfer.peak_memory", unit: "× (weights + cache)", [Double(PeakMemory.read() - before) / (weightBytes + cacheBytes)])
            memory.target = 1.2
            records.append(memory)
            records.append(record("coreinfer.speedup_of_bound", unit: "%", [100 * speedup / bound], target: 90))
        }

        // ConvNet-3 training step (forward + backward + SGD) at batch 256 on 32×32 RGB, width 128.
        if wanted("convnet3.train_step") {
            var rng = SeededGenerator(seed: 1)
            let batch = 256
            let x = Variable(try Tensor((0..<(batch * 3 * 32 * 32)).map { _ in Float(rng.nextNormal()) }, shape: [batch, 3, 32, 32]))
            let labels = (0..<batch).map { $0 % 10 }
            let net = ConvNet(channels: 3, classes: 10)
            let opt = SGD(net.parameters, learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4)
            opt.minimize(crossEntropy(net(x), labels: labels))     // warm-up: fills the buffer pool
            var samples: [Double] = []
            for _ in 0..<max(3, repeats / 4) {
                let t0 = now()
                opt.minimize(crossEntropy(net(x), labels: labels))
                samples.append(now() - t0)
            }
            var r = record("convnet3.train_step", unit: "ms", samples)
            r.ratioTarget = 1.0
            records.append(r)
            BufferPool.shared.drain()
        }

        // timm ViT-B/16 at 224 px, batch 1 and 8, on the tape-free path.
        if wanted("vit_b16.forward") || wanted("vit_b16.forward_batch8") || wanted("vit_b16.sgemm_share") || wanted("vit_b16.gradcam")
            || wanted("vit_b16.finercam") {
            var config = ViTConfig(imageSize: 224, patchSize: 16, width: 768, depth: 12, heads: 12)
            config.numClasses = 1000
            let dir = scratch + "/vit-b16"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try ViT(config: config, seed: 1).save(to: dir + "/model.safetensors")
            BufferPool.shared.drain()
            let model = try ViT(config: config, checkpoint: Checkpoint(path: dir))
            for (name, batch, reps) in [("vit_b16.forward", 1, max(3, repeats / 2)), ("vit_b16.forward_batch8", 8, max(2, repeats / 8))]
            where wanted(name) || (batch == 1 && wanted("vit_b16.sgemm_share")) {
                let image = Tensor.filled(0.5, shape: [batch, 3, 224, 224])
                _ = try model.forward(image)
                var samples: [Double] = []
                for _ in 0..<reps {
                    let t0 = now()
                    _ = try model.forward(image)
                    samples.append(now() - t0)
                }
                var r = record(name, unit: "ms", samples)
                r.ratioTarget = 0.85
                if wanted(name) { records.append(r) }
                // The share of the machine's sgemm rate this forward reaches (target ≥ 85 %).
                if batch == 1, wanted("vit_b16.sgemm_share"), let rate = records.first(where: { $0.name == "sgemm.1024" })?.median {
                    let gflop = vitForwardFLOPs(tokens: config.tokens, width: 768, depth: 12, hidden: 3072, patchInputs: 3 * 16 * 16) / 1e9
                    let shares = samples.map { 100 * (gflop / ($0 / 1000)) / rate }
                    var share = record("vit_b16.sgemm_share", unit: "%", shares)
                    share.target = 85
                    records.append(share)
                }
            }
            // Grad-CAM and Finer-CAM through the explainers plugin on the same ViT-B/16 (a timm
            // folder: config.json beside the weights), one 224×224 image per call.
            let cams = [("vit_b16.gradcam", "grad-cam"), ("vit_b16.finercam", "finer-cam")].filter { name, id in
                wanted(name) && registry.components.contains { $0.component.id == id }
            }
            if !cams.isEmpty {
                let timmConfig = """
                {"architecture": "vit_base_patch16_224", "num_classes": 1000, "global_pool": "token",
                 "model_args": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "num_classes": 1000,
                                "global_pool": "token", "class_token": true},
                 "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}}
                """
                try Data(timmConfig.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
                let image = Tensor.filled(0.5, shape: [1, 3, 224, 224])
                for (name, id) in cams {
                    let options: JSONValue = ["classifier": .string(dir)]
                    _ = try runtime.invoke(id, operation: "explain", options: options, inputs: [("images", image)])
                    var samples: [Double] = []
                    for _ in 0..<max(3, repeats / 4) {
                        let t0 = now()
                        _ = try runtime.invoke(id, operation: "explain", options: options, inputs: [("images", image)])
                        samples.append(now() - t0)
                    }
                    var r = record(name, unit: "ms", samples)
                    r.ratioTarget = 1.0
                    records.append(r)
                }
            }
            BufferPool.shared.drain()
        }

        // open_clip ViT-L-14: image tower batch 1, text tower batch 8, and the peak memory of loading
        // the checkpoint and running both, as a multiple of the checkpoint's size.
        if wanted("vit_l14.image_forward") || wanted("vit_l14.text_forward_batch8") || wanted("vit_l14.peak_memory") {
            let dir = scratch + "/vit-l14"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data(Self.vitL14Config.utf8).write(to: URL(fileURLWithPath: dir + "/open_clip_config.json"))
            let config = try OpenCLIPConfig.load(path: dir + "/open_clip_config.json")
            try CLIP(config: config, seed: 1).save(to: dir + "/open_clip_model.safetensors")
            BufferPool.shared.drain()
            let weightBytes = Double((try FileManager.default.attributesOfItem(atPath: dir + "/open_clip_model.safetensors")[.size] as? NSNumber)?.intValue ?? 0)
            let before = PeakMemory.resetAndRead()
            let model = try CLIP(folder: dir)
            let image = Tensor.filled(0.5, shape: [1, 3, 224, 224])
            // Eight prompts of random tokens, each ending in the end-of-text token (the largest id).
            var idValues = [Int32](repeating: 1, count: 8 * 77)
            for i in idValues.indices { idValues[i] = i % 77 == 76 ? 49407 : Int32(1 + (i * 7919) % 49000) }
            let ids = try Tensor(idValues, shape: [8, 77])
            let workloads: [(String, () throws -> Void)] = [
                ("vit_l14.image_forward", { _ = try model.encodeImage(image) }),
                ("vit_l14.text_forward_batch8", { _ = try model.encodeText(ids) }),
            ]
            for (name, body) in workloads where wanted(name) || wanted("vit_l14.peak_memory") {
                try body()
                var samples: [Double] = []
                for _ in 0..<max(2, repeats / 4) {
                    let t0 = now()
                    try body()
                    samples.append(now() - t0)
                }
                var r = record(name, unit: "ms", samples)
                r.ratioTarget = 0.85
                if wanted(name) { records.append(r) }
            }
            if wanted("vit_l14.peak_memory"), weightBytes > 0 {
                let peak = PeakMemory.read() - before
                var r = record("vit_l14.peak_memory", unit: "× weights", [Double(peak) / weightBytes])
                r.target = 1.3
                records.append(r)
            }
            withExtendedLifetime(model) {}
        }
    }

    /// Multiply–adds × 2 of a ViT forward: patch embedding, then per block the qkv and output
    /// projections (8·T·D²), the MLP (4·T·D·hidden) and the attention products (4·T²·D).
    func vitForwardFLOPs(tokens t: Int, width d: Int, depth: Int, hidden: Int, patchInputs: Int) -> Double {
        let (t, d, h) = (Double(t), Double(d), Double(hidden))
        return 2 * (t - 1) * Double(patchInputs) * d + Double(depth) * (8 * t * d * d + 4 * t * d * h + 4 * t * t * d)
    }

    /// open_clip's `ViT-L-14.json` model config.
    static let vitL14Config = """
    {"model_cfg": {"embed_dim": 768, "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}}}
    """
}

/// The process's resident-set high-water mark (VmHWM), which Linux resets on request.
enum PeakMemory {
    /// Resets the high-water mark to the current resident set and returns it (bytes).
    static func resetAndRead() -> Int {
        if let f = fopen("/proc/self/clear_refs", "w") {
            fputs("5", f)
            fclose(f)
        }
        return read()
    }

    /// VmHWM in bytes.
    static func read() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
        }
        return 0
    }
}

extension BenchCommand {
    /// Puts the reference's median beside each record of the same name (`scripts/bench-reference.py`
    /// writes `{"torch": version, "threads": n, "records": [{"name", "unit", "median", …}]}`).
    func attachReference(_ records: [Record], from path: String) throws -> [Record] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read the reference file \(path) (write it with `make bench-reference`)")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(text, source: path) } catch { throw ValidationError("\(path): \(error)") }
        guard let list = json["records"]?.arrayValue else { throw ValidationError("\(path): no \"records\" array") }
        let tool = "pytorch " + (json["torch"]?.stringValue ?? "?") + ", \(json["threads"]?.intValue ?? 0) threads"
        var medians: [String: Double] = [:]
        for item in list {
            if let name = item["name"]?.stringValue, let median = item["median"]?.doubleValue { medians[name] = median }
        }
        return records.map { r in
            guard let m = medians[r.name], m > 0 else { return r }
            var r = r
            r.reference = Reference(tool: tool, median: m)
            // A time ratio either way: ours / reference for times, reference / ours for rates.
            r.ratio = r.unit.hasSuffix("/s") ? m / r.median : r.median / m
            return r
        }
    }
}
