import Formats
import Foundation
import MenagerieKit
import NN
import Tensors
import Text

/// A Hugging Face decoder (OPT, LLaMA) with CoreInfer's sparse decoding: `generate` runs the prompt
/// densely, picks each converted layer's sentence core neurons from the prefill activations, gathers
/// their weights once, and decodes on them.
struct CoreInferComponent: Generator {
    struct Options: ComponentOptions {
        var model_dir = ""
        var prompt = ""
        var prompts = ""
        var max_new_tokens = 32
        var temperature = 0.0
        var top_k = 0
        var top_p = 1.0
        var stop: [String] = []
        var mode = "stability"
        var alpha = 0.2
        var beta = 0.4
        var start = -1
        var end = -1
        var save_core = false
        var compare = true
        var stream = true
        var corpus = ""
        // train
        var tokenizer = ""
        var hidden = 128
        var layers = 4
        var heads = 8
        var kv_heads = 4
        var ffn = 384
        var max_positions = 256
        var context = 48
        var batch = 16
        var steps = 400
        var lr = 3e-3
        var save_dtype = "f32"
        var signature_layer = -1
        var signature_size = -1
        var signature_alpha = 0.4
        var cluster_alpha = 0.4
        var clusters = ""
        var kmeans = ""
        // evaluate
        var task = ""
        var modes: [String] = []
        var template = ""
        var examples = ""
        var num_fewshot = -1
        var limit = 0
        var share_prefill = true
        static let help = [
            "model_dir":
                "a Hugging Face model folder: config.json, model.safetensors or pytorch_model.bin (or sharded), tokenizer.json (empty: the embedded tiny LLaMA)",
            "prompt": "the prompt text",
            "prompts":
                "generate: a text file of prompts, one per line (blank lines skipped), each generated with the same options → generations.jsonl (shards with --shard)",
            "max_new_tokens": "tokens to generate at most",
            "temperature": "0: greedy; otherwise sample from softmax(logits / temperature)",
            "top_k": "sample among the k most likely tokens (0: all)", "top_p": "nucleus sampling: the smallest set with this much probability",
            "stop": "stop strings: generation ends when the text ends with one (it is kept); evaluate: default a newline, the text before it is scored",
            "mode": "dense (no sparsity), stability (the prompt's own core neurons) or similarity (the neurons of the nearest offline cluster)",
            "alpha": "token sparsity α: each token keeps int(α · positives/tokens) top neurons",
            "beta": "fraction of each converted layer's FFN neurons kept, in (0, 1]",
            "start": "converted layers are start < l < end (−1: 5/32 and 27/32 of the depth, rounded)", "end": "see start",
            "save_core": "write each converted layer's core neurons into result.json", "compare": "also decode densely to report the speedup and agreement",
            "stream": "stream the text as it is generated through the host (the CLI shows it on stdout; on stderr with --json)",
            "tokenizer": "train: a tokenizer.json, byte-level or SentencePiece-style BPE (default: the shipped 512-token byte-level one)",
            "hidden": "train: model width", "layers": "train: decoder layers", "heads": "train: attention heads", "kv_heads": "train: key-value heads",
            "ffn": "train: SwiGLU inner width", "max_positions": "train: the context the model accepts", "context": "train: tokens per training window",
            "batch": "train: windows per step", "steps": "train: optimizer steps", "lr": "train: AdamW peak learning rate",
            "save_dtype": "train: f32 or f16 weights",
            "signature_layer": "similarity: the layer signatures are read at (−1: round(25/32 · layers), the released 25 of 32)",
            "signature_size": "similarity: neurons in a signature (−1: min(3000, round(3000/11008 · d_ff)), the released 3000)",
            "signature_alpha":
                "similarity: a signature's per-token share of the positive neurons (released 0.4; offline rounded per token, online int of the mean)",
            "cluster_alpha":
                "cluster: the per-token share of positive neurons behind each cluster's lists (released 0.4); beta = the fraction of the distinct counted neurons kept",
            "clusters":
                "generate with mode=similarity: the clusters.json written by the cluster operation, or a released cluster directory (neuron_activation/<layer>/cluster_<c>.pkl)",
            "kmeans": "with a released cluster directory: the KMeans pickle or a .npy of centroids (default DIR/cluster_activation/kmeans.pkl)",
            "corpus": "analyze/train: a JSON {\"topics\": {name: [texts]}} (default: the embedded four-topic corpus)",
            "task": "evaluate: a JSONL task file or a folder of them (default: the shipped tasks); lines {context, choices, gold} or {input, target}",
            "modes": "evaluate: modes side by side, from dense, stability, similarity (default: dense,stability, and similarity with clusters=)",
            "template": "evaluate: generation prompt template with {input} (overrides the task file's header)",
            "examples": "evaluate: a JSONL of few-shot {input, target} examples for generation tasks (overrides the header's)",
            "num_fewshot": "evaluate: few-shot examples used (−1: the task header's num_fewshot, else all given)",
            "limit": "evaluate: first N examples per task (0: all)",
            "share_prefill": "evaluate: multiple choice runs the context once and continues each choice from its cache (false: once per choice)",
        ]
        static let choices = ["mode": ["dense", "stability", "similarity"], "save_dtype": ["f32", "f16"]]
        static let ranges: [String: ClosedRange<Double>] = [
            "max_new_tokens": 0...1e6, "temperature": 0...1e6, "top_k": 0...16_777_216, "top_p": 0...1,
            "start": -1...1e6, "end": -1...1e6, "hidden": 1...65536, "layers": 1...1024, "heads": 1...65536, "kv_heads": 1...65536,
            "ffn": 1...1_048_576, "max_positions": 1...16_777_216, "context": 1...1_048_576, "batch": 1...1e6, "steps": 1...1e7,
            "lr": 0...1e3, "signature_layer": -1...1e6, "signature_size": -1...16_777_216, "signature_alpha": 1e-9...1, "cluster_alpha": 1e-9...1,
            "num_fewshot": -1...1e6, "limit": 0...1e9,
        ]
    }
    static let id = "coreinfer"
    static let summary = "CoreInfer: OPT/LLaMA generation on sentence-level core neurons (Wang et al. 2024), from Hugging Face checkpoints"
    static let operations = [
        OperationSpec(
            "generate", summary: "generate text from a prompt (or each line of a prompts file), densely or on CoreInfer's core neurons",
            inputs: [TensorSpec("prompts", shape: "text file", summary: "one prompt per line (passed as the prompts option)", optional: true)],
            outputs: [TensorSpec("tokens", dtypes: ["i64"], shape: "N", summary: "prompt and generated token ids (one prompt)")],
            sharding: ShardingSpec(option: "prompts", items: "lines", extensions: [], sum: ["prompts", "generated_tokens", "seconds"])),
        OperationSpec("cluster", summary: "similarity-guided CoreInfer offline: KMeans clusters of corpus signatures and their neurons → clusters.json"),
        OperationSpec("train", summary: "train a small LLaMA on a corpus with the shipped tokenizer → a Hugging Face folder"),
        OperationSpec(
            "analyze", summary: "core-set stability as a sentence grows, similarity within vs across topics, sparse vs dense perplexity and greedy agreement"),
        OperationSpec(
            "evaluate",
            summary: "task accuracy dense vs on core neurons: multiple-choice log-likelihood (acc, acc_norm) and generation (EM, ROUGE-L, BLEU), with tokens/s"),
    ]

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        switch operation {
        case "train": return try train(request)
        case "cluster": return try cluster(request)
        case "evaluate": return try evaluate(request)
        default: return try analyze(request)
        }
    }

    func generate(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.beta > 0 && o.beta <= 1 else { throw MenagerieError.invalidArgument("beta must be in (0, 1], got \(o.beta)") }
        guard o.alpha > 0 && o.alpha <= 1 else { throw MenagerieError.invalidArgument("alpha must be in (0, 1], got \(o.alpha)") }
        guard o.max_new_tokens >= 0, o.temperature >= 0, o.top_k >= 0, o.top_p > 0 && o.top_p <= 1 else {
            throw MenagerieError.invalidArgument("max_new_tokens, temperature and top_k must be ≥ 0 and top_p in (0, 1]")
        }
        let (model, tokenizer) = try load(o.model_dir)
        if !o.prompts.isEmpty { return try generateLines(request, model: model, tokenizer: tokenizer) }
        let (result, ids) = try generateOne(o.prompt, model: model, tokenizer: tokenizer, options: o, host: request.host, seed: request.host.seed)
        return Response(result: .object(result), tensors: [("tokens", Tensor(ids))])
    }

    /// `generate` over a file of prompts: each line in turn with the same options, into
    /// generations.jsonl (one object per prompt, sorted keys: prompt, text, generated_ids, and the
    /// kept neurons per layer when sparse). A prompt's sampling seed is the run's seed mixed with a
    /// hash of its text, so its generation does not depend on which other prompts share the call
    /// (the host's shards and chunks give the same lines).
    func generateLines(_ request: Request<Options>, model: DecoderLM, tokenizer: any TextTokenizer) throws -> Response {
        let o = request.options
        let prompts: [String]
        do { prompts = try FolderFiles.lines(o.prompts, option: "prompts") } catch { throw MenagerieError.invalidArgument("\(error)") }
        var text = "", generated = 0
        let t0 = Date()
        for (i, prompt) in prompts.enumerated() {
            try request.host.checkCancelled()
            var seed = request.host.seed ^ 0xcbf2_9ce4_8422_2325
            for b in prompt.utf8 { seed = (seed ^ UInt64(b)) &* 0x100_0000_01b3 }
            var one = o
            one.stream = false
            one.compare = false
            let (r, _) = try generateOne(prompt, model: model, tokenizer: tokenizer, options: one, host: request.host, seed: seed)
            var line: [String: JSONValue] = ["prompt": .string(prompt), "text": r["text"] ?? "", "generated_ids": r["generated_ids"] ?? []]
            if let kept = r["kept_neurons_per_layer"] { line["kept_neurons_per_layer"] = kept }
            if let core = r["core_neurons"] { line["core_neurons"] = core }
            text += JSONValue.object(line).compactText + "\n"
            generated += r["generated_ids"]?.arrayValue?.count ?? 0
            request.host.progress(i + 1, of: prompts.count, "generate")
        }
        let seconds = Date().timeIntervalSince(t0)
        try AtomicFile.write(text, to: request.host.scratchDirectory + "/generations.jsonl")
        return Response(
            result: [
                "mode": .string(o.mode), "prompts": .number(Double(prompts.count)), "generated_tokens": .number(Double(generated)),
                "seconds": .number(seconds), "tokens_per_s": .number(Double(generated) / max(seconds, 1e-9)), "generations": "generations.jsonl",
            ],
            artifacts: ["generations.jsonl"])
    }

    /// One prompt through prefill, core-neuron selection and decoding: the result object of
    /// `generate`, and the prompt's and generated token ids.
    func generateOne(
        _ prompt: String, model: DecoderLM, tokenizer: any TextTokenizer, options o: Options, host: PluginHost, seed: UInt64
    ) throws -> ([String: JSONValue], [Int64]) {
        let promptIDs = tokenizer.encode(prompt)
        guard !promptIDs.isEmpty else { throw MenagerieError.invalidArgument("the prompt encodes to no tokens") }
        guard promptIDs.count < model.config.maxPositions else {
            throw MenagerieError.invalidArgument(
                "the prompt has \(promptIDs.count) tokens; the model's context is \(model.config.maxPositions) (max_position_embeddings)")
        }
        let budget = min(o.max_new_tokens, model.config.maxPositions - promptIDs.count)
        let layers = convertedLayers(total: model.config.layers, start: o.start >= 0 ? o.start : nil, end: o.end >= 0 ? o.end : nil)
        defer { for l in 0..<model.config.layers { try? model.setSparse(layer: l, neurons: nil) } }

        // Prefill, densely, collecting the converted layers' FFN activations (and, for similarity, the
        // signature layer's signal: OPT's fc1 pre-activation, LLaMA's gate_proj output).
        let selection = o.mode == "similarity" ? try similaritySelection(o, model: model, layers: layers) : nil
        var activations: [Int: [Float]] = [:], signal: [Float] = []
        let signalFromGate = model.config.architecture == .llama
        model.activationHook = { l, a, _ in
            if layers.contains(l) { activations[l] = a }
            if !signalFromGate, l == selection?.layer { signal = a }
        }
        if signalFromGate, let s = selection { model.gateHook = { l, g, _ in if l == s.layer { signal = g } } }
        let cache = model.makeCache()
        let t0 = Date()
        var logits = try model.forward(promptIDs, cache: cache)
        let prefillSeconds = Date().timeIntervalSince(t0)
        (model.activationHook, model.gateHook) = (nil, nil)
        var core: [Int: [Int]] = [:]
        var clusterIndex: Int? = nil
        if let selection {
            // The nearest cluster's stored lists, whole (β does not apply online; Docs/methods/coreinfer.md).
            let c = selection.nearest(signal: signal, tokens: promptIDs.count, dff: model.config.intermediateSize).cluster
            clusterIndex = c
            for l in layers {
                guard let list = selection.clusters.neurons[c][l] else { continue }
                core[l] = list
                try model.setSparse(layer: l, neurons: list)
            }
        }
        if o.mode == "stability" {
            let dff = model.config.intermediateSize
            for l in layers {
                let neurons = sentenceCoreNeurons(activations[l]!, tokens: promptIDs.count, dff: dff, alpha: o.alpha, beta: o.beta)
                core[l] = neurons
                try model.setSparse(layer: l, neurons: neurons)
            }
        }
        var rng = SeededGenerator(seed: seed)
        let (generated, decodeSeconds, text) = try decode(
            model, tokenizer: tokenizer, cache: cache, first: logits, prompt: promptIDs, budget: budget,
            options: o, rng: &rng, stream: o.stream, host: host)
        var result: [String: JSONValue] = [
            "mode": .string(o.mode), "prompt_ids": .array(promptIDs.map { .number(Double($0)) }),
            "generated_ids": .array(generated.map { .number(Double($0)) }),
            "text": .string(text), "prefill_tokens_per_s": .number(Double(promptIDs.count) / max(prefillSeconds, 1e-9)),
            "decode_tokens_per_s": .number(Double(generated.count) / max(decodeSeconds, 1e-9)),
            "architecture": .string(model.config.architecture.rawValue),
        ]
        if let clusterIndex, let selection {
            result["cluster"] = .number(Double(clusterIndex))
            result["signature_layer"] = .number(Double(selection.layer))
        }
        if o.mode != "dense" {
            result["converted_layers"] = .array(layers.map { .number(Double($0)) })
            result["kept_neurons_per_layer"] = .object(Dictionary(uniqueKeysWithValues: core.map { ("\($0.key)", JSONValue.number(Double($0.value.count))) }))
            result["ffn_neurons"] = .number(Double(model.config.intermediateSize))
            if o.save_core {
                result["core_neurons"] = .object(
                    Dictionary(uniqueKeysWithValues: core.map { ("\($0.key)", JSONValue.array($0.value.map { .number(Double($0)) })) }))
            }
            if o.compare && !generated.isEmpty {
                // The same number of tokens, densely, from the same prefill state, greedy: speed and agreement.
                for l in layers { try model.setSparse(layer: l, neurons: nil) }
                let denseCache = model.makeCache()
                logits = try model.forward(promptIDs, cache: denseCache)
                var dense = o
                dense.temperature = 0
                dense.stop = []
                var denseRNG = SeededGenerator(seed: 0)
                let (denseIDs, denseSeconds, _) = try decode(
                    model, tokenizer: tokenizer, cache: denseCache, first: logits, prompt: promptIDs, budget: generated.count,
                    options: dense, rng: &denseRNG, stream: false, host: host)
                let denseRate = Double(denseIDs.count) / max(denseSeconds, 1e-9)
                result["dense_decode_tokens_per_s"] = .number(denseRate)
                result["speedup"] = .number((Double(generated.count) / max(decodeSeconds, 1e-9)) / max(denseRate, 1e-9))
                if o.temperature == 0 {
                    let agree = zip(generated, denseIDs).prefix { $0 == $1 }.count
                    result["greedy_agreement_prefix"] = .number(Double(agree))
                }
            }
        }
        return (result, (promptIDs + generated).map(Int64.init))
    }

    /// Samples up to `budget` tokens after `first` (the logits of the last prompt position).
    func decode(
        _ model: DecoderLM, tokenizer: any TextTokenizer, cache: DecoderLM.Cache, first: [Float], prompt: [Int32], budget: Int,
        options o: Options, rng: inout SeededGenerator, stream: Bool, host: PluginHost
    ) throws -> ([Int32], Double, String) {
        var logits = first, out: [Int32] = [], printed = ""
        let eos = Set(model.config.eosTokenIDs.map(Int32.init))
        let t0 = Date()
        for _ in 0..<budget {
            try host.checkCancelled()
            let id = sample(logits, options: o, rng: &rng)
            if eos.contains(id) { break }
            out.append(id)
            let text = tokenizer.decode(out, skipSpecial: true)
            if stream, !text.hasSuffix("\u{FFFD}"), text.count > printed.count, text.hasPrefix(printed) {
                host.emitText(String(text.dropFirst(printed.count)))
                printed = text
            }
            if o.stop.contains(where: { !$0.isEmpty && text.hasSuffix($0) }) { break }
            if out.count == budget { break }
            logits = try model.forward([id], cache: cache)
        }
        let seconds = Date().timeIntervalSince(t0)
        if stream && !printed.isEmpty { host.emitText("\n") }
        return (out, seconds, tokenizer.decode(out, skipSpecial: true))
    }

    /// Greedy at temperature 0; otherwise softmax(logits/T) restricted to the top k and the top-p
    /// nucleus (HF semantics: the smallest prefix of the sorted distribution reaching p, at least one).
    func sample(_ logits: [Float], options o: Options, rng: inout SeededGenerator) -> Int32 {
        if o.temperature == 0 { return Int32(logits.indices.max { logits[$0] < logits[$1] }!) }
        var order = logits.indices.sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if o.top_k > 0 { order = Array(order.prefix(o.top_k)) }
        let m = logits[order[0]]
        var p = order.map { Double(expf((logits[$0] - m) / Float(o.temperature))) }
        let z = p.reduce(0, +)
        p = p.map { $0 / z }
        if o.top_p < 1 {
            var cumulative = 0.0, keep = 0
            while keep < p.count {
                cumulative += p[keep]
                keep += 1
                if cumulative >= o.top_p { break }
            }
            order = Array(order.prefix(keep))
            p = Array(p.prefix(keep))
            let z2 = p.reduce(0, +)
            p = p.map { $0 / z2 }
        }
        var u = rng.nextUniform(), chosen = order.last!
        for (i, q) in p.enumerated() {
            u -= q
            if u <= 0 {
                chosen = order[i]
                break
            }
        }
        return Int32(chosen)
    }

    /// The model folder given, or the embedded one (`Resources/tiny-llama`, trained here by `train`
    /// on the embedded corpus).
    func load(_ given: String) throws -> (DecoderLM, any TextTokenizer) {
        let folder = given.isEmpty ? try PluginResources.path(module: "CoreInfer", item: "tiny-llama") : (given as NSString).expandingTildeInPath
        do {
            let model = try DecoderLM(folder: folder)
            // tokenizer.json: byte-level BPE or SentencePiece-style BPE (LLaMA-2); a lone tokenizer.model is refused.
            let tokenizer = try Tokenizers.load(folder: folder)
            let tokenizerPath = tokenizer.path
            // Every id the tokenizer can produce must index the model's embedding.
            guard tokenizer.vocabularySize <= model.config.vocabSize else {
                throw FormatError(
                    path: tokenizerPath, "has ids up to \(tokenizer.vocabularySize - 1), beyond the model's vocab_size \(model.config.vocabSize) (config.json)")
            }
            return (model, tokenizer)
        } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum CoreInferPlugin: Plugin {
    public static let name = "coreinfer"
    public static let version = "0.1.0"
    public static let summary = "CoreInfer: sparse LLM inference on sentence-level core neurons, with an OPT/LLaMA runtime"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [CoreInferComponent.self]
}
