import Formats
import Foundation
import NN
import TestSupport
import Testing
import Text

/// OPT and LLaMA against transformers 5.24 (`opt-tiny`, `llama-tiny`: random weights, a byte-level
/// BPE trained on MIT-licence text): token ids exact, last logits within 1e-4, the per-position
/// logit sums within 1e-3, 16 greedy tokens and their text equal.
@Suite struct DecoderLMTests {
    struct Prompt: Decodable {
        let text: String
        let input_ids: [Int32]
        let last_logits: [Float]
        let logits_sum_per_position: [Float]
        let greedy_16: [Int32]
        let greedy_text: String
    }
    struct Expected: Decodable { let prompts: [Prompt] }

    @Test(arguments: ["opt-tiny", "llama-tiny"])
    func matchesTransformers(_ name: String) throws {
        let folder = TestPaths.fixtures + "/" + name
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/expected.json")))
        let tokenizer = try ByteLevelBPETokenizer(path: folder + "/tokenizer.json")
        let model = try DecoderLM(folder: folder)
        let v = model.config.vocabSize
        #expect(expected.prompts.count == 3)
        for p in expected.prompts {
            let ids = tokenizer.encode(p.text)
            #expect(ids == p.input_ids, "\(name): ids of \(p.text.debugDescription)")
            let logits = try model.forward(p.input_ids, cache: model.makeCache(), allLogits: true)
            let t = p.input_ids.count
            let last = Array(logits[((t - 1) * v)..<(t * v)])
            let err = zip(last, p.last_logits).map { abs($0 - $1) }.max()!
            #expect(err < 1e-4, "\(name): last logits max |Δ| \(err)")
            let sums = (0..<t).map { i in logits[(i * v)..<((i + 1) * v)].reduce(0, +) }
            let sumErr = zip(sums, p.logits_sum_per_position).map { abs($0 - $1) }.max()!
            #expect(sumErr < 1e-3, "\(name): per-position logit sums max |Δ| \(sumErr)")
            // Greedy decoding with the cache: one prefill, then one token at a time.
            let cache = model.makeCache()
            var out: [Int32] = []
            var next = try model.forward(p.input_ids, cache: cache)
            for _ in 0..<16 {
                let id = Int32(next.indices.max { next[$0] < next[$1] }!)
                out.append(id)
                next = try model.forward([id], cache: cache)
            }
            #expect(out == p.greedy_16, "\(name): greedy tokens")
            #expect(tokenizer.decode(out) == p.greedy_text, "\(name): greedy text")
        }
    }

    /// LLaMA-2-style: SentencePiece BPE tokenizer.json (byte fallback) and a random LlamaForCausalLM
    /// (`llama-spm-tiny`, make_fixture.py): ids, 16 greedy tokens and their text (U+FFFD for invalid
    /// bytes) equal transformers'.
    @Test func llamaWithSentencePieceTokenizerMatchesTransformers() throws {
        struct P: Decodable {
            let text: String
            let input_ids: [Int32]
            let greedy_16: [Int32]
            let greedy_text: String
        }
        struct E: Decodable { let prompts: [P] }
        let folder = TestPaths.fixtures + "/llama-spm-tiny"
        let expected = try JSONDecoder().decode(E.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/expected.json")))
        let tokenizer = try Tokenizers.load(folder: folder)
        let model = try DecoderLM(folder: folder)
        #expect(expected.prompts.count == 4)
        for p in expected.prompts {
            let ids = tokenizer.encode(p.text, addSpecial: true)
            #expect(ids == p.input_ids, "ids of \(p.text.debugDescription)")
            let out = try BF16ModelTests.run(model, ids).greedy
            #expect(out == p.greedy_16, "greedy tokens of \(p.text.debugDescription)")
            #expect(tokenizer.decode(out, skipSpecial: false) == p.greedy_text, "greedy text of \(p.text.debugDescription)")
        }
    }

    @Test func contextOverflowAndBadIdsAreRefused() throws {
        let model = try DecoderLM(folder: TestPaths.fixtures + "/llama-tiny")
        #expect { try model.forward([Int32](repeating: 5, count: model.config.maxPositions + 1), cache: model.makeCache()) } throws: {
            "\($0)".contains("exceed the model's context")
        }
        #expect(throws: FormatError.self) { try model.forward([Int32(model.config.vocabSize)], cache: model.makeCache()) }
    }
}
