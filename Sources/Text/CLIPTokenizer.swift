import Formats
import Foundation
import Synchronization

/// The OpenAI CLIP tokenizer (open_clip's `SimpleTokenizer`, "lower" cleaning): byte-level BPE over
/// the merges of `bpe_simple_vocab_16e6.txt.gz`.
///
/// encode(text):
///   1. clean: `TextCleaner.fixText` (ftfy's fixes except mojibake repair), HTML entities unescaped
///      twice, whitespace runs collapsed to one space, trimmed, lower-cased;
///   2. split by the pattern `<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`
///      (first alternative that matches at each position; whitespace between pieces is dropped);
///   3. each piece's UTF-8 bytes mapped to GPT-2's printable byte alphabet, the last symbol marked
///      with `</w>`, then merged pair by pair, lowest merge rank first, all occurrences left to right;
///   4. ids: 256 byte symbols, the same with `</w>`, one per merge in file order, then
///      `<start_of_text>` (49406) and `<end_of_text>` (49407).
/// tokenize(texts): [SOT] + ids + [EOT], truncated to the context length with EOT kept last,
/// zero-padded.
/// Sendable: immutable after init but for the word cache, which is a Mutex.
public final class CLIPTokenizer: Sendable {
    public let vocabularySize: Int
    public let startOfText: Int32
    public let endOfText: Int32
    public let contextLength: Int

    private let merges: MergeTable
    private let decoderTable: [String]
    private let byteOfCharacter: [Character: UInt8]
    private let cache = Mutex<[String: [Int32]]>([:])

    /// `path`: `bpe_simple_vocab_16e6.txt.gz` (or the uncompressed text).
    public init(vocabulary path: String, contextLength: Int = 77) throws {
        let data = path.hasSuffix(".gz") ? try Gzip.read(path: path) : try RegularFile.read(path)
        guard let text = String(data: data, encoding: .utf8), !text.isEmpty else { throw FormatError(path: path, "not a UTF-8 BPE merges file") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        // open_clip keeps lines 1 ..< 49152 − 256 − 2 + 1 (the first is a version header).
        let count = 49152 - 256 - 2
        guard lines.count > count else { throw FormatError(path: path, "has \(lines.count) lines; the CLIP merges file has 262,146") }
        let alphabet = CLIPTokenizer.byteAlphabet()
        var vocab = alphabet.map { String($0) }
        vocab += alphabet.map { String($0) + "</w>" }
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(count)
        for line in lines[1...count] {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { throw FormatError(path: path, "merge line '\(line)' is not two symbols") }
            pairs.append((String(parts[0]), String(parts[1])))
            vocab.append(String(parts[0]) + String(parts[1]))
        }
        vocab += ["<start_of_text>", "<end_of_text>"]
        var index: [String: Int32] = [:]
        index.reserveCapacity(vocab.count)
        for (i, v) in vocab.enumerated() { index[v] = Int32(i) } // later duplicates win, as dict(zip(...))
        var table = MergeTable()
        for (rank, (a, b)) in pairs.enumerated() {
            guard let ia = index[a], let ib = index[b], let merged = index[a + b] else {
                throw FormatError(path: path, "merge '\(a) \(b)' uses a symbol that no earlier line defines")
            }
            table.add(ia, ib, rank: rank, merged: merged)
        }
        merges = table
        decoderTable = vocab
        var bytes: [Character: UInt8] = [:]
        for (b, c) in alphabet.enumerated() { bytes[c] = UInt8(CLIPTokenizer.byteOrder()[b]) }
        byteOfCharacter = bytes
        vocabularySize = vocab.count
        startOfText = index["<start_of_text>"]!
        endOfText = index["<end_of_text>"]!
        self.contextLength = contextLength
    }

    /// GPT-2's bytes_to_unicode order: the printable bytes first (! … ~, ¡ … ¬, ® … ÿ), then the
    /// others, which map to U+0100 onwards.
    static func byteOrder() -> [Int] {
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        for b in 0..<256 where !bs.contains(b) { bs.append(b) }
        return bs
    }

    /// The unicode character of each entry of `byteOrder()`.
    static func byteAlphabet() -> [Character] {
        let printable = Set(Array(33...126) + Array(161...172) + Array(174...255))
        var n = 0
        return byteOrder().map { b in
            if printable.contains(b) { return Character(Unicode.Scalar(UInt8(b))) }
            defer { n += 1 }
            return Character(Unicode.Scalar(UInt32(256 + n))!)
        }
    }

    /// Position of byte b in `byteOrder()` (the symbol id of byte b).
    private static let idOfByte: [Int32] = {
        var ids = [Int32](repeating: 0, count: 256)
        for (i, b) in byteOrder().enumerated() { ids[b] = Int32(i) }
        return ids
    }()

    /// The BPE ids of a text (no start/end tokens).
    public func encode(_ text: String) -> [Int32] {
        var out: [Int32] = []
        for piece in CLIPTokenizer.pieces(of: CLIPTokenizer.clean(text)) {
            if piece == "<start_of_text>" {
                out.append(startOfText)
                continue
            }
            if piece == "<end_of_text>" {
                out.append(endOfText)
                continue
            }
            out += bpe(piece)
        }
        return out
    }

    /// [texts.count × contextLength] ids as Int64 (open_clip's `tokenize`).
    public func tokenize(_ texts: [String], contextLength: Int? = nil) -> [[Int64]] {
        let length = contextLength ?? self.contextLength
        return texts.map { text in
            var ids = [startOfText] + encode(text) + [endOfText]
            if ids.count > length {
                ids = Array(ids.prefix(length))
                ids[length - 1] = endOfText
            }
            return ids.map(Int64.init) + [Int64](repeating: 0, count: length - ids.count)
        }
    }

    /// Text of ids (`</w>` becomes a space; invalid UTF-8 replaced), as open_clip's `decode`.
    public func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < decoderTable.count {
            let symbol = decoderTable[Int(id)]
            if id == startOfText || id == endOfText {
                bytes += Array(symbol.utf8)
                continue
            }
            var s = symbol
            var marked = false
            if s.hasSuffix("</w>") {
                s.removeLast(4)
                marked = true
            }
            for c in s { if let b = byteOfCharacter[c] { bytes.append(b) } }
            if marked { bytes.append(0x20) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func bpe(_ piece: String) -> [Int32] {
        if let hit = cache.withLock({ $0[piece] }) { return hit }
        let utf8 = Array(piece.utf8)
        guard !utf8.isEmpty else { return [] }
        var word = utf8.map { CLIPTokenizer.idOfByte[Int($0)] }
        word[word.count - 1] += 256 // the `</w>` form
        word = merges.apply(word)
        let merged = word
        cache.withLock { cache in
            if cache.count > 100_000 { cache.removeAll(keepingCapacity: true) }
            cache[piece] = merged
        }
        return word
    }

    // MARK: Cleaning and splitting

    /// open_clip's "lower" cleaning: fix_text, html.unescape twice, trim, collapse whitespace, lower.
    public static func clean(_ text: String) -> String {
        var t = TextCleaner.fixText(text)
        t = TextCleaner.unescapeHTML(TextCleaner.unescapeHTML(t))
        let words = t.unicodeScalars.split(whereSeparator: TextCleaner.isPythonSpace)
        return words.map { String(String.UnicodeScalarView($0)) }.joined(separator: " ").lowercased()
    }

    /// The regex's pieces, scanning unicode scalars as Python's `regex` does.
    static func pieces(of text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        var out: [String] = []
        func isLetter(_ c: Unicode.Scalar) -> Bool { c.isLetterCategory }
        func isNumber(_ c: Unicode.Scalar) -> Bool { c.isNumberCategory }
        func matches(_ literal: String, at i: Int) -> Bool {
            let l = Array(literal.unicodeScalars)
            guard i + l.count <= s.count else { return false }
            for j in 0..<l.count where String(s[i + j]).lowercased() != String(l[j]) { return false }
            return true
        }
        var i = 0
        let literals = ["<start_of_text>", "<end_of_text>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
        scan: while i < s.count {
            for literal in literals where matches(literal, at: i) {
                let n = literal.unicodeScalars.count
                out.append(String(String.UnicodeScalarView(s[i..<(i + n)])))
                i += n
                continue scan
            }
            let c = s[i]
            if isLetter(c) {
                var j = i + 1
                while j < s.count && isLetter(s[j]) { j += 1 }
                out.append(String(String.UnicodeScalarView(s[i..<j])))
                i = j
            } else if isNumber(c) {
                out.append(String(c))
                i += 1
            } else if TextCleaner.isRegexSpace(c) {
                i += 1
            } else {
                var j = i + 1
                while j < s.count && !isLetter(s[j]) && !isNumber(s[j]) && !TextCleaner.isRegexSpace(s[j]) { j += 1 }
                out.append(String(String.UnicodeScalarView(s[i..<j])))
                i = j
            }
        }
        return out
    }
}
