import Formats
import Foundation

/// A Hugging Face `tokenizer.json` with a byte-level BPE model (GPT-2, OPT, LLaMA-3 style):
/// added tokens split out first (longest match), the ByteLevel pre-tokenizer (optional prefix space,
/// GPT-2's split pattern), bytes mapped to the printable byte alphabet, BPE merges by rank (all
/// occurrences of the best pair, left to right), vocabulary ids; the post-processor's template
/// (special tokens around the sequence); decoding back through the byte alphabet, invalid UTF-8
/// replaced by U+FFFD.
// @unchecked: the `var`s are set only in init (read-only afterwards) except `cache`, which is touched only under `lock`.
public final class ByteLevelBPETokenizer: @unchecked Sendable {
    public let path: String
    public private(set) var vocabulary: [String: Int32] = [:]
    public private(set) var tokens: [String] = []
    /// (content, id, special), longest first.
    public private(set) var added: [(content: String, id: Int32, special: Bool)] = []
    private var merges = MergeTable()
    private var addPrefixSpace = false
    private var prefix: [Int32] = [], suffix: [Int32] = []
    private let byteSymbol: [Int32] // vocabulary id of each byte's symbol (−1 if absent)
    private let byteOfCharacter: [Character: UInt8]
    private var cache: [String: [Int32]] = [:]
    private let lock = NSLock()

    public var vocabularySize: Int { tokens.count }

    public init(path: String) throws {
        self.path = path
        let json: JSONValue
        do { json = try JSONValue.parse(try RegularFile.text(path, limit: 1 << 30), source: path) } catch let e as FormatError {
            throw e
        } catch { throw FormatError(path: path, "\(error)") }
        // Every id lies in 0 ..< 2^24 (Limits.vocabulary): the id table below is sized by the largest.
        guard let model = json["model"], model["type"]?.stringValue == "BPE" else {
            throw FormatError(path: path, "model.type must be BPE (byte-level); got \(json["model"]?["type"]?.stringValue ?? "none")")
        }
        if let pre = json["pre_tokenizer"], pre != .null {
            let steps = pre["type"]?.stringValue == "Sequence" ? (pre["pretokenizers"]?.arrayValue ?? []) : [pre]
            guard let byteLevel = steps.first(where: { $0["type"]?.stringValue == "ByteLevel" }) else {
                throw FormatError(path: path, "pre_tokenizer must include ByteLevel (got \(steps.compactMap { $0["type"]?.stringValue }))")
            }
            addPrefixSpace = byteLevel["add_prefix_space"]?.boolValue ?? false
        } else {
            throw FormatError(path: path, "has no pre_tokenizer: only byte-level BPE tokenizers are supported")
        }
        let table = try BPEVocabulary(json: json, model: model, path: path)
        (vocabulary, added, tokens) = (table.vocabulary, table.added, table.tokens)
        let size = tokens.count
        let alphabet = CLIPTokenizer.byteAlphabet(), order = CLIPTokenizer.byteOrder()
        var symbols = [Int32](repeating: -1, count: 256), bytes: [Character: UInt8] = [:]
        for (i, c) in alphabet.enumerated() {
            symbols[order[i]] = vocabulary[String(c)] ?? -1
            bytes[c] = UInt8(order[i])
        }
        byteSymbol = symbols
        byteOfCharacter = bytes
        for (rank, m) in (model["merges"]?.arrayValue ?? []).enumerated() {
            // "a b" (tokenizers < 0.20) or ["a", "b"].
            let pair: [String] =
                m.stringValue.map { $0.split(separator: " ", maxSplits: 1).map(String.init) } ?? (m.arrayValue?.compactMap(\.stringValue) ?? [])
            guard pair.count == 2, let a = vocabulary[pair[0]], let b = vocabulary[pair[1]], let merged = vocabulary[pair[0] + pair[1]] else {
                throw FormatError(path: path, "merge \(rank) (\(m.compactText)) names a token the vocabulary lacks")
            }
            merges.add(a, b, rank: rank, merged: merged)
        }
        // TemplateProcessing: special tokens before and after the single sequence.
        if let post = json["post_processor"], post["type"]?.stringValue == "TemplateProcessing", let single = post["single"]?.arrayValue {
            var seenSequence = false
            for piece in single {
                if piece["Sequence"] != nil {
                    seenSequence = true
                    continue
                }
                guard let name = piece["SpecialToken"]?["id"]?.stringValue else { continue }
                var special: [Int32] = vocabulary[name].map { [$0] } ?? []
                if let list = post["special_tokens"]?[name]?["ids"]?.arrayValue {
                    special = try list.enumerated().map { k, v in
                        Int32(try Limits.int(v, key: "post_processor.special_tokens[\"\(name)\"].ids[\(k)]", in: 0...(size - 1), source: path))
                    }
                }
                if seenSequence { suffix += special } else { prefix += special }
            }
        }
    }

    /// Ids of a text, with the post-processor's special tokens when `addSpecial`.
    public func encode(_ text: String, addSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = addSpecial ? prefix : []
        var rest = Substring(text)
        while !rest.isEmpty {
            // The earliest added token (longest at a position).
            var best: (range: Range<Substring.Index>, id: Int32)? = nil
            for a in added where !a.content.isEmpty {
                if let r = rest.range(of: a.content), best == nil || r.lowerBound < best!.range.lowerBound {
                    best = (r, a.id)
                }
            }
            let end = best?.range.lowerBound ?? rest.endIndex
            if end > rest.startIndex { out += encodeOrdinary(String(rest[rest.startIndex..<end])) }
            guard let b = best else { break }
            out.append(b.id)
            rest = rest[b.range.upperBound...]
        }
        return out + (addSpecial ? suffix : [])
    }

    func encodeOrdinary(_ text: String) -> [Int32] {
        let t = addPrefixSpace && !text.hasPrefix(" ") ? " " + text : text
        return ByteLevelBPETokenizer.split(t).flatMap(bpe)
    }

    /// GPT-2's pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    static func split(_ text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        func letter(_ c: Unicode.Scalar) -> Bool { c.isLetterCategory }
        func number(_ c: Unicode.Scalar) -> Bool { c.isNumberCategory }
        func space(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }
        func other(_ c: Unicode.Scalar) -> Bool { !space(c) && !letter(c) && !number(c) }
        var out: [String] = []
        func emit(_ a: Int, _ b: Int) { out.append(String(String.UnicodeScalarView(s[a..<b]))) }
        var i = 0
        scan: while i < s.count {
            if s[i] == "'" {
                for c in ["s", "t", "re", "ve", "m", "ll", "d"] {
                    let l = Array(c.unicodeScalars)
                    if i + 1 + l.count <= s.count && Array(s[(i + 1)..<(i + 1 + l.count)]) == l {
                        emit(i, i + 1 + l.count)
                        i += 1 + l.count
                        continue scan
                    }
                }
            }
            for cls in [letter, number, other] as [(Unicode.Scalar) -> Bool] {
                var j = i
                if s[j] == " " && j + 1 < s.count && cls(s[j + 1]) { j += 1 }
                if cls(s[j]) {
                    var k = j + 1
                    while k < s.count && cls(s[k]) { k += 1 }
                    emit(i, k)
                    i = k
                    continue scan
                }
            }
            // Whitespace: a run up to the end, or leaving its last character to the next piece.
            var k = i
            while k < s.count && space(s[k]) { k += 1 }
            if k == s.count || k - i == 1 {
                emit(i, k == s.count ? k : i + 1)
                i = k == s.count ? k : i + 1
            } else {
                emit(i, k - 1)
                i = k - 1
            }
        }
        return out
    }

    private func bpe(_ piece: String) -> [Int32] {
        lock.lock()
        if let hit = cache[piece] {
            lock.unlock()
            return hit
        }
        lock.unlock()
        let word = merges.apply(piece.utf8.map { byteSymbol[Int($0)] })
        lock.lock()
        if cache.count > 100_000 { cache.removeAll(keepingCapacity: true) }
        cache[piece] = word
        lock.unlock()
        return word
    }

    /// Text of ids: byte-level symbols back to bytes (invalid UTF-8 replaced), added tokens as their
    /// content (skipped when `skipSpecial` and special).
    public func decode(_ ids: [Int32], skipSpecial: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < tokens.count {
            if let a = added.first(where: { $0.id == id }) {
                if !(skipSpecial && a.special) { bytes += Array(a.content.utf8) }
                continue
            }
            for c in tokens[Int(id)] { if let b = byteOfCharacter[c] { bytes.append(b) } }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
