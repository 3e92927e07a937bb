import Foundation
import Formats
import MenagerieKit
import NN
import Tensors

extension CoreInferComponent {
    static var inTour: Bool { true }

    /// A LLaMA-shaped model with seeded random weights (hidden 128, 4 layers, 8 heads over 4
    /// key-value heads, FFN 512, context 256) and the shipped byte-level BPE (512 tokens), written
    /// as a Hugging Face folder; then `generate` densely and on core neurons, and the analyses on the
    /// embedded corpus. The weights are random, so the text is noise: the tour shows the mechanics
    /// (core sets, gathered weights, speed, stability), not language.
    func tour(_ request: Request<Options>) throws -> Response {
        let dir = request.host.scratchDirectory + "/random-llama"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (d, layers, heads, kv, dff, vocab) = (128, 4, 8, 4, 512, 512)
        let config: JSONValue = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": .number(Double(d)), "intermediate_size": .number(Double(dff)),
            "num_hidden_layers": .number(Double(layers)), "num_attention_heads": .number(Double(heads)), "num_key_value_heads": .number(Double(kv)),
            "head_dim": .number(Double(d / heads)), "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "vocab_size": .number(Double(vocab)), "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 1, "hidden_act": "silu",
            "attention_bias": false, "mlp_bias": false,
        ]
        try AtomicFile.write(config.prettyText + "\n", to: dir + "/config.json")
        var rng = SeededGenerator(seed: 11)
        func normal(_ shape: [Int], std: Float = 0.02) throws -> Tensor {
            try Tensor((0..<shape.reduce(1, *)).map { _ in Float(rng.nextNormal()) * std }, shape: shape)
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
        try SafeTensors.write(tensors, to: dir + "/model.safetensors")
        try FileManager.default.copyItem(atPath: try PluginResources.path(module: "CoreInfer", item: "tokenizer.json"), toPath: dir + "/tokenizer.json")

        var o = Options()
        o.modelDir = dir
        o.prompt = "Permission is hereby granted, free of charge, to any person obtaining a copy of this software"
        o.maxNewTokens = 24
        o.stream = false
        o.saveCore = true
        // Every layer after the first is converted (the default window is 5/32…27/32 of the depth).
        o.start = 0
        o.end = layers
        let sparse = try generate(Request(options: o, inputs: request.inputs, host: request.host, component: Self.id, operation: "generate"))
        let analysis = try analyze(Request(options: o, inputs: request.inputs, host: request.host, component: Self.id, operation: "analyze"))
        try FileManager.default.removeItem(atPath: dir)
        var result = analysis.result.objectValue ?? [:]
        for key in ["speedup", "decode_tokens_per_s", "dense_decode_tokens_per_s", "prefill_tokens_per_s", "greedy_agreement_prefix", "kept_neurons_per_layer"] {
            result["generate_" + key] = sparse.result[key]
        }
        result["note"] = "random weights: the text is noise; see Docs/methods/coreinfer.md"
        return Response(result: .object(result), tensors: sparse.tensors, artifacts: analysis.artifacts)
    }
}
