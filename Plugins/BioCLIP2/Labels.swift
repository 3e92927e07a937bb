import Formats
import Foundation
import MenagerieKit
import Tensors

/// The seven Linnaean ranks pybioclip predicts at.
public enum Rank: Int, CaseIterable, Sendable {
    case kingdom, phylum, `class`, order, family, genus, species
    public var label: String { ["kingdom", "phylum", "class", "order", "family", "genus", "species"][rawValue] }
    public init?(label: String) {
        guard let r = Rank.allCases.first(where: { $0.label == label.lowercased() }) else { return nil }
        self = r
    }
}

/// Tree-of-Life label embeddings: `txt_emb_species.npy` ([E, N] as pybioclip stores them, or
/// [N, E]) and `txt_emb_species.json` (N entries `[[kingdom, phylum, class, order, family, genus,
/// epithet], common_name]`).
public struct TreeOfLifeLabels: Sendable {
    public var names: [(taxa: [String], common: String)]
    /// Row-major [N, E], L2-normalised rows as stored.
    public var embeddings: [Float]
    public let dimension: Int
    public var count: Int { names.count }

    public init(names: [(taxa: [String], common: String)], embeddings: [Float], dimension: Int) {
        (self.names, self.embeddings, self.dimension) = (names, embeddings, dimension)
    }

    /// Reads the pair; `npy` and `json` name the files in errors.
    public init(npy: String, json: String, dimension e: Int) throws {
        let table = try NPY.read(path: npy)
        guard table.rank == 2, table.shape.contains(e) else {
            throw FormatError(path: npy, "must be [\(e), N] (or [N, \(e)]) for this model's embedding size \(e), got \(table.shape)")
        }
        let values = try table.converted(to: .float32).scalars(as: Float.self)
        let n = table.shape[0] == e && table.shape[1] != e ? table.shape[1] : (table.shape[1] == e ? table.shape[0] : table.shape[1])
        let columnMajor = table.shape[0] == e && !(table.shape[1] == e && table.shape[0] != e)
        var rows = [Float](repeating: 0, count: n * e)
        if columnMajor {
            for j in 0..<e { for i in 0..<n { rows[i * e + j] = values[j * n + i] } }
        } else {
            rows = values
        }
        let parsed: JSONValue
        do { parsed = try JSONValue.parse(try RegularFile.text(json), source: json) } catch let e as FormatError { throw e } catch {
            throw FormatError(path: json, "\(error)")
        }
        guard let list = parsed.arrayValue else { throw FormatError(path: json, "must be a JSON list of [[7 taxa], common name] entries") }
        guard list.count == n else { throw FormatError(path: json, "names \(list.count) labels but \(npy) holds \(n) embeddings") }
        var names: [(taxa: [String], common: String)] = []
        names.reserveCapacity(n)
        for (i, item) in list.enumerated() {
            guard let pair = item.arrayValue, pair.count == 2, let taxa = pair[0].arrayValue?.compactMap(\.stringValue), taxa.count == 7 else {
                throw FormatError(path: json, "entry \(i) is not [[kingdom, phylum, class, order, family, genus, epithet], common_name]")
            }
            names.append((taxa, pair[1].stringValue ?? ""))
        }
        self.init(names: names, embeddings: rows, dimension: e)
    }

    /// pybioclip's `create_classification_dict` columns and values of label i at a rank: the ranks
    /// down to it; at species also `species_epithet`, `species` (genus + epithet) and `common_name`.
    public func classification(_ i: Int, rank: Rank) -> [(column: String, value: String)] {
        let (taxa, common) = names[i]
        var out: [(String, String)] = []
        for r in Rank.allCases where r.rawValue <= rank.rawValue {
            if r == .species {
                out.append(("species_epithet", taxa[6]))
                out.append(("species", taxa[5] + " " + taxa[6]))
            } else {
                out.append((r.label, taxa[r.rawValue]))
            }
        }
        if rank == .species { out.append(("common_name", common)) }
        return out
    }

    /// The labels whose value at `column` (a rank, `species_epithet` or `common_name`) is in
    /// `values`; every value must name at least one label.
    public func subset(column: String, values: [String], source: String) throws -> TreeOfLifeLabels {
        let wanted = Set(values)
        var keep: [Int] = [], seen = Set<String>()
        for i in 0..<count {
            let v = classification(i, rank: .species).first { $0.column == column }?.value ?? ""
            if wanted.contains(v) {
                keep.append(i)
                seen.insert(v)
            }
        }
        let unknown = values.filter { !seen.contains($0) }
        guard unknown.isEmpty else {
            throw FormatError(
                path: source,
                "unknown \(column) value\(unknown.count == 1 ? "" : "s"): \(unknown.prefix(10).joined(separator: ", "))\(unknown.count > 10 ? ", …" : ""). Only values of the label set may be used"
            )
        }
        let e = dimension
        return TreeOfLifeLabels(names: keep.map { names[$0] }, embeddings: keep.flatMap { embeddings[($0 * e)..<(($0 + 1) * e)] }, dimension: e)
    }
}

/// One output row: the file, its classification columns and the score.
public struct Prediction: Sendable {
    public var file: String
    public var columns: [(column: String, value: String)]
    public var score: Double
}

/// pybioclip's `format_species_probs` / `format_grouped_probs`: the top k species, or species
/// probabilities above `minProb` summed per rank prefix (groups in order of first appearance; ties
/// keep that order) and the top k groups.
public func rankPredictions(file: String, probs: [Float], labels: TreeOfLifeLabels, rank: Rank, k: Int, minProb: Float = 1e-9) -> [Prediction] {
    if rank == .species {
        return topIndices(probs, k).map { i in
            Prediction(file: file, columns: labels.classification(i, rank: .species), score: Double(probs[i]))
        }
    }
    var sums: [String: Double] = [:], columns: [String: [(column: String, value: String)]] = [:], firstSeen: [String] = []
    for i in probs.indices where probs[i] > minProb {
        let c = labels.classification(i, rank: rank)
        let name = c.map(\.value).joined(separator: " ")
        if sums[name] == nil {
            firstSeen.append(name)
            columns[name] = c
        }
        sums[name, default: 0] += Double(probs[i])
    }
    let ranked = firstSeen.enumerated().sorted { a, b in sums[a.element]! > sums[b.element]! || (sums[a.element]! == sums[b.element]! && a.offset < b.offset) }
    return ranked.prefix(k).map { Prediction(file: file, columns: columns[$0.element]!, score: sums[$0.element]!) }
}

/// Custom labels (`cls=`): top k classes, or with bins the probabilities summed per bin (bins in
/// order of first appearance among the classes) and the top k bins.
public func customPredictions(file: String, probs: [Float], classes: [String], bins: [String]?, k: Int) -> [Prediction] {
    if let bins {
        var sums: [String: Double] = [:], order: [String] = []
        for (i, b) in bins.enumerated() {
            if sums[b] == nil { order.append(b) }
            sums[b, default: 0] += Double(probs[i])
        }
        let ranked = order.enumerated().sorted { x, y in sums[x.element]! > sums[y.element]! || (sums[x.element]! == sums[y.element]! && x.offset < y.offset) }
        return ranked.prefix(k).map { Prediction(file: file, columns: [("classification", $0.element)], score: sums[$0.element]!) }
    }
    return topIndices(probs, k).map { Prediction(file: file, columns: [("classification", classes[$0])], score: Double(probs[$0])) }
}

/// The indices of the k largest values, largest first (ties to the lower index): one pass keeping a
/// sorted list of k, instead of sorting every class (10,000 labels × 100 images).
func topIndices(_ values: [Float], _ k: Int) -> [Int] {
    let k = min(k, values.count)
    guard k > 0 else { return [] }
    var top: [Int] = []
    top.reserveCapacity(k + 1)
    func before(_ a: Int, _ b: Int) -> Bool { values[a] > values[b] || (values[a] == values[b] && a < b) }
    for i in values.indices {
        if top.count == k, !before(i, top[k - 1]) { continue }
        var at = top.count
        while at > 0 && before(i, top[at - 1]) { at -= 1 }
        top.insert(i, at: at)
        if top.count > k { top.removeLast() }
    }
    return top
}

// MARK: Label files

/// Labels from `cls=`: a file (one per line; a final empty line is fine, blank lines in between are
/// refused), or a comma-separated list.
public func readLabels(_ spec: String) throws -> [String] {
    let path = (spec as NSString).expandingTildeInPath
    if FileManager.default.fileExists(atPath: path) {
        let text = try RegularFile.text(path)
        var lines = text.components(separatedBy: "\n").map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
        while lines.last?.trimmingCharacters(in: .whitespaces).isEmpty == true { lines.removeLast() }
        if let blank = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces).isEmpty }) {
            throw FormatError(path: path, "line \(blank + 1) is blank: one label per line, no blank lines")
        }
        guard !lines.isEmpty else { throw FormatError(path: path, "holds no labels") }
        return lines.map { $0.trimmingCharacters(in: .whitespaces) }
    }
    let labels = spec.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    guard labels.count >= 1, !labels.contains(where: \.isEmpty) else {
        throw MenagerieError.invalidArgument("cls='\(spec)' is neither a file nor a comma-separated list of non-empty labels")
    }
    return labels
}

/// A CSV's header and rows (quoted fields with "" escapes, as pandas writes them).
public func readCSV(_ path: String) throws -> (header: [String], rows: [[String]]) {
    let path = (path as NSString).expandingTildeInPath
    let text = try RegularFile.text(path)
    var rows: [[String]] = [], field = "", row: [String] = [], quoted = false
    var chars = Array(text.unicodeScalars).makeIterator()
    var pending: Unicode.Scalar? = nil
    func next() -> Unicode.Scalar? {
        if let p = pending {
            pending = nil
            return p
        }
        return chars.next()
    }
    while let c = next() {
        if quoted {
            if c == "\"" {
                if let d = next() {
                    if d == "\"" {
                        field.unicodeScalars.append("\"")
                    } else {
                        quoted = false
                        pending = d
                    }
                } else {
                    quoted = false
                }
            } else {
                field.unicodeScalars.append(c)
            }
        } else if c == "\"" && field.isEmpty {
            quoted = true
        } else if c == "," {
            row.append(field)
            field = ""
        } else if c == "\n" || c == "\r" {
            if c == "\r" { if let d = next(), d != "\n" { pending = d } }
            row.append(field)
            field = ""
            if !(row.count == 1 && row[0].isEmpty) { rows.append(row) }
            row = []
        } else {
            field.unicodeScalars.append(c)
        }
    }
    if !field.isEmpty || !row.isEmpty {
        row.append(field)
        rows.append(row)
    }
    guard let header = rows.first else { throw FormatError(path: path, "is empty: it needs a header row") }
    return (header, Array(rows.dropFirst()))
}

/// Bins: a CSV whose first column is the class and second the bin; empty bins are refused.
public func readBins(_ path: String) throws -> (classes: [String], bins: [String]) {
    let (header, rows) = try readCSV(path)
    guard header.count >= 2 else { throw FormatError(path: path, "needs two columns: class, bin") }
    var classes: [String] = [], bins: [String] = []
    for (i, r) in rows.enumerated() {
        guard r.count >= 2, !r[0].trimmingCharacters(in: .whitespaces).isEmpty else { throw FormatError(path: path, "row \(i + 2) has no class") }
        guard !r[1].trimmingCharacters(in: .whitespaces).isEmpty else {
            throw FormatError(path: path, "row \(i + 2) (\(r[0])) has an empty bin: every class needs one")
        }
        classes.append(r[0].trimmingCharacters(in: .whitespaces))
        bins.append(r[1].trimmingCharacters(in: .whitespaces))
    }
    guard !classes.isEmpty else { throw FormatError(path: path, "has no rows") }
    return (classes, bins)
}

/// Scores as Python prints a float: the shortest repr of the double.
func pythonFloat(_ x: Double) -> String {
    if x == 0 { return "0.0" }
    let s = "\(x)"
    return s
}
