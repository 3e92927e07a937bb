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
