import Foundation

/// The scores of generation tasks, each as its usual reference defines it (re-implemented here):
///   - exact match after SQuAD's `normalize_answer`: lowercase, ASCII punctuation removed, the
///     articles a/an/the removed as words, whitespace collapsed;
///   - ROUGE-L as rouge-score's `rougeL` (no stemming): tokens = lowercase, every run of characters
///     other than a–z, 0–9 → one space, split; F = 2PR/(P + R) with P = LCS/|prediction|,
///     R = LCS/|target| (0 when either is empty or nothing matches);
///   - BLEU as sacrebleu's `corpus_bleu` defaults: the 13a tokeniser, n-grams up to 4 clipped by one
///     reference, the `exp` smoothing (the m-th zero precision becomes 100/(2^m · total)), brevity
///     penalty exp(1 − r/c) when c < r, on a 0–100 scale.
public enum TextMetrics {
    // MARK: Exact match

    /// SQuAD's normalize_answer (`string.punctuation` is ASCII's 32 punctuation characters; the
    /// articles are whole words, a word being a run of Unicode letters, digits and '_' as Python's `\w`).
    public static func normalizeAnswer(_ s: String) -> String {
        rejoin(Array(s.lowercased().unicodeScalars.filter { !isASCIIPunctuation($0) }))
    }

    /// The text with article words blanked and whitespace collapsed, keeping other characters in place.
    static func rejoin(_ scalars: [Unicode.Scalar]) -> String {
        var out = String.UnicodeScalarView(), i = 0
        while i < scalars.count {
            if isWordCharacter(scalars[i]) {
                var j = i
                while j < scalars.count && isWordCharacter(scalars[j]) { j += 1 }
                let w = String(String.UnicodeScalarView(scalars[i..<j]))
                if w == "a" || w == "an" || w == "the" { out.append(" ") } else { out.append(contentsOf: w.unicodeScalars) }
                i = j
            } else {
                out.append(scalars[i])
                i += 1
            }
        }
        return String(out).split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    static func isWordCharacter(_ c: Unicode.Scalar) -> Bool {
        c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
    }

    static func isASCIIPunctuation(_ c: Unicode.Scalar) -> Bool {
        (33...47).contains(c.value) || (58...64).contains(c.value) || (91...96).contains(c.value) || (123...126).contains(c.value)
    }

    public static func exactMatch(_ prediction: String, _ target: String) -> Double {
        normalizeAnswer(prediction) == normalizeAnswer(target) ? 1 : 0
    }

    // MARK: ROUGE-L

    /// rouge-score's default tokenizer (tokenize.py without a stemmer).
    public static func rougeTokens(_ s: String) -> [String] {
        var out: [String] = [], word = ""
        for c in s.lowercased().unicodeScalars {
            if ("a"..."z").contains(c) || ("0"..."9").contains(c) {
                word.unicodeScalars.append(c)
            } else if !word.isEmpty {
                out.append(word)
                word = ""
            }
        }
        if !word.isEmpty { out.append(word) }
        return out
    }

    /// The length of the longest common subsequence (dynamic programming, two rows).
    public static func lcs<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
        guard !a.isEmpty, !b.isEmpty else { return 0 }
        var previous = [Int](repeating: 0, count: b.count + 1), current = previous
        for x in a {
            for (j, y) in b.enumerated() { current[j + 1] = x == y ? previous[j] + 1 : max(previous[j + 1], current[j]) }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    /// ROUGE-L F-measure of one prediction against one target.
    public static func rougeL(_ prediction: String, _ target: String) -> Double {
        let p = rougeTokens(prediction), t = rougeTokens(target)
        guard !p.isEmpty, !t.isEmpty else { return 0 }
        let common = Double(lcs(p, t))
        guard common > 0 else { return 0 }
        let precision = common / Double(p.count), recall = common / Double(t.count)
        return 2 * precision * recall / (precision + recall)
    }

    // MARK: BLEU

    /// sacrebleu's 13a tokeniser (mteval-v13a): drop `<skipped>`, join hyphenated line breaks, lines
    /// to spaces, four HTML entities back to characters, then TokenizerRegexp's four substitutions
    /// (each a left-to-right, non-overlapping scan as Python's re.sub), whitespace-split:
    ///   1. `([\{-\~\[-\` -\&\(-\+\:-\@\/])` → ` \1 `: ASCII punctuation except ' - . , (and the space);
    ///   2. `([^0-9])([\.,])` → `\1 \2 `: a period or comma after a non-digit;
    ///   3. `([\.,])([^0-9])` → ` \1 \2`: a period or comma before a non-digit;
    ///   4. `([0-9])(-)` → `\1 \2 `: a dash after a digit.
    public static func tokenize13a(_ s: String) -> [String] {
        var line = s.replacingOccurrences(of: "<skipped>", with: "").replacingOccurrences(of: "-\n", with: "")
            .replacingOccurrences(of: "\n", with: " ")
        if line.contains("&") {
            line = line.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
                .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
        }
        var x = Array(" \(line) ".unicodeScalars)
        func isDigit(_ c: Unicode.Scalar) -> Bool { ("0"..."9").contains(c) }
        func isPeriodOrComma(_ c: Unicode.Scalar) -> Bool { c == "." || c == "," }
        // Rule 1 (one character at a time).
        x = x.flatMap { c -> [Unicode.Scalar] in
            let v = c.value
            let punct =
                (0x7B...0x7E).contains(v) || (0x5B...0x60).contains(v) || (0x20...0x26).contains(v) || (0x28...0x2B).contains(v)
                || (0x3A...0x40).contains(v) || v == 0x2F
            return punct ? [" ", c, " "] : [c]
        }
        // Rules 2–4: two-character patterns, replaced left to right without overlaps.
        func pairs(_ first: (Unicode.Scalar) -> Bool, _ second: (Unicode.Scalar) -> Bool, _ make: (Unicode.Scalar, Unicode.Scalar) -> [Unicode.Scalar]) {
            var out: [Unicode.Scalar] = [], i = 0
            while i < x.count {
                if i + 1 < x.count && first(x[i]) && second(x[i + 1]) {
                    out += make(x[i], x[i + 1])
                    i += 2
                } else {
                    out.append(x[i])
                    i += 1
                }
            }
            x = out
        }
        pairs({ !isDigit($0) }, isPeriodOrComma) { [$0, " ", $1, " "] }
        pairs(isPeriodOrComma, { !isDigit($0) }) { [" ", $0, " ", $1] }
        pairs(isDigit, { $0 == "-" }) { [$0, " ", $1, " "] }
        // Python's str.split(): runs of whitespace.
        return String(String.UnicodeScalarView(x)).split(whereSeparator: { $0.isWhitespace }).map(String.init)
    }

    /// The sufficient statistics of corpus BLEU.
    public struct BLEUStatistics: Sendable {
        public var correct = [Int](repeating: 0, count: 4), total = [Int](repeating: 0, count: 4)
        public var hypothesisLength = 0, referenceLength = 0
    }

    public static func bleuStatistics(_ predictions: [String], _ references: [String]) -> BLEUStatistics {
        var s = BLEUStatistics()
        for (p, r) in zip(predictions, references) {
            let h = tokenize13a(p), ref = tokenize13a(r)
            s.hypothesisLength += h.count
            s.referenceLength += ref.count
            for n in 1...4 {
                let hc = ngrams(h, n), rc = ngrams(ref, n)
                s.total[n - 1] += max(0, h.count - n + 1)
                for (g, c) in hc { s.correct[n - 1] += min(c, rc[g] ?? 0) }
            }
        }
        return s
    }

    static func ngrams(_ tokens: [String], _ n: Int) -> [[String]: Int] {
        var out: [[String]: Int] = [:]
        guard tokens.count >= n else { return out }
        for i in 0...(tokens.count - n) { out[Array(tokens[i..<(i + n)]), default: 0] += 1 }
        return out
    }

    /// sacrebleu's `compute_bleu` with smooth_method 'exp' and effective_order false (corpus BLEU).
    public static func corpusBLEU(_ predictions: [String], _ references: [String]) -> Double {
        bleu(bleuStatistics(predictions, references))
    }

    public static func bleu(_ s: BLEUStatistics) -> Double {
        var precisions = [Double](repeating: 0, count: 4), smooth = 1.0
        for n in 0..<4 {
            if s.total[n] == 0 { break }
            if s.correct[n] == 0 {
                smooth *= 2
                precisions[n] = 100 / (smooth * Double(s.total[n]))
            } else {
                precisions[n] = 100 * Double(s.correct[n]) / Double(s.total[n])
            }
        }
        let c = Double(s.hypothesisLength), r = Double(s.referenceLength)
        let bp = c < r ? (c > 0 ? exp(1 - r / c) : 0) : 1
        // sacrebleu's my_log(0) = −9999999999: a missing order zeroes the score.
        let logs = precisions.map { $0 == 0 ? -9_999_999_999 : log($0) }
        return bp * exp(logs.reduce(0, +) / 4)
    }
}
