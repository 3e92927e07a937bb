import Formats
import Foundation

/// What CoreInfer and the tests need of a text tokenizer: ids of a text and text of ids.
public protocol TextTokenizer: AnyObject, Sendable {
    var path: String { get }
    var vocabulary: [String: Int32] { get }
    var vocabularySize: Int { get }
    func encode(_ text: String, addSpecial: Bool) -> [Int32]
    func decode(_ ids: [Int32], skipSpecial: Bool) -> String
}

extension TextTokenizer {
    public func encode(_ text: String) -> [Int32] { encode(text, addSpecial: true) }
    public func decode(_ ids: [Int32]) -> String { decode(ids, skipSpecial: false) }
}

extension ByteLevelBPETokenizer: TextTokenizer {}

/// Chooses the tokenizer a Hugging Face `tokenizer.json` describes.
public enum Tokenizers {
    /// A byte-level BPE (a `ByteLevel` pre-tokenizer: GPT-2, OPT, LLaMA-3) or a SentencePiece-style
    /// BPE (LLaMA-2: Metaspace / Prepend+Replace, byte fallback); anything else is refused by the
    /// SentencePiece reader with the unsupported part named.
    public static func load(path: String) throws -> any TextTokenizer {
        let json = try SentencePieceBPETokenizer.parse(path)
        let pre = json["pre_tokenizer"]
        let steps = pre?["type"]?.stringValue == "Sequence" ? (pre?["pretokenizers"]?.arrayValue ?? []) : (pre.map { [$0] } ?? [])
        if steps.contains(where: { $0["type"]?.stringValue == "ByteLevel" }) { return try ByteLevelBPETokenizer(path: path) }
        return try SentencePieceBPETokenizer(json: json, path: path)
    }

    /// The tokenizer of a model folder: its tokenizer.json, or else SentencePiece's `tokenizer.model`
    /// (BPE or Unigram, read by `SentencePieceModelTokenizer`).
    public static func load(folder: String) throws -> any TextTokenizer {
        let json = folder + "/tokenizer.json", model = folder + "/tokenizer.model"
        if FileManager.default.fileExists(atPath: json) { return try load(path: json) }
        if FileManager.default.fileExists(atPath: model) { return try SentencePieceModelTokenizer.load(folder: folder) }
        throw FormatError(path: json, "is missing: the model folder needs its tokenizer.json (or SentencePiece's tokenizer.model)")
    }
}

/// A Hugging Face `tokenizer.json` with a BPE model over characters (LLaMA-2, Mistral, converted from
/// SentencePiece): added tokens split out first; normalizers `Prepend`, `Replace` (string patterns),
/// `Sequence`; the `Metaspace` pre-tokenizer (`prepend_scheme` always / first / never, `split`) or
/// none; BPE over Unicode scalars with `byte_fallback` (a scalar missing from the vocabulary → its
/// UTF-8 bytes as `<0xNN>` tokens), `unk_token` and `fuse_unk`, merges by rank; the
/// `TemplateProcessing` post-processor. Decoding runs the decoder chain `Replace`, `ByteFallback`
/// (a run of byte tokens that is not valid UTF-8 → one U+FFFD per byte, as tokenizers does), `Fuse`,
/// `Strip`, `Sequence`. Every field is read from the file; an unknown type is refused by name.
// @unchecked: every stored property is set in init and only read afterwards.
public final class SentencePieceBPETokenizer: @unchecked Sendable, TextTokenizer {
    enum Normalizer {
        case prepend(String)
        case replace(String, String)
    }
    enum Decoder {
        case replace(String, String)
        case byteFallback
        case fuse
        case strip(Character, start: Int, stop: Int)
    }
    enum PrependScheme { case always, first, never }
    struct Metaspace {
        var replacement: String
        var scheme: PrependScheme
        var split: Bool
    }

    public let path: String
    public private(set) var vocabulary: [String: Int32] = [:]
    public private(set) var tokens: [String] = []
    /// (content, id, special), longest first.
    public private(set) var added: [(content: String, id: Int32, special: Bool)] = []
    private var addedIDs: [Int32: Bool] = [:]
    private var merges = MergeTable()
    private var normalizers: [Normalizer] = []
    private var metaspace: Metaspace? = nil
    private var decoders: [Decoder] = []
    private var byteFallback = false, fuseUnk = false, ignoreMerges = false
    private var unkID: Int32? = nil
    private var byteIDs = [Int32](repeating: -1, count: 256)
    private var prefix: [Int32] = [], suffix: [Int32] = []

    public var vocabularySize: Int { tokens.count }

    static func parse(_ path: String) throws -> JSONValue {
        do { return try JSONValue.parse(try RegularFile.text(path, limit: 1 << 30), source: path) } catch let e as FormatError {
            throw e
        } catch { throw FormatError(path: path, "\(error)") }
    }

    public convenience init(path: String) throws { try self.init(json: try SentencePieceBPETokenizer.parse(path), path: path) }

    public init(json: JSONValue, path: String) throws {
        self.path = path
        guard let model = json["model"], model["type"]?.stringValue == "BPE" else {
            throw FormatError(path: path, "model.type must be BPE; got \(json["model"]?["type"]?.stringValue ?? "none") (only BPE tokenizers are supported)")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] where !(model[key] == nil || model[key] == .null || model[key] == "") {
            throw FormatError(path: path, "model.\(key) = \(model[key]!.compactText) is not supported")
        }
        if let d = model["dropout"], d != .null, d.doubleValue != 0 {
            throw FormatError(path: path, "model.dropout = \(d.compactText): BPE dropout is for training and is not supported")
        }
        byteFallback = model["byte_fallback"]?.boolValue ?? false
        fuseUnk = model["fuse_unk"]?.boolValue ?? false
        ignoreMerges = model["ignore_merges"]?.boolValue ?? false
        let table = try BPEVocabulary(json: json, model: model, path: path)
        (vocabulary, added, tokens) = (table.vocabulary, table.added, table.tokens)
        let size = tokens.count
        for a in added { addedIDs[a.id] = a.special }
        if let unk = model["unk_token"]?.stringValue {
            guard let id = vocabulary[unk] else { throw FormatError(path: path, "model.unk_token \"\(unk)\" is not in the vocabulary") }
            unkID = id
        }
        if byteFallback {
            var missing: [String] = []
            for b in 0..<256 {
                let name = SentencePieceBPETokenizer.byteToken(UInt8(b))
                if let id = vocabulary[name] { byteIDs[b] = id } else { missing.append(name) }
            }
            guard missing.isEmpty else {
                throw FormatError(
                    path: path,
                    "model.byte_fallback is true but the vocabulary lacks \(missing.count) of the 256 byte tokens (\(missing.prefix(4).joined(separator: ", "))…)"
                )
            }
        }
        for (rank, m) in (model["merges"]?.arrayValue ?? []).enumerated() {
            // "a b" (tokenizers < 0.20) or ["a", "b"].
            let pair: [String] =
                m.stringValue.map { $0.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init) }
                ?? (m.arrayValue?.compactMap(\.stringValue) ?? [])
            guard pair.count == 2, let a = vocabulary[pair[0]], let b = vocabulary[pair[1]], let merged = vocabulary[pair[0] + pair[1]] else {
                throw FormatError(path: path, "merge \(rank) (\(m.compactText)) names a token the vocabulary lacks")
            }
            merges.add(a, b, rank: rank, merged: merged)
        }
        normalizers = try SentencePieceBPETokenizer.readNormalizer(json["normalizer"], path: path)
        metaspace = try SentencePieceBPETokenizer.readPreTokenizer(json["pre_tokenizer"], path: path)
        decoders = try SentencePieceBPETokenizer.readDecoder(json["decoder"], path: path)
        if let post = json["post_processor"], post != .null {
            guard post["type"]?.stringValue == "TemplateProcessing", let single = post["single"]?.arrayValue else {
                throw FormatError(path: path, "post_processor type \(post["type"]?.compactText ?? "none") is not supported (only TemplateProcessing)")
            }
            var seenSequence = false
            for (k, piece) in single.enumerated() {
                if piece["Sequence"] != nil {
                    seenSequence = true
                    continue
                }
                guard let name = piece["SpecialToken"]?["id"]?.stringValue else {
                    throw FormatError(path: path, "post_processor.single[\(k)] is neither a Sequence nor a SpecialToken")
                }
                var special: [Int32]
                if let list = post["special_tokens"]?[name]?["ids"]?.arrayValue {
                    special = try list.enumerated().map { j, v in
                        Int32(try Limits.int(v, key: "post_processor.special_tokens[\"\(name)\"].ids[\(j)]", in: 0...(size - 1), source: path))
                    }
                } else if let id = vocabulary[name] {
                    special = [id]
                } else {
                    throw FormatError(path: path, "post_processor names the special token \"\(name)\", which has no ids and is not in the vocabulary")
                }
                if seenSequence { suffix += special } else { prefix += special }
            }
        }
    }

    static func byteToken(_ b: UInt8) -> String {
        let hex = String(b, radix: 16, uppercase: true)
        return "<0x" + (hex.count == 1 ? "0" + hex : hex) + ">"
    }

    static func pattern(_ v: JSONValue?, _ key: String, path: String) throws -> String {
        if let s = v?["String"]?.stringValue { return s }
        throw FormatError(path: path, "\(key).pattern = \(v?.compactText ?? "none"): only {\"String\": …} patterns are supported (not Regex)")
    }

    static func readNormalizer(_ v: JSONValue?, path: String, key: String = "normalizer") throws -> [Normalizer] {
        guard let v, v != .null else { return [] }
        switch v["type"]?.stringValue {
        case "Sequence":
            guard let list = v["normalizers"]?.arrayValue else { throw FormatError(path: path, "\(key): a Sequence needs its normalizers list") }
            return try list.enumerated().flatMap { k, n in try readNormalizer(n, path: path, key: "\(key).normalizers[\(k)]") }
        case "Prepend":
            guard let s = v["prepend"]?.stringValue else { throw FormatError(path: path, "\(key): Prepend needs its prepend string") }
            return [.prepend(s)]
        case "Replace":
            guard let content = v["content"]?.stringValue else { throw FormatError(path: path, "\(key): Replace needs its content string") }
            let p = try pattern(v["pattern"], key, path: path)
            guard !p.isEmpty else { throw FormatError(path: path, "\(key): Replace has an empty pattern") }
            return [.replace(p, content)]
        case let t:
            throw FormatError(path: path, "\(key) type \(t ?? "none") is not supported (supported: Prepend, Replace, Sequence)")
        }
    }

    static func readPreTokenizer(_ v: JSONValue?, path: String) throws -> Metaspace? {
        guard let v, v != .null else { return nil }
        var step = v
        if v["type"]?.stringValue == "Sequence" {
            let list = v["pretokenizers"]?.arrayValue ?? []
            guard list.count == 1 else {
                throw FormatError(path: path, "pre_tokenizer: a Sequence of \(list.count) pre-tokenizers is not supported (only a single Metaspace)")
            }
            step = list[0]
        }
        guard step["type"]?.stringValue == "Metaspace" else {
            throw FormatError(
                path: path, "pre_tokenizer type \(step["type"]?.stringValue ?? "none") is not supported here (supported: Metaspace, ByteLevel, none)")
        }
        guard let r = step["replacement"]?.stringValue, r.unicodeScalars.count == 1 else {
            throw FormatError(path: path, "pre_tokenizer: Metaspace needs a one-character replacement")
        }
        let scheme: PrependScheme
        switch step["prepend_scheme"]?.stringValue {
        case "always": scheme = .always
        case "first": scheme = .first
        case "never": scheme = .never
        case nil: scheme = (step["add_prefix_space"]?.boolValue ?? true) ? .always : .never // tokenizers < 0.15
        case let s?: throw FormatError(path: path, "pre_tokenizer: Metaspace prepend_scheme \"\(s)\" is not one of always, first, never")
        }
        return Metaspace(replacement: r, scheme: scheme, split: step["split"]?.boolValue ?? true)
    }

    static func readDecoder(_ v: JSONValue?, path: String, key: String = "decoder") throws -> [Decoder] {
        guard let v, v != .null else { return [] }
        switch v["type"]?.stringValue {
        case "Sequence":
            guard let list = v["decoders"]?.arrayValue else { throw FormatError(path: path, "\(key): a Sequence needs its decoders list") }
            return try list.enumerated().flatMap { k, d in try readDecoder(d, path: path, key: "\(key).decoders[\(k)]") }
        case "Replace":
            guard let content = v["content"]?.stringValue else { throw FormatError(path: path, "\(key): Replace needs its content string") }
            let p = try pattern(v["pattern"], key, path: path)
            guard !p.isEmpty else { throw FormatError(path: path, "\(key): Replace has an empty pattern") }
            return [.replace(p, content)]
        case "ByteFallback": return [.byteFallback]
        case "Fuse": return [.fuse]
        case "Strip":
            guard let c = v["content"]?.stringValue, c.count == 1, let ch = c.first else {
                throw FormatError(path: path, "\(key): Strip needs a one-character content")
            }
            let start = try Limits.int(v["start"], key: "\(key).start", in: 0...1_000_000, source: path)
            let stop = try Limits.int(v["stop"], key: "\(key).stop", in: 0...1_000_000, source: path)
            return [.strip(ch, start: start, stop: stop)]
        case let t:
            throw FormatError(path: path, "\(key) type \(t ?? "none") is not supported (supported: Replace, ByteFallback, Fuse, Strip, Sequence)")
        }
    }

    /// Ids of a text, with the post-processor's special tokens when `addSpecial`.
    public func encode(_ text: String, addSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = addSpecial ? prefix : []
        var rest = Substring(text)
        var first = true
        while !rest.isEmpty {
            // The earliest added token (longest at a position).
            var best: (range: Range<Substring.Index>, id: Int32)? = nil
            for a in added {
                if let r = rest.range(of: a.content), best == nil || r.lowerBound < best!.range.lowerBound { best = (r, a.id) }
            }
            let end = best?.range.lowerBound ?? rest.endIndex
            if end > rest.startIndex { out += encodeOrdinary(String(rest[rest.startIndex..<end]), atStart: first) }
            guard let b = best else { break }
            out.append(b.id)
            rest = rest[b.range.upperBound...]
            first = false
        }
        return out + (addSpecial ? suffix : [])
    }

    /// The merges of one word of ids by both algorithms, for tests: the queue must agree with the plain scan.
    public func mergedBothWays(_ symbols: [Int32]) -> (queued: [Int32], scanned: [Int32]) { (merges.applyQueued(symbols), merges.apply(symbols)) }

    /// A piece between added tokens: normalizers, Metaspace, BPE of each word.
    func encodeOrdinary(_ text: String, atStart: Bool) -> [Int32] {
        var s = text
        for n in normalizers {
            switch n {
            case .prepend(let p): if !s.isEmpty { s = p + s }
            case .replace(let p, let c): s = s.replacingOccurrences(of: p, with: c)
            }
        }
        guard let m = metaspace else { return bpe(s) }
        s = s.replacingOccurrences(of: " ", with: m.replacement)
        if !s.hasPrefix(m.replacement) && (m.scheme == .always || (m.scheme == .first && atStart)) { s = m.replacement + s }
        guard m.split else { return bpe(s) }
        // Each replacement character starts a new word (tokenizers' MergedWithNext).
        let r = m.replacement.unicodeScalars.first!
        var words: [String] = [], current = String.UnicodeScalarView()
        for c in s.unicodeScalars {
            if c == r && !current.isEmpty {
                words.append(String(current))
                current = String.UnicodeScalarView()
            }
            current.append(c)
        }
        if !current.isEmpty { words.append(String(current)) }
        return words.flatMap(bpe)
    }

    /// One word: each Unicode scalar's id, its UTF-8 byte tokens when missing and `byte_fallback`, or
    /// `unk_token` (consecutive ones fused when `fuse_unk`); then the merges.
    func bpe(_ word: String) -> [Int32] {
        if word.isEmpty { return [] }
        if ignoreMerges, let id = vocabulary[word] { return [id] }
        var symbols: [Int32] = []
        var pendingUnk = false
        for c in word.unicodeScalars {
            if let id = vocabulary[String(c)] {
                symbols.append(id)
                pendingUnk = false
            } else if byteFallback {
                for b in String(c).utf8 { symbols.append(byteIDs[Int(b)]) } // all 256 present (checked in init)
                pendingUnk = false
            } else if let unk = unkID {
                if !(fuseUnk && pendingUnk) { symbols.append(unk) }
                pendingUnk = true
            } // no unk_token: the character is dropped, as tokenizers does
        }
        return merges.applyQueued(symbols)
    }

    /// Text of ids through the decoder chain; special added tokens skipped when `skipSpecial`.
    public func decode(_ ids: [Int32], skipSpecial: Bool = false) -> String {
        var pieces: [String] = []
        for id in ids where id >= 0 && Int(id) < tokens.count {
            if skipSpecial, addedIDs[id] == true { continue }
            pieces.append(tokens[Int(id)])
        }
        for d in decoders {
            switch d {
            case .replace(let p, let c): pieces = pieces.map { $0.replacingOccurrences(of: p, with: c) }
            case .fuse: pieces = [pieces.joined()]
            case .strip(let c, let start, let stop):
                pieces = pieces.map { t in
                    let chars = Array(t)
                    var lo = 0, hi = chars.count
                    while lo < min(start, chars.count) && chars[lo] == c { lo += 1 }
                    var k = 0
                    while k < stop && hi > lo && chars[hi - 1] == c {
                        hi -= 1
                        k += 1
                    }
                    return String(chars[lo..<hi])
                }
            case .byteFallback:
                var out: [String] = [], run: [UInt8] = []
                func flush() {
                    guard !run.isEmpty else { return }
                    if let s = String(validating: run, as: UTF8.self) {
                        out.append(s)
                    } else {
                        out += Array(repeating: "\u{FFFD}", count: run.count)
                    }
                    run.removeAll()
                }
                for t in pieces {
                    let u = Array(t.utf8)
                    if u.count == 6, t.hasPrefix("<0x"), t.hasSuffix(">"), let b = UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16) {
                        run.append(b)
                    } else {
                        flush()
                        out.append(t)
                    }
                }
                flush()
                pieces = out
            }
        }
        return pieces.joined()
    }
}
