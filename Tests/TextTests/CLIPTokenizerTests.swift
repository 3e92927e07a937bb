import Foundation
import TestSupport
import Testing
import Text

/// The CLIP tokenizer against open_clip's (Tests/Fixtures/clip-tokenizer/make_cases.py): unicode,
/// HTML entities, ligatures, fullwidth forms, contractions, truncation, the empty string.
@Suite struct CLIPTokenizerTests {
    static let vocabulary = TestPaths.sourceRoot + "/Plugins/BioCLIP2/Resources/bpe_simple_vocab_16e6.txt.gz"
    let tokenizer: CLIPTokenizer

    init() throws { tokenizer = try CLIPTokenizer(vocabulary: Self.vocabulary) }

    struct Case: Decodable {
        let text: String
        let ids: [Int64]
    }
    struct Cases: Decodable { let cases: [Case] }

    @Test func idsMatchOpenCLIPOnEveryCase() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/clip-tokenizer/cases.json"))
        let cases = try JSONDecoder().decode(Cases.self, from: data).cases
        #expect(cases.count == 30)
        let ours = tokenizer.tokenize(cases.map(\.text))
        for (c, ids) in zip(cases, ours) {
            #expect(ids == c.ids, "\(c.text.debugDescription): ours \(ids.prefix(while: { $0 != 0 })) vs \(c.ids.prefix(while: { $0 != 0 }))")
        }
    }

    @Test func vocabularyAndSpecialTokens() {
        #expect(tokenizer.vocabularySize == 49408)
        #expect(tokenizer.startOfText == 49406 && tokenizer.endOfText == 49407)
        // Empty text: [SOT, EOT] then padding.
        let empty = tokenizer.tokenize([""])[0]
        #expect(Array(empty.prefix(3)) == [49406, 49407, 0] && empty.count == 77)
        // Truncation keeps EOT last.
        let long = tokenizer.tokenize([String(repeating: "bird ", count: 200)])[0]
        #expect(long.count == 77 && long[76] == 49407 && !long.contains(0))
    }

    @Test func decodeInvertsEncodeOnCleanText() {
        let text = "a photo of geospiza fortis with common name medium ground finch."
        #expect(
            tokenizer.decode(tokenizer.encode(text)).trimmingCharacters(in: .whitespaces) == "a photo of geospiza fortis with common name medium ground finch ."
        )
    }

    @Test func badVocabularyFilesAreNamed() throws {
        let dir = TempDir("bpe")
        let path = dir.path + "/merges.txt"
        try "#version: 0.2\ni n\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try CLIPTokenizer(vocabulary: path) } throws: { "\($0)".contains("merges.txt") && "\($0)".contains("262,146") }
        let gz = dir.path + "/broken.txt.gz"
        try Data([0x1F, 0x8B, 0x08, 0x00, 0x01, 0x02]).write(to: URL(fileURLWithPath: gz))
        #expect { try CLIPTokenizer(vocabulary: gz) } throws: { "\($0)".contains("broken.txt.gz") }
    }
}
