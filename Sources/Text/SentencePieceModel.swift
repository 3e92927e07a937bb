import Formats
import Foundation

/// The parts of sentencepiece's `ModelProto` (sentencepiece_model.proto) that encoding and decoding
/// use, read with `ProtobufReader`. Field numbers: ModelProto pieces 1, trainer_spec 2,
/// normalizer_spec 3, denormalizer_spec 5; SentencePiece piece 1, score 2, type 3; TrainerSpec
/// model_type 3, vocab_size 4, treat_whitespace_as_suffix 24, split_digits 25,
/// allow_whitespace_only_pieces 26, byte_fallback 35, unk/bos/eos/pad_id 40–43, unk_surface 44,
/// unk/bos/eos/pad_piece 45–48; NormalizerSpec name 1, precompiled_charsmap 2, add_dummy_prefix 3,
/// remove_extra_whitespaces 4, escape_whitespaces 5. Other fields are skipped.
public struct SentencePieceModelProto: Sendable {
    public enum PieceType: Int32, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }
    public struct Piece: Sendable {
        public var piece = ""
        public var score: Float = 0
        public var type = PieceType.normal
    }
    public enum ModelType: Int32, Sendable {
        case unigram = 1, bpe = 2, word = 3, char = 4
        var name: String { ["", "UNIGRAM", "BPE", "WORD", "CHAR"][Int(rawValue)] }
    }
    public struct TrainerSpec: Sendable {
        public var modelType = ModelType.unigram
        public var vocabSize: Int32 = 8000
        public var byteFallback = false
        public var unkID: Int32 = 0, bosID: Int32 = 1, eosID: Int32 = 2, padID: Int32 = -1
        public var unkPiece = "<unk>", bosPiece = "<s>", eosPiece = "</s>", padPiece = "<pad>"
        public var unkSurface = " \u{2047} "
        public var splitDigits = false, treatWhitespaceAsSuffix = false, allowWhitespaceOnlyPieces = false
    }
    public struct NormalizerSpec: Sendable {
        public var name = ""
        public var precompiledCharsmap: [UInt8] = []
        public var addDummyPrefix = true, removeExtraWhitespaces = true, escapeWhitespaces = true
    }

    public var pieces: [Piece] = []
    public var trainer = TrainerSpec()
    public var normalizer = NormalizerSpec()
    public var denormalizer: NormalizerSpec? = nil

    public init(bytes: [UInt8], path: String) throws {
        var r = ProtobufReader(bytes: bytes, range: 0..<bytes.count, path: path, context: "ModelProto")
        while let (field, v) = try r.next() {
            switch field {
            case 1:
                guard pieces.count < Limits.vocabulary.upperBound else { throw r.fail("more than \(Limits.vocabulary.upperBound) pieces") }
                pieces.append(try Self.piece(r.message(v, "pieces[\(pieces.count)]")))
            case 2: trainer = try Self.trainer(r.message(v, "trainer_spec"), into: trainer)
            case 3: normalizer = try Self.normalizer(r.message(v, "normalizer_spec"), into: normalizer)
            case 5: denormalizer = try Self.normalizer(r.message(v, "denormalizer_spec"), into: denormalizer ?? NormalizerSpec())
            default: break
            }
        }
    }

    static func piece(_ reader: ProtobufReader) throws -> Piece {
        var r = reader, p = Piece()
        while let (field, v) = try r.next() {
            switch field {
            case 1: p.piece = try r.string(v, "piece")
            case 2: p.score = try r.float(v, "score")
            case 3:
                let t = try r.int32(v, "type")
                guard let type = PieceType(rawValue: t) else { throw r.fail("type \(t) is not a SentencePiece piece type (1…6)") }
                p.type = type
            default: break
            }
        }
        return p
    }

    static func trainer(_ reader: ProtobufReader, into spec: TrainerSpec) throws -> TrainerSpec {
        var r = reader, s = spec
        while let (field, v) = try r.next() {
            switch field {
            case 3:
                let t = try r.int32(v, "model_type")
                guard let m = ModelType(rawValue: t) else { throw r.fail("model_type \(t) is not one of UNIGRAM (1), BPE (2), WORD (3), CHAR (4)") }
                s.modelType = m
            case 4: s.vocabSize = try r.int32(v, "vocab_size")
            case 24: s.treatWhitespaceAsSuffix = try r.bool(v, "treat_whitespace_as_suffix")
            case 25: s.splitDigits = try r.bool(v, "split_digits")
            case 26: s.allowWhitespaceOnlyPieces = try r.bool(v, "allow_whitespace_only_pieces")
            case 35: s.byteFallback = try r.bool(v, "byte_fallback")
            case 40: s.unkID = try r.int32(v, "unk_id")
            case 41: s.bosID = try r.int32(v, "bos_id")
            case 42: s.eosID = try r.int32(v, "eos_id")
            case 43: s.padID = try r.int32(v, "pad_id")
            case 44: s.unkSurface = try r.string(v, "unk_surface")
            case 45: s.unkPiece = try r.string(v, "unk_piece")
            case 46: s.bosPiece = try r.string(v, "bos_piece")
            case 47: s.eosPiece = try r.string(v, "eos_piece")
            case 48: s.padPiece = try r.string(v, "pad_piece")
            default: break
            }
        }
        return s
    }

    static func normalizer(_ reader: ProtobufReader, into spec: NormalizerSpec) throws -> NormalizerSpec {
        var r = reader, s = spec
        while let (field, v) = try r.next() {
            switch field {
            case 1: s.name = try r.string(v, "name")
            case 2: s.precompiledCharsmap = Array(r.bytes[try r.range(v, "precompiled_charsmap")])
            case 3: s.addDummyPrefix = try r.bool(v, "add_dummy_prefix")
            case 4: s.removeExtraWhitespaces = try r.bool(v, "remove_extra_whitespaces")
            case 5: s.escapeWhitespaces = try r.bool(v, "escape_whitespaces")
            default: break
            }
        }
        return s
    }
}

/// sentencepiece's precompiled normalization rules (`precompiled_charsmap`, e.g. nmt_nfkc): a
/// little-endian u32 byte size of a darts-clone double-array trie, the trie's 32-bit units, then a
/// blob of NUL-terminated replacement strings the trie's values point into. The longest rule matching
/// a prefix of the input wins (sentencepiece's `Normalizer::NormalizePrefix`). Every unit index and
/// string offset is checked against the blob; a lookup that would leave it simply matches nothing.
struct PrecompiledCharsmap {
    let units: [UInt32]
    let strings: [UInt8]

    init(_ blob: [UInt8], path: String) throws {
        guard blob.count > 4 else { throw FormatError(path: path, "normalizer_spec.precompiled_charsmap has \(blob.count) bytes, too few for its trie size") }
        let size = Int(blob[0]) | Int(blob[1]) << 8 | Int(blob[2]) << 16 | Int(blob[3]) << 24
        guard size >= 4 && size <= blob.count - 4 else {
            throw FormatError(path: path, "normalizer_spec.precompiled_charsmap: its trie claims \(size) bytes but the blob has \(blob.count - 4)")
        }
        var u = [UInt32](repeating: 0, count: size / 4)
        for i in 0..<u.count {
            let o = 4 + 4 * i
            u[i] = UInt32(blob[o]) | UInt32(blob[o + 1]) << 8 | UInt32(blob[o + 2]) << 16 | UInt32(blob[o + 3]) << 24
        }
        guard !u.isEmpty else { throw FormatError(path: path, "normalizer_spec.precompiled_charsmap has an empty trie") }
        units = u
        strings = Array(blob[(4 + size)...])
    }

    /// The longest rule at the start of `input[from..<end]`: (bytes consumed, replacement range in `strings`).
    func longestMatch(_ input: UnsafeBufferPointer<UInt8>, from: Int) -> (length: Int, replacement: Range<Int>)? {
        // darts-clone's unit: has_leaf bit 8, value = low 31 bits, label = bit 31 | low 8 bits,
        // offset = (unit >> 10) << ((unit & 1 << 9) >> 6).
        func offset(_ u: UInt32) -> Int { Int((u >> 10) << ((u & (1 << 9)) >> 6)) }
        var node = offset(units[0])
        var best: (Int, Int)? = nil
        var i = from
        while i < input.count {
            let c = input[i]
            node ^= Int(c)
            guard node < units.count else { break }
            let u = units[node]
            guard u & (1 << 31 | 0xFF) == UInt32(c) else { break }
            node ^= offset(u)
            if (u >> 8) & 1 == 1 {
                guard node < units.count else { break }
                best = (i + 1 - from, Int(units[node] & 0x7FFF_FFFF))
            }
            i += 1
        }
        guard let (length, value) = best, value < strings.count else { return nil }
        var e = value
        while e < strings.count && strings[e] != 0 { e += 1 }
        return (length, value..<e)
    }
}

/// A SentencePiece `tokenizer.model` (LLaMA-1/2, Mistral, T5, …) read directly: sentencepiece's
/// normalizer (precompiled charsmap rules, user-defined pieces kept whole, add_dummy_prefix,
/// remove_extra_whitespaces, whitespace → U+2581, treat_whitespace_as_suffix), then its BPE model
/// (bpe_model.cc: repeatedly merge the adjacent pair whose concatenation is a piece of the highest
/// score, leftmost on ties; user-defined pieces frozen) or its Unigram model (unigram_model.cc's
/// optimized Viterbi over the pieces' log-probabilities; an unknown character is `<unk>` with score
/// min − 10; a user-defined piece scores length·max − 0.1), unknown pieces → their UTF-8 bytes
/// `<0xNN>` with byte_fallback, else runs of `<unk>` merged into one. Decoding is sentencepiece's:
/// control pieces vanish, `<unk>` → unk_surface (" ⁇ "), U+2581 → space, the leading space of the
/// first piece dropped, byte pieces assembled per character with each invalid byte → U+FFFD.
///
/// `encode(_, addSpecial: true)` adds the BOS piece (and the EOS piece if asked) as transformers'
/// sentencepiece-backed LlamaTokenizer does: `add_bos_token` (default true) and `add_eos_token`
/// (default false) from the folder's tokenizer_config.json — our choice of defaults, since
/// sentencepiece itself adds neither.
// @unchecked: every stored property is set in init and only read afterwards.
public final class SentencePieceModelTokenizer: @unchecked Sendable, TextTokenizer {
    public let path: String
    public let proto: SentencePieceModelProto
    public private(set) var vocabulary: [String: Int32] = [:]
    public var vocabularySize: Int { proto.pieces.count }
    public let unkID: Int32
    public private(set) var bosID: Int32? = nil, eosID: Int32? = nil
    public var addBOS = true, addEOS = false

    private var pieceBytes: [[UInt8]] = []
    private var types: [SentencePieceModelProto.PieceType] = []
    private var scores: [Float] = []
    /// NORMAL, USER_DEFINED and UNUSED pieces (sentencepiece's `pieces_`), and the others (`reserved_id_map_`).
    private var normalPieces: [ArraySlice<UInt8>: Int32] = [:]
    private var reservedPieces: [ArraySlice<UInt8>: Int32] = [:]
    /// User-defined pieces by first byte, longest first.
    private var userDefined: [UInt8: [[UInt8]]] = [:]
    private var byteIDs = [Int32](repeating: -1, count: 256)
    private var byteValue: [Int32: UInt8] = [:]
    private var charsmap: PrecompiledCharsmap? = nil
    private var trie = PieceTrie()
    private var minScore = Float.greatestFiniteMagnitude, maxScore = Float.leastNormalMagnitude

    static let space: [UInt8] = Array("\u{2581}".utf8)

    public convenience init(path: String) throws {
        try self.init(bytes: [UInt8](try RegularFile.read(path, limit: 1 << 30)), path: path)
    }

    public init(bytes: [UInt8], path: String) throws {
        self.path = path
        let p = try SentencePieceModelProto(bytes: bytes, path: path)
        proto = p
        let type = p.trainer.modelType
        guard type == .bpe || type == .unigram else {
            throw FormatError(path: path, "trainer_spec.model_type is \(type.name): only BPE and UNIGRAM SentencePiece models are supported")
        }
        guard !p.pieces.isEmpty else { throw FormatError(path: path, "has no pieces (ModelProto.pieces is empty)") }
        if let d = p.denormalizer, !d.precompiledCharsmap.isEmpty {
            throw FormatError(path: path, "has a denormalizer_spec with rules (\(d.name)), which is not supported")
        }
        var unk: Int32? = nil
        for (i, piece) in p.pieces.enumerated() {
            let id = Int32(i)
            let b = Array(piece.piece.utf8)
            guard !b.isEmpty else { throw FormatError(path: path, "pieces[\(i)] is empty") }
            pieceBytes.append(b)
            types.append(piece.type)
            scores.append(piece.score)
            let normal = piece.type == .normal || piece.type == .userDefined || piece.type == .unused
            if normal {
                guard normalPieces.updateValue(id, forKey: b[...]) == nil else {
                    throw FormatError(path: path, "pieces[\(i)] \"\(piece.piece)\" is defined twice")
                }
            } else {
                guard reservedPieces.updateValue(id, forKey: b[...]) == nil else {
                    throw FormatError(path: path, "pieces[\(i)] \"\(piece.piece)\" is defined twice")
                }
            }
            vocabulary[piece.piece] = id
            switch piece.type {
            case .userDefined: userDefined[b[0], default: []].append(b)
            case .unknown:
                guard unk == nil else { throw FormatError(path: path, "pieces[\(i)] is a second UNKNOWN piece (the first is \(unk!))") }
                unk = id
            case .byte:
                guard p.trainer.byteFallback else {
                    throw FormatError(path: path, "pieces[\(i)] is the byte piece \(piece.piece) but trainer_spec.byte_fallback is false")
                }
                guard b.count == 6, piece.piece.hasPrefix("<0x"), piece.piece.hasSuffix(">"),
                    let v = UInt8(String(decoding: b[3..<5], as: UTF8.self), radix: 16)
                else { throw FormatError(path: path, "pieces[\(i)] \"\(piece.piece)\" is a BYTE piece but not of the form <0xNN>") }
                byteIDs[Int(v)] = id
                byteValue[id] = v
            case .normal:
                minScore = min(minScore, piece.score)
                maxScore = max(maxScore, piece.score)
            default: break
            }
        }
        guard let unk else { throw FormatError(path: path, "has no UNKNOWN piece (sentencepiece requires one)") }
        unkID = unk
        if p.trainer.byteFallback, let missing = byteIDs.firstIndex(of: -1) {
            throw FormatError(
                path: path, "trainer_spec.byte_fallback is true but the byte piece \(SentencePieceBPETokenizer.byteToken(UInt8(missing))) is missing")
        }
        userDefined = userDefined.mapValues { $0.sorted { $0.count > $1.count } }
        if !p.normalizer.precompiledCharsmap.isEmpty { charsmap = try PrecompiledCharsmap(p.normalizer.precompiledCharsmap, path: path) }
        if type == .unigram {
            for (piece, id) in normalPieces { trie.insert(piece, id: id) }
        }
        func control(_ name: String) -> Int32? {
            if let id = reservedPieces[Array(name.utf8)[...]], types[Int(id)] == .control { return id }
            return nil
        }
        bosID = control(p.trainer.bosPiece)
        eosID = control(p.trainer.eosPiece)
    }

    /// The tokenizer of a folder's `tokenizer.model`, with `add_bos_token` / `add_eos_token` from its
    /// tokenizer_config.json when present.
    public static func load(folder: String) throws -> SentencePieceModelTokenizer {
        let t = try SentencePieceModelTokenizer(path: folder + "/tokenizer.model")
        let config = folder + "/tokenizer_config.json"
        if RegularFile.isRegular(config) {
            let json = try SentencePieceBPETokenizer.parse(config)
            if let v = json["add_bos_token"], v != .null {
                guard let b = v.boolValue else { throw FormatError(path: config, "add_bos_token = \(v.compactText) is not true or false") }
                t.addBOS = b
            }
            if let v = json["add_eos_token"], v != .null {
                guard let b = v.boolValue else { throw FormatError(path: config, "add_eos_token = \(v.compactText) is not true or false") }
                t.addEOS = b
            }
        }
        return t
    }

    // MARK: encoding

    public func encode(_ text: String, addSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = []
        if addSpecial && addBOS, let b = bosID { out.append(b) }
        let normalized = normalize(Array(text.utf8))
        let pieces = normalized.withUnsafeBufferPointer { buf in proto.trainer.modelType == .bpe ? bpe(buf) : unigram(buf) }
        var previousUnk = false
        for (range, id) in pieces {
            let isUnk = id == unkID
            if isUnk && proto.trainer.byteFallback {
                for b in normalized[range] { out.append(byteIDs[Int(b)]) }
            } else if !(isUnk && previousUnk) {
                out.append(id) // a run of unknown pieces is one <unk>, as sentencepiece merges them
            }
            previousUnk = isUnk
        }
        if addSpecial && addEOS, let e = eosID { out.append(e) }
        return out
    }

    /// The pieces of a text (no BOS/EOS), as sentencepiece's `encode(out_type=str)` gives them.
    public func encodePieces(_ text: String) -> [String] { encode(text, addSpecial: false).map { String(decoding: pieceBytes[Int($0)], as: UTF8.self) } }

    /// The length of the user-defined piece at `i`, if one starts there (longest).
    private func userDefinedMatch(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int? {
        guard let list = userDefined[s[i]] else { return nil }
        for u in list where u.count <= s.count - i {
            var k = 1
            while k < u.count && s[i + k] == u[k] { k += 1 }
            if k == u.count { return u.count }
        }
        return nil
    }

    /// One UTF-8 character's length at `i` as sentencepiece's `OneCharLen` (by the lead byte), clipped.
    private static func charLength(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int {
        let lead = s[i]
        let n = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
        return min(n, s.count - i)
    }

    /// sentencepiece's `Normalizer::Normalize` over UTF-8 bytes.
    func normalize(_ input: [UInt8]) -> [UInt8] {
        if input.isEmpty { return [] }
        let spec = proto.normalizer
        let space = spec.escapeWhitespaces ? Self.space : [0x20]
        let suffix = proto.trainer.treatWhitespaceAsSuffix
        return input.withUnsafeBufferPointer { s in
            // One normalized prefix: (replacement, consumed).
            func prefix(_ i: Int) -> (ArraySlice<UInt8>, Int) {
                if let n = userDefinedMatch(s, i) { return (input[i..<(i + n)], n) }
                if let cm = charsmap, let m = cm.longestMatch(s, from: i) { return (cm.strings[m.replacement], m.length) }
                // Input is a Swift String's UTF-8: always valid, one character at a time.
                let n = Self.charLength(s, i)
                return (input[i..<(i + n)], n)
            }
            var i = 0
            if spec.removeExtraWhitespaces {
                while i < s.count {
                    let (p, n) = prefix(i)
                    guard p.elementsEqual([0x20]) else { break }
                    i += n
                }
            }
            if i == s.count { return [] }
            var out: [UInt8] = []
            out.reserveCapacity(s.count * 3)
            if !suffix && spec.addDummyPrefix { out += space }
            var previousSpace = spec.removeExtraWhitespaces
            while i < s.count {
                let (p, n) = prefix(i)
                var sp = p[...]
                while previousSpace, sp.first == 0x20 { sp = sp.dropFirst() }
                if !sp.isEmpty {
                    for b in sp {
                        if spec.escapeWhitespaces && b == 0x20 { out += Self.space } else { out.append(b) }
                    }
                    previousSpace = sp.last == 0x20
                }
                i += n
                if !spec.removeExtraWhitespaces { previousSpace = false }
            }
            if spec.removeExtraWhitespaces {
                while out.count >= space.count && out[(out.count - space.count)...].elementsEqual(space) { out.removeLast(space.count) }
            }
            if suffix && spec.addDummyPrefix { out += space }
            return out
        }
    }

    /// sentencepiece's `PieceToId`: reserved pieces first, then normal ones, else `<unk>`.
    private func pieceID(_ piece: ArraySlice<UInt8>) -> Int32 { reservedPieces[piece] ?? normalPieces[piece] ?? unkID }

    /// bpe_model.cc's `Encode` on normalized bytes: (byte range, id) per piece.
    func bpe(_ s: UnsafeBufferPointer<UInt8>) -> [(Range<Int>, Int32)] {
        if s.isEmpty { return [] }
        let text = Array(s)
        // Symbols: start, length (0 once merged away), prev, next, frozen.
        var start: [Int] = [], length: [Int] = [], frozen: [Bool] = []
        var i = 0
        while i < s.count {
            if let n = userDefinedMatch(s, i) {
                start.append(i)
                length.append(n)
                frozen.append(true)
                i += n
                continue
            }
            let n = Self.charLength(s, i)
            start.append(i)
            length.append(n)
            frozen.append(false)
            i += n
        }
        let n = start.count
        var prev = Array(-1..<(n - 1)), next = Array(1...n)
        next[n - 1] = -1
        var agenda = BinaryHeap<ScoreEntry>()
        var reverseMerge: [ArraySlice<UInt8>: (Range<Int>, Range<Int>)] = [:]
        func add(_ l: Int, _ r: Int) {
            guard l >= 0, r >= 0, !frozen[l], !frozen[r] else { return }
            let range = start[l]..<(start[l] + length[l] + length[r])
            guard let id = normalPieces[text[range]] else { return }
            agenda.push(.init(score: scores[Int(id)], left: Int32(l), right: Int32(r), size: Int32(range.count)))
            if types[Int(id)] == .unused { reverseMerge[text[range]] = (start[l]..<(start[l] + length[l]), start[r]..<(start[r] + length[r])) }
        }
        for k in 1..<n { add(k - 1, k) }
        while let top = agenda.pop() {
            let l = Int(top.left), r = Int(top.right)
            guard length[l] > 0, length[r] > 0, length[l] + length[r] == Int(top.size) else { continue }
            length[l] += length[r]
            next[l] = next[r]
            if next[r] >= 0 { prev[next[r]] = l }
            length[r] = 0
            add(prev[l], l)
            add(l, next[l])
        }
        var out: [(Range<Int>, Int32)] = []
        func resegment(_ r: Range<Int>) {
            let id = pieceID(text[r])
            if types[Int(id)] == .unused, let (a, b) = reverseMerge[text[r]] {
                resegment(a)
                resegment(b)
            } else {
                out.append((r, id))
            }
        }
        var k = 0
        while k >= 0 {
            resegment(start[k]..<(start[k] + length[k]))
            k = next[k]
        }
        return out
    }

    /// unigram_model.cc's `EncodeOptimized`: the best path ending at each byte position, nodes made
    /// on the fly from the trie of pieces. Score arithmetic follows its C++ types (a piece's candidate
    /// in double, stored as float; the unknown candidate in float).
    func unigram(_ s: UnsafeBufferPointer<UInt8>) -> [(Range<Int>, Int32)] {
        let size = s.count
        if size == 0 { return [] }
        let unkScore = minScore - 10
        var bestScore = [Float](repeating: 0, count: size + 1)
        var bestStart = [Int](repeating: -1, count: size + 1)
        var bestID = [Int32](repeating: -1, count: size + 1)
        var startsAt = 0
        while startsAt < size {
            let here = bestScore[startsAt]
            let mblen = Self.charLength(s, startsAt)
            var hasSingle = false
            var node: Int32 = 0
            var pos = startsAt
            while pos < size, let child = trie.child(node, s[pos]) {
                node = child
                pos += 1
                let id = trie.value[Int(node)]
                guard id >= 0, types[Int(id)] != .unused else { continue }
                let length = pos - startsAt
                let score: Double = types[Int(id)] == .userDefined ? Double(Float(length) * maxScore) - 0.1 : Double(scores[Int(id)])
                let candidate = score + Double(here)
                if bestStart[pos] == -1 || candidate > Double(bestScore[pos]) {
                    bestScore[pos] = Float(candidate)
                    bestStart[pos] = startsAt
                    bestID[pos] = id
                }
                if length == mblen { hasSingle = true }
            }
            if !hasSingle {
                let end = startsAt + mblen
                let candidate = unkScore + here
                if bestStart[end] == -1 || candidate > bestScore[end] {
                    bestScore[end] = candidate
                    bestStart[end] = startsAt
                    bestID[end] = unkID
                }
            }
            startsAt += mblen
        }
        var out: [(Range<Int>, Int32)] = []
        var end = size
        while end > 0 {
            let b = bestStart[end]
            out.append((b..<end, bestID[end]))
            end = b
        }
        return out.reversed()
    }

    // MARK: decoding

    /// sentencepiece's `Decode`; ids outside the vocabulary are skipped (sentencepiece refuses them),
    /// and so are control pieces when `skipSpecial` (they decode to nothing either way).
    public func decode(_ ids: [Int32], skipSpecial: Bool = false) -> String {
        let valid = ids.filter { $0 >= 0 && Int($0) < pieceBytes.count }
        var text: [UInt8] = []
        let spec = proto.normalizer
        let unkSurface = Array(proto.trainer.unkSurface.utf8)
        var byteRun: [UInt8] = []
        func flushBytes() {
            var o = 0
            while o < byteRun.count {
                if let n = Self.validCharacter(byteRun, o) {
                    text += byteRun[o..<(o + n)]
                    o += n
                } else {
                    text += [0xEF, 0xBF, 0xBD]
                    o += 1
                }
            }
            byteRun.removeAll()
        }
        var expectBosSpace = true, bosSpaceSeen = false
        for id in valid {
            if let b = byteValue[id] {
                byteRun.append(b)
                continue
            }
            flushBytes()
            if bosSpaceSeen || !text.isEmpty { expectBosSpace = false }
            bosSpaceSeen = false
            switch types[Int(id)] {
            case .control: continue
            case .unknown:
                text += unkSurface
                continue
            default: break
            }
            var piece = pieceBytes[Int(id)][...]
            if expectBosSpace && (spec.addDummyPrefix || spec.removeExtraWhitespaces) && piece.starts(with: Self.space) {
                piece = piece.dropFirst(Self.space.count)
                bosSpaceSeen = !spec.removeExtraWhitespaces
            }
            var k = piece.startIndex
            while k < piece.endIndex {
                if piece[k] == 0xE2 && piece[k...].starts(with: Self.space) {
                    text.append(0x20)
                    k += 3
                } else {
                    text.append(piece[k])
                    k += 1
                }
            }
        }
        flushBytes()
        return String(decoding: text, as: UTF8.self)
    }

    /// The length of the valid UTF-8 character at `o` (sentencepiece's `DecodeUTF8`: no overlong
    /// forms, no surrogates, nothing past U+10FFFF), or nil.
    static func validCharacter(_ b: [UInt8], _ o: Int) -> Int? {
        let left = b.count - o, c0 = UInt32(b[o])
        func trail(_ k: Int) -> Bool { b[o + k] & 0xC0 == 0x80 }
        func ok(_ cp: UInt32) -> Bool { cp < 0xD800 || (cp >= 0xE000 && cp <= 0x10FFFF) }
        if c0 < 0x80 { return 1 }
        if left >= 2 && c0 & 0xE0 == 0xC0 {
            let cp = (c0 & 0x1F) << 6 | UInt32(b[o + 1] & 0x3F)
            return trail(1) && cp >= 0x80 && ok(cp) ? 2 : nil
        }
        if left >= 3 && c0 & 0xF0 == 0xE0 {
            let cp = (c0 & 0x0F) << 12 | UInt32(b[o + 1] & 0x3F) << 6 | UInt32(b[o + 2] & 0x3F)
            return trail(1) && trail(2) && cp >= 0x800 && ok(cp) ? 3 : nil
        }
        if left >= 4 && c0 & 0xF8 == 0xF0 {
            let cp = (c0 & 0x07) << 18 | UInt32(b[o + 1] & 0x3F) << 12 | UInt32(b[o + 2] & 0x3F) << 6 | UInt32(b[o + 3] & 0x3F)
            return trail(1) && trail(2) && trail(3) && cp >= 0x10000 && ok(cp) ? 4 : nil
        }
        return nil
    }
}

/// A byte trie of pieces: node 0 is the root; `value` is the piece id ending at a node or −1.
struct PieceTrie {
    private var children: [UInt64: Int32] = [:]
    private(set) var value: [Int32] = [-1]

    func child(_ node: Int32, _ byte: UInt8) -> Int32? { children[UInt64(UInt32(bitPattern: node)) << 8 | UInt64(byte)] }

    mutating func insert(_ piece: ArraySlice<UInt8>, id: Int32) {
        var node: Int32 = 0
        for b in piece {
            let key = UInt64(UInt32(bitPattern: node)) << 8 | UInt64(b)
            if let c = children[key] {
                node = c
            } else {
                let c = Int32(value.count)
                value.append(-1)
                children[key] = c
                node = c
            }
        }
        value[Int(node)] = id
    }
}

/// A candidate merge of SentencePiece's BPE: highest score first, then leftmost (bpe_model.cc's agenda).
struct ScoreEntry: HeapEntry {
    var score: Float, left: Int32, right: Int32, size: Int32
    func before(_ o: ScoreEntry) -> Bool { score > o.score || (score == o.score && left < o.left) }
}
