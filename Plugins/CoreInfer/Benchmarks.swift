import Formats
import Foundation
import MenagerieKit
import NN
import Tensors
import Text

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
        BenchmarkSpec(
            "coreinfer.dense_decode_bf16", unit: "tokens/s",
            summary:
                "the dense decode with precision=bf16 (weights rounded once, oneDNN bf16 products; interleaved with fp32 runs; absent where bf16 cannot run)"),
        BenchmarkSpec(
            "coreinfer.sparse_decode_bf16", unit: "tokens/s", summary: "the sparse decode with precision=bf16 (core-neuron weights gathered and rounded)"),
        BenchmarkSpec("coreinfer.ffn_share", unit: "%", summary: "the FFN's share of a dense decode step"),
        BenchmarkSpec(
            "coreinfer.peak_memory", unit: "× (weights + cache)", summary: "VmHWM rise while loading and decoding, over weights plus KV cache",
            target: 1.2),
        BenchmarkSpec("coreinfer.speedup_of_bound", unit: "%", summary: "the sparse speedup over its Amdahl bound", target: 90),
        BenchmarkSpec(
            "coreinfer.task_choice_dense", unit: "tokens/s",
            summary:
                "evaluate: the shipped 24 multiple-choice questions on the random 199M LLaMA with a SentencePiece tokenizer, continuation tokens scored per second, dense"
        ),
        BenchmarkSpec("coreinfer.task_choice_sparse", unit: "tokens/s", summary: "the same on each question's core neurons (β = 0.4, layers 3–9)"),
        BenchmarkSpec("coreinfer.task_choice_acc_dense", unit: "acc", summary: "their accuracy, dense (a random model: chance is about 0.3)"),
        BenchmarkSpec("coreinfer.task_choice_acc_sparse", unit: "acc", summary: "their accuracy on core neurons"),
        BenchmarkSpec(
            "coreinfer.task_choice_shared_prefill", unit: "×", summary: "time to score the questions re-running the context per choice, over one shared prefill"
        ),
        BenchmarkSpec("coreinfer.task_generation_dense", unit: "tokens/s", summary: "evaluate: the shipped 10 completions, greedy decode tokens/s, dense"),
        BenchmarkSpec("coreinfer.task_generation_sparse", unit: "tokens/s", summary: "the same on each prompt's core neurons"),
        BenchmarkSpec("coreinfer.task_generation_ffn_share", unit: "%", summary: "the FFN's share of a dense decode step during the task"),
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
        let folder = scratch + "/llama-200m"
        let (d, layers, heads, kv, dff, vocab) = (1024, 12, 16, 4, 2816, 32000)
        let bf16Rows = ["coreinfer.dense_decode_bf16", "coreinfer.sparse_decode_bf16"]
        var bf16Wanted = bf16Rows.contains(where: wanted)
        if bf16Wanted, let why = GEMM.bf16Unavailable() {
            notes.append("coreinfer bf16 rows: \(why)")
            bf16Wanted = false
        }
        let decodeRows =
            ["coreinfer.dense_decode", "coreinfer.sparse_decode", "coreinfer.ffn_share", "coreinfer.peak_memory", "coreinfer.speedup_of_bound"]
            + (bf16Wanted ? bf16Rows : [])
        if decodeRows.contains(where: wanted) {
            var tensors = try writeLlama200M(folder)
            let hd = d / heads
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
            // bf16 after the peak memory was read (its rounded copies add half the weights), each run
            // right after an fp32 run of the same mode.
            if bf16Wanted {
                _ = try GEMM.withPrecision(.bf16) { try decode(sparse: false) }
                var pairs: [(dense32: Double, dense16: Double, sparse32: Double, sparse16: Double)] = []
                for _ in 0..<3 {
                    let d32 = try decode(sparse: false).rate, d16 = try GEMM.withPrecision(.bf16) { try decode(sparse: false).rate }
                    let s32 = try decode(sparse: true).rate, s16 = try GEMM.withPrecision(.bf16) { try decode(sparse: true).rate }
                    pairs.append((d32, d16, s32, s16))
                }
                records.append(record("coreinfer.dense_decode_bf16", unit: "tokens/s", pairs.map(\.dense16)))
                records.append(record("coreinfer.sparse_decode_bf16", unit: "tokens/s", pairs.map(\.sparse16)))
                let median = { (v: [Double]) in v.sorted()[v.count / 2] }
                notes.append(
                    String(
                        format: "coreinfer bf16: dense %.2f×, sparse %.2f× the tokens/s of the interleaved fp32 runs (medians %.1f vs %.1f, %.1f vs %.1f)",
                        median(pairs.map(\.dense16)) / median(pairs.map(\.dense32)), median(pairs.map(\.sparse16)) / median(pairs.map(\.sparse32)),
                        median(pairs.map(\.dense16)), median(pairs.map(\.dense32)), median(pairs.map(\.sparse16)), median(pairs.map(\.sparse32))))
            }
        }
        // `evaluate` on the same model with a SentencePiece tokenizer: the shipped tasks, dense and on
        // each example's core neurons (β = 0.4, layers 3–9), once each (a random model answers at chance).
        if names.contains(where: { $0.hasPrefix("coreinfer.task_") }) { try taskBenchmarks(folder) }
    }

    func taskBenchmarks(_ folder: String) throws {
        if !FileManager.default.fileExists(atPath: folder + "/model.safetensors") { _ = try writeLlama200M(folder) }
        let component = CoreInferComponent()
        let (model, tokenizer) = try component.load(folder)
        let layers = convertedLayers(total: model.config.layers, start: nil, end: nil)
        let tasks = try TaskFiles.load(try PluginResources.path(module: "CoreInfer", item: "tasks"))
        var options = CoreInferComponent.Options()
        let context = EvalContext(component: component, model: model, tokenizer: tokenizer, layers: layers, options: options, selection: nil)
        defer { model.sparse = context.dense }
        for task in tasks {
            switch task.kind {
            case .choice(let items):
                var denseSeconds = 0.0
                for (mode, label) in [("dense", "dense"), ("stability", "sparse")] {
                    var clock = ModeClock(), correct = 0
                    for item in items { if try context.scoreChoices(item, mode: mode, path: task.path, clock: &clock).pred == item.gold { correct += 1 } }
                    records.append(record("coreinfer.task_choice_\(label)", unit: "tokens/s", [Double(clock.stepTokens) / max(clock.stepSeconds, 1e-9)]))
                    records.append(record("coreinfer.task_choice_acc_\(label)", unit: "acc", [Double(correct) / Double(items.count)]))
                    if mode == "dense" { denseSeconds = clock.prefillSeconds + clock.stepSeconds }
                }
                options.share_prefill = false
                let unshared = EvalContext(component: component, model: model, tokenizer: tokenizer, layers: layers, options: options, selection: nil)
                var clock = ModeClock()
                for item in items { _ = try unshared.scoreChoices(item, mode: "dense", path: task.path, clock: &clock) }
                records.append(
                    record("coreinfer.task_choice_shared_prefill", unit: "×", [(clock.prefillSeconds + clock.stepSeconds) / max(denseSeconds, 1e-9)]))
            case .generation(let items, let fewShot):
                for (mode, label) in [("dense", "dense"), ("stability", "sparse")] {
                    var clock = ModeClock()
                    for item in items {
                        let prompt = fewShot.prompt(item.input, shots: fewShot.shots ?? fewShot.examples.count)
                        _ = try context.generate(prompt, mode: mode, stop: ["\n"], place: "\(task.path):\(item.line)", clock: &clock)
                    }
                    records.append(record("coreinfer.task_generation_\(label)", unit: "tokens/s", [Double(clock.stepTokens) / max(clock.stepSeconds, 1e-9)]))
                    if mode == "dense" {
                        records.append(record("coreinfer.task_generation_ffn_share", unit: "%", [100 * clock.ffnSeconds / max(clock.stepSeconds, 1e-9)]))
                    }
                }
            }
        }
    }

    /// The benchmark's LLaMA-shaped model with random weights (seed 5), written to `folder` with the
    /// shipped SentencePiece-style tokenizer.json (600 pieces with byte fallback, trained here for the
    /// `llama-spm-tiny` fixture; its ids all index the 32,000-token embedding). Returns the tensors.
    func writeLlama200M(_ folder: String) throws -> [(name: String, tensor: Tensor)] {
        let (d, layers, heads, kv, dff, vocab) = (1024, 12, 16, 4, 2816, 32000)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
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
        let tokenizer = try PluginResources.path(module: "CoreInfer", item: "spm-tokenizer") + "/tokenizer.json"
        try? FileManager.default.removeItem(atPath: folder + "/tokenizer.json")
        try FileManager.default.copyItem(atPath: tokenizer, toPath: folder + "/tokenizer.json")
        return tensors
    }
}
