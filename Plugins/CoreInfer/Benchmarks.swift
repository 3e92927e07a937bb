import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// CoreInfer's benchmarks (moved from the CLI, which no longer knows any model): dense and sparse
/// greedy decode on a random 199M-parameter LLaMA written by the benchmark, the FFN's share of a
/// dense step, the sparse speedup over its Amdahl bound and the peak memory (the host runs the
/// family in a fresh isolated child).
extension CoreInferComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "coreinfer.dense_decode", unit: "tokens/s", summary: "greedy decode of 32 tokens after a 32-token prompt, random 199M-parameter LLaMA, dense",
            ratioTarget: 0.5),
        BenchmarkSpec("coreinfer.sparse_decode", unit: "tokens/s", summary: "the same on 40 % of the FFN neurons in layers 3–9"),
        BenchmarkSpec("coreinfer.ffn_share", unit: "%", summary: "the FFN's share of a dense decode step"),
        BenchmarkSpec(
            "coreinfer.peak_memory", unit: "× (weights + cache)", summary: "VmHWM rise while loading and decoding, over weights plus KV cache",
            target: 1.2),
        BenchmarkSpec("coreinfer.speedup_of_bound", unit: "%", summary: "the sparse speedup over its Amdahl bound", target: 90),
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.coreInferBenchmarks() }
}

extension BenchmarkRun {
    func coreInferBenchmarks() throws {
        let scratch = NSTemporaryDirectory() + "/menagerie-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

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
            var tensors: [(name: String, tensor: Tensor)] = [
                ("model.embed_tokens.weight", try normal([vocab, d])), ("lm_head.weight", try normal([vocab, d])),
                ("model.norm.weight", Tensor.filled(1, shape: [d])),
            ]
            let hd = d / heads
            for l in 0..<layers {
                let p = "model.layers.\(l)."
                tensors += [
                    (p + "input_layernorm.weight", Tensor.filled(1, shape: [d])), (p + "post_attention_layernorm.weight", Tensor.filled(1, shape: [d])),
                    (p + "self_attn.q_proj.weight", try normal([heads * hd, d])), (p + "self_attn.k_proj.weight", try normal([kv * hd, d])),
                    (p + "self_attn.v_proj.weight", try normal([kv * hd, d])), (p + "self_attn.o_proj.weight", try normal([d, heads * hd])),
                    (p + "mlp.gate_proj.weight", try normal([dff, d])), (p + "mlp.up_proj.weight", try normal([dff, d])),
                    (p + "mlp.down_proj.weight", try normal([d, dff])),
                ]
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
            denseRecord.ratioTarget = 0.5 // ≥ 2× transformers' tokens/s
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
    }
}
