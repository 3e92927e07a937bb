import Foundation
import TestSupport
import Testing
import Text

/// Issue 19: every id of a tokenizer.json lies in 0 ..< 2^24 (Limits.vocabulary) before it sizes
/// the id table or becomes an Int32; a negative added-token id trapped, a vocab id of 3e9 asked for
/// a 16 GB table (and trapped in Int32()).
@Suite struct TokenizerLimitsTests {
    let dir = TempDir("tokenizer-limits")
    let fixture = TestPaths.fixtures + "/llama-tiny/tokenizer.json"

    /// The fixture with `change` applied to its JSON object, written to a temporary file.
    func variant(_ name: String, _ change: (inout [String: Any]) -> Void) throws -> String {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixture))) as! [String: Any]
        change(&json)
        let path = dir.path + "/" + name + ".json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return path
    }

    func message(_ path: String) -> String {
        do {
            _ = try ByteLevelBPETokenizer(path: path)
            return ""
        } catch { return String(describing: error) }
    }

    @Test func theFixtureStillLoads() throws {
        let t = try ByteLevelBPETokenizer(path: fixture)
        #expect(t.vocabularySize > 500)
    }

    @Test func negativeAddedTokenIDIsRefused() throws {
        let path = try variant("negative") { json in
            var added = json["added_tokens"] as! [[String: Any]]
            added[1]["id"] = -5
            json["added_tokens"] = added
        }
        let m = message(path)
        #expect(m.contains(path) && m.contains("'added_tokens[1].id' = -5 is out of range"), "\(m)")
    }

    @Test func vocabIDOf3e9IsRefused() throws {
        let path = try variant("huge") { json in
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Any]
            vocab["hello"] = 3e9
            model["vocab"] = vocab
            json["model"] = model
        }
        let m = message(path)
        #expect(m.contains("'model.vocab[\"hello\"]' = 3000000000 is out of range") && m.contains("0…16777215"), "\(m)")
    }

    @Test func fractionalIDIsRefused() throws {
        let path = try variant("fraction") { json in
            var added = json["added_tokens"] as! [[String: Any]]
            added[0]["id"] = 0.5
            json["added_tokens"] = added
        }
        let m = message(path)
        #expect(m.contains("'added_tokens[0].id' = 0.5 is not an integer"), "\(m)")
    }

    @Test func postProcessorIDOutsideTheVocabIsRefused() throws {
        let path = try variant("post") { json in
            json["post_processor"] = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "special_tokens": ["<s>": ["id": "<s>", "ids": [100000], "tokens": ["<s>"]]],
            ]
        }
        let m = message(path)
        #expect(m.contains("'post_processor.special_tokens[\"<s>\"].ids[0]' = 100000 is out of range: it must lie in 0…509"), "\(m)")
    }

    @Test func aFIFONamedTokenizerJSONIsRefused() throws {
        let path = dir.path + "/fifo-tokenizer.json"
        try #require(mkfifo(path, 0o600) == 0)
        #expect(message(path).contains("FIFO"))
    }
}
