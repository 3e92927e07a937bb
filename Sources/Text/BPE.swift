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
        var heap = MergeQueue()
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

/// A binary min-heap of pending merges ordered by (rank, position).
struct MergeQueue {
    struct Entry {
        var rank: Int32, pos: Int32, id: Int32
        func before(_ o: Entry) -> Bool { rank < o.rank || (rank == o.rank && pos < o.pos) }
    }
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
