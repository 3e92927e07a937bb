import Formats
import Foundation
import MenagerieKit
import NN
import Tensors
import Text

extension CoreInferComponent {
    /// `train`: a small LLaMA on a corpus (the embedded one by default) with the shipped byte-level
    /// BPE: the texts joined into one token stream, random windows of `context` tokens, next-token
    /// cross-entropy, AdamW (β 0.9/0.95, weight decay 0.1 on matrices), cosine schedule with warm-up.
    /// Writes a Hugging Face folder (config.json, model.safetensors, tokenizer.json) that `generate`
    /// and transformers read.
    func train(_ request: Request<Options>) throws -> Response {
        let o = request.options
        // Positivity first: `hidden % heads` with heads 0 would trap.
        for (key, value) in [
            ("hidden", o.hidden), ("layers", o.layers), ("heads", o.heads), ("kv_heads", o.kv_heads), ("ffn", o.ffn),
            ("max_positions", o.max_positions), ("steps", o.steps), ("batch", o.batch),
        ] where value <= 0 {
            throw MenagerieError.invalidArgument("option '\(key)' = \(value) must be positive")
        }
        guard o.hidden % o.heads == 0, o.heads % o.kv_heads == 0, o.context >= 8, o.context <= 1_048_576 else {
            throw MenagerieError.invalidArgument(
                "hidden (\(o.hidden)) must be a multiple of heads (\(o.heads)), heads of kv_heads (\(o.kv_heads)); context (\(o.context)) in 8…1048576")
        }
        let corpus = try loadCorpus(o)
        let tokenizerPath =
            o.tokenizer.isEmpty
            ? try PluginResources.path(module: "CoreInfer", item: "tiny-llama/tokenizer.json") : (o.tokenizer as NSString).expandingTildeInPath
        // Any tokenizer.json the runtime reads: byte-level BPE (OPT, LLaMA-3) or SentencePiece-style (LLaMA-2).
        let tokenizer: any TextTokenizer
        do { tokenizer = try Tokenizers.load(path: tokenizerPath) } catch let e as FormatError { throw MenagerieError.invalidArgument("tokenizer: \(e)") }
        let eos = tokenizer.vocabulary["</s>"].map(Int.init) ?? 1
        var stream: [Int] = []
        for t in corpus.topics { for text in t.texts { stream += tokenizer.encode(text).map(Int.init) + [eos] } }
        guard stream.count > o.context + 1 else {
            throw MenagerieError.invalidArgument("the corpus has \(stream.count) tokens: fewer than one window of \(o.context)")
        }
        let json: JSONValue = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": .number(Double(o.hidden)),
            "intermediate_size": .number(Double(o.ffn)), "num_hidden_layers": .number(Double(o.layers)),
            "num_attention_heads": .number(Double(o.heads)), "num_key_value_heads": .number(Double(o.kv_heads)),
            "head_dim": .number(Double(o.hidden / o.heads)), "max_position_embeddings": .number(Double(o.max_positions)), "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "vocab_size": .number(Double(tokenizer.vocabularySize)), "tie_word_embeddings": false,
            "bos_token_id": .number(Double(tokenizer.vocabulary["<s>"] ?? 0)), "eos_token_id": .number(Double(eos)), "hidden_act": "silu",
            "attention_bias": false, "mlp_bias": false, "torch_dtype": "float32",
        ]
        let config: DecoderConfig
        do { config = try DecoderConfig(json: json, path: "options of '\(Self.id)'") } catch let e as FormatError {
            throw MenagerieError.invalidArgument("\(e)")
        }
        let model = DecoderLM(config: config, seed: request.host.seed)
        for (name, p) in model.namedParameters { p.decays = p.shape.count >= 2 && !name.contains("norm") }
        let optimizer = AdamW(model.parameters, learningRate: Float(o.lr), beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        let schedule = Schedule.cosine(warmup: max(1, o.steps / 20), floor: 0.1)
        var rng = SeededGenerator(seed: request.host.seed &+ 1)
        var curve = "step,loss\n"
        var first = Double.nan, last = Double.nan
        let started = Date()
        for step in 0..<o.steps {
            try request.host.checkCancelled()
            var inputs: [[Int]] = [], targets: [Int] = []
            for _ in 0..<o.batch {
                let s = Int(rng.next() % UInt64(stream.count - o.context - 1))
                inputs.append(Array(stream[s..<(s + o.context)]))
                targets += stream[(s + 1)...(s + o.context)]
            }
            optimizer.learningRate = schedule.rate(base: Float(o.lr), step: step, total: o.steps)
            let logits = try model(inputs).reshaped([o.batch * o.context, config.vocabSize])
            let loss = crossEntropy(logits, labels: targets)
            optimizer.minimize(loss)
            let value = Double(loss.scalars[0])
            if step == 0 { first = value }
            last = value
            if step % 10 == 0 || step == o.steps - 1 {
                curve += "\(step),\(value)\n"
                request.host.record(step: step, ["loss": value])
            }
            request.host.progress(step + 1, of: o.steps, "loss \(String(format: "%.3f", value))")
        }
        let dir = request.host.scratchDirectory + "/model"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let dtype: DType = o.save_dtype == "f16" ? .float16 : .float32
        try model.save(to: dir + "/model.safetensors", metadata: ["format": "pt"], dtype: dtype)
        try AtomicFile.write(json.prettyText + "\n", to: dir + "/config.json")
        try FileManager.default.copyItem(atPath: tokenizerPath, toPath: dir + "/tokenizer.json")
        try AtomicFile.write(curve, to: request.host.scratchDirectory + "/curve.csv")
        return Response(
            result: [
                "steps": .number(Double(o.steps)), "first_loss": .number(first), "final_loss": .number(last),
                "corpus_tokens": .number(Double(stream.count)), "seconds": .number(Date().timeIntervalSince(started)),
                "parameters": .number(Double(model.parameters.reduce(0) { $0 + $1.shape.reduce(1, *) })),
            ],
            artifacts: ["model/config.json", "model/model.safetensors", "model/tokenizer.json", "curve.csv"])
    }
}
