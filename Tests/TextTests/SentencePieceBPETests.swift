import Foundation
import TestSupport
import Testing
import Text

/// LLaMA-2's tokenizer.json (SentencePiece BPE converted by transformers: Metaspace, byte fallback,
/// Replace/ByteFallback/Fuse/Strip decoder) against `llama-spm-tiny/expected.json`, written by
/// make_fixture.py with transformers' fast tokenizer: ids of 4 prompts (runs of spaces, a tab, accents,
/// emoji and CJK through byte fallback), decode(encode) and the text of 16 greedy tokens (invalid
/// UTF-8 → U+FFFD).
@Suite struct SentencePieceBPETests {
    /// The fuzz seed for SentencePiece-style tokenizer.json (Fuzz/make_corpus.py) is a tokenizer the
    /// reader accepts, so the fuzzer mutates from a valid file: "ab a" → <s> ▁ab ▁a, and an unknown
    /// "é" falls back to its two UTF-8 byte tokens (<0xC3> = 3 + 0xC3, <0xA9> = 3 + 0xA9).
    @Test func fuzzSeedIsAValidTokenizer() throws {
        let tok = try Tokenizers.load(path: TestPaths.sourceRoot + "/Fuzz/Corpus/tokenizer/sentencepiece-bpe.json")
        #expect(tok is SentencePieceBPETokenizer)
        let v = tok.vocabulary
        let wordAB: Int32 = v["\u{2581}ab"]!, wordA: Int32 = v["\u{2581}a"]!, space: Int32 = v["\u{2581}"]!
        let expected: [Int32] = [1, wordAB, wordA], bytes: [Int32] = [space, 3 + 0xC3, 3 + 0xA9]
        #expect(tok.encode("ab a") == expected)
        #expect(tok.encode("é", addSpecial: false) == bytes)
        #expect(tok.decode(tok.encode("ab é"), skipSpecial: true) == "ab é")
    }

    struct Prompt: Decodable {
        let text: String
        let input_ids: [Int32]
        let greedy_16: [Int32]
        let greedy_text: String
        let round_trip: String
    }
    struct Expected: Decodable { let prompts: [Prompt] }
    let folder = TestPaths.fixtures + "/llama-spm-tiny"
    let dir = TempDir("spm-tokenizer")

    @Test func matchesTransformers() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/expected.json")))
        let t = try Tokenizers.load(folder: folder)
        #expect(t is SentencePieceBPETokenizer)
        #expect(expected.prompts.count == 4)
        for p in expected.prompts {
            #expect(t.encode(p.text, addSpecial: true) == p.input_ids, "ids of \(p.text.debugDescription)")
            #expect(t.decode(p.input_ids, skipSpecial: true) == p.round_trip, "round trip of \(p.text.debugDescription)")
            #expect(t.decode(p.greedy_16, skipSpecial: false) == p.greedy_text, "greedy text of \(p.text.debugDescription)")
        }
        // The fixture's prompts do cover byte fallback and invalid UTF-8 (so the checks above can fail).
        #expect(expected.prompts.contains { $0.input_ids.contains(t.vocabulary["<0xF0>"]!) })
        #expect(expected.prompts.contains { $0.greedy_text.contains("\u{FFFD}") })
    }

    /// The fixture's tokenizer.json with the other settings LLaMA-2 files use and its own (`variants.json`, written by
    /// make_variants.py with Hugging Face tokenizers 0.23.3): Metaspace `always` + `split`, `never`, and the
    /// legacy normalizer (Prepend + Replace, no pre-tokenizer), and `first` as it is; prompts with added tokens inside, runs of
    /// spaces, a lone space, the empty string, NBSP through byte fallback. Ids and both decodings equal.
    @Test func variantsMatchTokenizers() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/variants.json"))
        let root = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let variants = root["variants"] as! [[String: Any]]
        #expect(variants.count == 4)
        for v in variants {
            let name = v["name"] as! String
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/tokenizer.json"))) as! [String: Any]
            for (k, value) in v["change"] as! [String: Any] { json[k] = value }
            let path = dir.path + "/variant-" + name + ".json"
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            let t = try Tokenizers.load(path: path)
            for c in v["cases"] as! [[String: Any]] {
                let text = c["text"] as! String
                let ids = (c["input_ids"] as! [Int]).map(Int32.init)
                #expect(t.encode(text, addSpecial: true) == ids, "\(name): ids of \(text.debugDescription)")
                #expect(t.decode(ids, skipSpecial: false) == c["decoded"] as! String, "\(name): decode of \(text.debugDescription)")
                #expect(t.decode(ids, skipSpecial: true) == c["decoded_skip_special"] as! String, "\(name): decode (skip special) of \(text.debugDescription)")
            }
        }
    }

    /// Hand-built tokenizer.json: the legacy LLaMA-2 normalizer (Prepend "▁", Replace " " → "▁"), no
    /// pre-tokenizer, unk fused, and the Strip decoder. Expected ids worked out by hand below.
    @Test func legacyNormalizerAndFusedUnknown() throws {
        var vocab: [String: Int] = ["<unk>": 0, "<s>": 1, "▁": 2, "a": 3, "b": 4, "▁a": 5, "ab": 6, "▁ab": 7]
        for b in 0..<256 { vocab[String(format: "<0x%02X>", b)] = 8 + b }
        let json: [String: Any] = [
            "added_tokens": [["id": 0, "content": "<unk>", "special": true], ["id": 1, "content": "<s>", "special": true]],
            "normalizer": [
                "type": "Sequence", "normalizers": [["type": "Prepend", "prepend": "▁"], ["type": "Replace", "pattern": ["String": " "], "content": "▁"]],
            ],
            "pre_tokenizer": NSNull(),
            "post_processor": [
                "type": "TemplateProcessing", "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "special_tokens": ["<s>": ["id": "<s>", "ids": [1], "tokens": ["<s>"]]],
            ],
            "decoder": [
                "type": "Sequence",
                "decoders": [
                    ["type": "Replace", "pattern": ["String": "▁"], "content": " "], ["type": "ByteFallback"], ["type": "Fuse"],
                    ["type": "Strip", "content": " ", "start": 1, "stop": 0],
                ],
            ],
            "model": [
                "type": "BPE", "byte_fallback": false, "fuse_unk": true, "unk_token": "<unk>", "vocab": vocab,
                "merges": [["a", "b"], ["▁", "a"], ["▁", "ab"]],
            ],
        ]
        let path = dir.path + "/legacy.json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        let t = try SentencePieceBPETokenizer(path: path)
        // "ab ba": normalized "▁ab▁ba" → [▁ a b ▁ b a]; "a b" (rank 0) first → [▁ ab ▁ b a]; "▁ ab" (rank 2)
        // → [▁ab ▁ b a]; "▁ a" is not adjacent any more. Ids 1, 7, 2, 4, 3.
        #expect(t.encode("ab ba", addSpecial: true) == [1, 7, 2, 4, 3])
        // "a<s>a": Prepend applies to each piece between added tokens: "▁a" <s> "▁a".
        #expect(t.encode("a<s>a", addSpecial: false) == [5, 1, 5])
        // "axyb": x, y unknown → one fused <unk>.
        #expect(t.encode("axyb", addSpecial: false) == [5, 0, 4])
        #expect(t.decode([1, 7, 2, 4, 3], skipSpecial: true) == "ab ba")
        // Invalid UTF-8 (a lone lead byte) → one U+FFFD per byte of the run; a valid run → its text.
        #expect(t.decode([5, 8 + 0xC3, 8 + 0xC3, 3], skipSpecial: false) == "a\u{FFFD}\u{FFFD}a")
        #expect(t.decode([5, 8 + 0xC3, 8 + 0xA9], skipSpecial: false) == "aé")
    }

    /// The priority-queue merge (tokenizers' order, used by encode) against the plain rescanning merge
    /// (`MergeTable.apply`, the byte-level tokenizers'), on 300 random words of the fixture's single
    /// characters (lengths 2–400, seeded); and a 40,000-character prompt encodes in well under a second.
    @Test func queuedMergesEqualTheScanAndScale() throws {
        let t = try SentencePieceBPETokenizer(path: folder + "/tokenizer.json")
        let singles = t.vocabulary.filter { $0.key.unicodeScalars.count == 1 }.map(\.value).sorted()
        #expect(singles.count > 40)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(state >> 33)
        }
        var merged = 0
        for _ in 0..<300 {
            let word = (0..<(2 + next() % 399)).map { _ in singles[next() % singles.count] }
            let (queued, scanned) = t.mergedBothWays(word)
            #expect(queued == scanned)
            merged += word.count - queued.count
        }
        #expect(merged > 1000) // the words did merge
        let text = String(repeating: "Permission is hereby granted,  free of charge\tCafé 🦋 ", count: 800)
        let t0 = Date()
        let ids = t.encode(text, addSpecial: true)
        let seconds = Date().timeIntervalSince(t0)
        #expect(ids.count > 10_000 && seconds < 1, "\(text.count) characters → \(ids.count) ids in \(seconds) s")
        print("spm-bpe: \(text.count) characters → \(ids.count) ids in \(String(format: "%.3f", seconds)) s")
    }

    /// The fixture's JSON with `change` applied, written to a temporary file; the error message.
    func message(_ name: String, _ change: (inout [String: Any]) -> Void) throws -> String {
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/tokenizer.json"))) as! [String: Any]
        change(&json)
        let path = dir.path + "/" + name + ".json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        do {
            _ = try Tokenizers.load(path: path)
            return ""
        } catch { return String(describing: error) }
    }

    @Test func badFilesAreRefused() throws {
        let decoder = try message("decoder") { $0["decoder"] = ["type": "Sequence", "decoders": [["type": "WordPiece", "prefix": "##"]]] }
        #expect(decoder.contains("decoder.decoders[0] type WordPiece is not supported") && decoder.contains("decoder.json"), "\(decoder)")
        let normalizer = try message("normalizer") { $0["normalizer"] = ["type": "NFKC"] }
        #expect(normalizer.contains("normalizer type NFKC is not supported"), "\(normalizer)")
        let merge = try message("merge") { json in
            var model = json["model"] as! [String: Any]
            model["merges"] = [["▁", "t"], ["▁", "zzz-not-a-token"]]
            json["model"] = model
        }
        #expect(merge.contains("merge 1") && merge.contains("names a token the vocabulary lacks"), "\(merge)")
        let bytes = try message("bytes") { json in
            var model = json["model"] as! [String: Any]
            var vocab = model["vocab"] as! [String: Any]
            vocab["<0xF0>"] = nil
            vocab["<0x9F>"] = nil
            model["vocab"] = vocab
            json["model"] = model
        }
        #expect(bytes.contains("byte_fallback") && bytes.contains("lacks 2 of the 256 byte tokens") && bytes.contains("<0x9F>"), "\(bytes)")
    }

    /// A folder with only a tokenizer.model is read by SentencePieceModelTokenizer: this one (one empty piece) is refused by it.
    @Test func aFolderWithOnlyABrokenTokenizerModelIsRefused() throws {
        let sub = dir.path + "/spm-only"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        try Data([0x0A, 0x00]).write(to: URL(fileURLWithPath: sub + "/tokenizer.model"))
        var m = ""
        do { _ = try Tokenizers.load(folder: sub) } catch { m = String(describing: error) }
        #expect(m.contains("tokenizer.model") && m.contains("pieces[0] is empty"), "\(m)")
    }
}
