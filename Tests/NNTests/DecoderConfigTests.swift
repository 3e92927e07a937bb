import Formats
import Foundation
import NN
import TestSupport
import Testing

/// Hugging Face `config.json` of the two decoder families, as transformers 5 writes them
/// (copied from ../shared/fixtures/{opt,llama}-tiny), and the v4 spellings and bad files.
@Suite struct DecoderConfigTests {
    let hf = TestPaths.fixtures + "/hf/"

    @Test func readsOPT() throws {
        let c = try DecoderConfig.load(path: hf + "opt-tiny-config.json")
        #expect(c.architecture == .opt && c.vocabSize == 512 && c.hiddenSize == 64 && c.layers == 3 && c.heads == 4)
        #expect(c.keyValueHeads == 4 && c.headDim == 16 && c.intermediateSize == 256 && c.maxPositions == 256)
        #expect(c.activation == .relu && c.layerNormBefore && c.wordEmbedProjDim == 64 && c.tieWordEmbeddings)
        #expect(c.attentionBias && c.mlpBias && c.bosTokenID == 0 && c.eosTokenIDs == [1] && c.padTokenID == 1 && c.dtype == "float32")
    }

    @Test func readsLLaMA() throws {
        let c = try DecoderConfig.load(path: hf + "llama-tiny-config.json")
        #expect(c.architecture == .llama && c.heads == 4 && c.keyValueHeads == 2 && c.headDim == 16 && c.intermediateSize == 192)
        #expect(c.activation == .silu && c.normEps == 1e-5 && c.ropeTheta == 10_000 && !c.tieWordEmbeddings)
        #expect(!c.attentionBias && !c.mlpBias && c.padTokenID == nil && c.eosTokenIDs == [1])
    }

    func parse(_ text: String) throws -> DecoderConfig { try DecoderConfig(json: JSONValue.parse(text, source: "t.json"), path: "t.json") }

    @Test func transformersV4SpellingsAndDefaults() throws {
        // rope_theta at the top level, eos as a list, head_dim and num_key_value_heads absent.
        let c = try parse(
            """
            {"model_type": "llama", "vocab_size": 100, "hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 6,
             "intermediate_size": 200, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
             "eos_token_id": [7, 9], "hidden_act": "silu"}
            """)
        #expect(c.ropeTheta == 500_000 && c.eosTokenIDs == [7, 9] && c.headDim == 16 && c.keyValueHeads == 6 && c.normEps == 1e-6)
        let opt = try parse(
            """
            {"model_type": "opt", "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "ffn_dim": 64, "max_position_embeddings": 16, "word_embed_proj_dim": 16, "do_layer_norm_before": false,
             "activation_function": "gelu_new"}
            """)
        #expect(opt.wordEmbedProjDim == 16 && !opt.layerNormBefore && opt.activation == .geluTanh)
    }

    @Test func badConfigsNameTheKey() throws {
        func message(_ text: String) -> String {
            do {
                _ = try parse(text)
                return ""
            } catch { return "\(error)" }
        }
        let base = #""vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 8"#
        #expect(message(#"{"model_type": "gpt2", \#(base)}"#).contains("model_type 'gpt2' is not supported"))
        #expect(message(#"{"model_type": "llama", \#(base), "rms_norm_eps": 1e-5}"#).contains("'intermediate_size'"))
        #expect(message(#"{"model_type": "llama", \#(base), "intermediate_size": 4}"#).contains("'rms_norm_eps'"))
        #expect(
            message(#"{"model_type": "llama", \#(base), "intermediate_size": 4, "rms_norm_eps": 1e-5, "num_key_value_heads": 3}"#)
                .contains("not a multiple of num_key_value_heads 3"))
        #expect(
            message(#"{"model_type": "llama", \#(base), "intermediate_size": 4, "rms_norm_eps": 1e-5, "rope_scaling": {"rope_type": "yarn"}}"#)
                .contains("RoPE type 'yarn'"))
        #expect(message(#"{"model_type": "opt", \#(base), "ffn_dim": -4}"#).contains("'ffn_dim' = -4 is out of range"))
        #expect(throws: FormatError.self) { try DecoderConfig.load(path: "/nonexistent/config.json") }
    }
}
