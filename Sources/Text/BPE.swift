import Formats

/// What the two byte-level BPE tokenizers share: the merge table and its application, and the
/// character classes of their split patterns.
struct MergeTable {
    /// (left id << 32 | right id) → (merge rank, merged id).
    var pairs: [UInt64: (rank: Int32, id: Int32)] = [:]

    static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b)) }

    /// Adds a merge unless the pair already has a lower rank (the first line wins, as in both references).
    mutating func add(_ a: Int32, _ b: Int32, rank: Int, merged: Int32) {
        let k = MergeTable.key(a, b)
        if pairs[k] == nil { pairs[k] = (Int32(rank), merged) }
    }

    /// Repeatedly merges the adjacent pair of lowest rank, every occurrence left to right, until no
    /// pair of the word has a merge.
    func apply(_ symbols: [Int32]) -> [Int32] {
        var word = symbols
        while word.count > 1 {
            var best: (rank: Int32, id: Int32)? = nil, at = -1
            for i in 0..<(word.count - 1) {
                if let m = pairs[MergeTable.key(word[i], word[i + 1])], best == nil || m.rank < best!.rank { (best, at) = (m, i) }
            }
            guard let merge = best else { break }
            let (first, second) = (word[at], word[at + 1])
            var merged: [Int32] = []
            merged.reserveCapacity(word.count)
            var i = 0
            while i < word.count {
                if i + 1 < word.count && word[i] == first && word[i + 1] == second {
                    merged.append(merge.id)
                    i += 2
                } else {
                    merged.append(word[i])
                    i += 1
                }
            }
            word = merged
        }
        return word
    }
}

extension Unicode.Scalar {
    /// `\p{L}`: general category L*.
    var isLetterCategory: Bool {
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
    /// `\p{N}`: general category N*.
    var isNumberCategory: Bool {
        switch properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }
}

extension MergeTable {
    /// The same merges as `apply` in tokenizers' order (`Word::merge_all`): a priority queue of pairs by
    /// (rank, position), the symbols a linked list, stale entries skipped — O(n log n) per word where
    /// `apply` rescans the word after each merge (SentencePiece-style tokenizers make a whole prompt one word).
    func applyQueued(_ symbols: [Int32]) -> [Int32] {
        let n = symbols.count
        guard n > 1 else { return symbols }
        var id = symbols, next = Array(1...n), prev = Array(-1..<(n - 1)), alive = [Bool](repeating: true, count: n)
        next[n - 1] = -1
        var heap = BinaryHeap<MergeEntry>()
        for i in 0..<(n - 1) { if let m = pairs[MergeTable.key(id[i], id[i + 1])] { heap.push(.init(rank: m.rank, pos: Int32(i), id: m.id)) } }
        while let top = heap.pop() {
            let p = Int(top.pos)
            guard alive[p], next[p] >= 0 else { continue }
            let q = next[p]
            guard let m = pairs[MergeTable.key(id[p], id[q])], m.id == top.id else { continue }
            id[p] = top.id
            alive[q] = false
            next[p] = next[q]
            if next[q] >= 0 { prev[next[q]] = p }
            if prev[p] >= 0, let m = pairs[MergeTable.key(id[prev[p]], id[p])] { heap.push(.init(rank: m.rank, pos: Int32(prev[p]), id: m.id)) }
            if next[p] >= 0, let m = pairs[MergeTable.key(id[p], id[next[p]])] { heap.push(.init(rank: m.rank, pos: Int32(p), id: m.id)) }
        }
        return (0..<n).compactMap { alive[$0] ? id[$0] : nil }
    }
}

/// What a `BinaryHeap` orders: `before` is true when self must come out first.
protocol HeapEntry {
    func before(_ other: Self) -> Bool
}

/// A binary heap whose `pop` returns the entry that comes `before` all others (the merge agendas of
/// both BPE tokenizers).
struct BinaryHeap<Entry: HeapEntry> {
    private var items: [Entry] = []

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].before(items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l].before(items[m]) { m = l }
                if r < items.count && items[r].before(items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return first
    }
}

/// A pending merge of tokenizer.json's BPE: lowest rank first, then leftmost position.
struct MergeEntry: HeapEntry {
    var rank: Int32, pos: Int32, id: Int32
    func before(_ o: MergeEntry) -> Bool { rank < o.rank || (rank == o.rank && pos < o.pos) }
}

/// The vocabulary of a tokenizer.json BPE model and its added tokens, every id checked: token → id,
/// the added tokens longest first (so the longest match wins), and the token of each id.
struct BPEVocabulary {
    var vocabulary: [String: Int32] = [:]
    var added: [(content: String, id: Int32, special: Bool)] = []
    var tokens: [String] = []

    init(json: JSONValue, model: JSONValue, path: String) throws {
        let ids = 0...(Limits.vocabulary.upperBound - 1)
        guard let vocab = model["vocab"]?.objectValue else { throw FormatError(path: path, "model.vocab is missing") }
        var size = 0
        for (token, id) in vocab {
            let i = try Limits.int(id, key: "model.vocab[\"\(token)\"]", in: ids, source: path)
            vocabulary[token] = Int32(i)
            size = max(size, i + 1)
        }
        for (n, item) in (json["added_tokens"]?.arrayValue ?? []).enumerated() {
            guard let content = item["content"]?.stringValue, !content.isEmpty else { throw FormatError(path: path, "added_tokens[\(n)] has no content") }
            let id = try Limits.int(item["id"], key: "added_tokens[\(n)].id", in: ids, source: path)
            added.append((content, Int32(id), item["special"]?.boolValue ?? false))
            vocabulary[content] = Int32(id)
            size = max(size, id + 1)
        }
        guard size > 0 else { throw FormatError(path: path, "model.vocab is empty") }
        added.sort { $0.content.utf8.count > $1.content.utf8.count }
        try Limits.allocation(count: size, elementSize: MemoryLayout<String>.stride, what: "the id table of \(size) tokens", source: path)
        tokens = [String](repeating: "", count: size)
        for (token, id) in vocabulary { tokens[Int(id)] = token }
    }
}
