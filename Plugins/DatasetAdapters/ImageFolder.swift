import Formats
import Foundation
import Imaging
import Tensors

/// Images in class-per-folder layout (torchvision's ImageFolder): `root/<class>/<image>`, or
/// `root/{train,val,test}/<class>/<image>` when the root holds split folders. PNG and TIFF files
/// (by extension, case-insensitive) are images; other files are ignored. Classes are the folder
/// names in sorted order. Without split folders, each class's images (sorted by name) are split by a
/// seeded shuffle: ⌊valFraction·n⌋ to val, ⌊testFraction·n⌋ to test, the rest to train.
///
/// An optional taxonomy CSV (header required; RFC 4180 quoting) gives each class its seven ranks:
/// keyed by `label` (a class folder name) or by `file` (a path under the root; all files of a class
/// must then agree), with columns `kingdom,phylum,class,order,family,genus,species` and optionally
/// `common_name`.
public struct ImageFolderSource: ItemSource {
    public let classNames: [String]
    public let channels = 3
    public let size: Int
    public let rankLabels: [[Int]]?
    /// Per class, the seven rank names and the common name, when a taxonomy was given.
    public let taxonomy: [[String]]?
    public let commonNames: [String]?
    /// Per split: (file, class) pairs.
    let items: [[(path: String, label: Int)]]
    let squash: Bool
    public let skipped: [Skipped]
    static let rankNames = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]

    public init(
        root: String, size: Int, squash: Bool, taxonomyPath: String?, valFraction: Double, testFraction: Double,
        seed: UInt64, skipBad: Bool
    ) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: root, isDirectory: &isDir) else {
            throw FormatError(path: root, "no such folder (set root=PATH to a class-per-folder image tree)")
        }
        guard isDir.boolValue else { throw FormatError(path: root, "is a file; root must be a folder of class folders") }
        func subfolders(_ path: String) throws -> [String] {
            try fm.contentsOfDirectory(atPath: path).filter { name in
                var d: ObjCBool = false
                return !name.hasPrefix(".") && fm.fileExists(atPath: path + "/" + name, isDirectory: &d) && d.boolValue
            }.sorted()
        }
        func images(_ path: String) throws -> [String] {
            try fm.contentsOfDirectory(atPath: path).filter { n in
                !n.hasPrefix(".") && ImageFiles.extensions.contains((n as NSString).pathExtension.lowercased())
            }.sorted()
        }
        var skipped: [Skipped] = []
        let top = try subfolders(root)
        let splitFolders = top.filter { splitNames.contains($0) }
        // Relative path (from root) of every image, per split and class folder.
        var found: [[String: [String]]] = [[:], [:], [:]]
        if !splitFolders.isEmpty {
            for (s, name) in splitNames.enumerated() where splitFolders.contains(name) {
                for c in try subfolders(root + "/" + name) { found[s][c] = try images("\(root)/\(name)/\(c)").map { "\(name)/\(c)/\($0)" } }
            }
        } else {
            for c in top { found[0][c] = try images(root + "/" + c).map { "\(c)/\($0)" } }
        }
        var classes = Set(found.flatMap { $0.keys }).sorted()
        // Empty classes: an error, or dropped with skip_bad.
        for c in classes where found.allSatisfy({ ($0[c] ?? []).isEmpty }) {
            let e = FormatError(path: root + "/" + c, "class folder holds no PNG, TIFF or JPEG image")
            guard skipBad else { throw e }
            skipped.append(Skipped(file: root + "/" + c, reason: "\(e)"))
        }
        classes = classes.filter { c in found.contains { !($0[c] ?? []).isEmpty } }
        guard !classes.isEmpty else { throw FormatError(path: root, "holds no class folder with images") }
        let classIndex = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var items: [[(path: String, label: Int)]] = [[], [], []]
        if splitFolders.isEmpty {
            guard valFraction >= 0, testFraction >= 0, valFraction + testFraction < 1 else {
                throw FormatError(path: root, "valFraction + testFraction must lie in [0, 1), got \(valFraction) + \(testFraction)")
            }
            for c in classes {
                var files = found[0][c] ?? []
                var rng = SeededGenerator(seed: seed ^ UInt64(classIndex[c]!) &* 0x9E37_79B9_7F4A_7C15)
                for i in stride(from: files.count - 1, to: 0, by: -1) { files.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
                let nVal = Limits.clampedCount(valFraction * Double(files.count), atMost: files.count)
                let nTest = Limits.clampedCount(testFraction * Double(files.count), atMost: files.count - nVal)
                for (k, f) in files.enumerated() {
                    let split = k < nTest ? 2 : k < nTest + nVal ? 1 : 0
                    items[split].append((root + "/" + f, classIndex[c]!))
                }
            }
            for s in 0..<3 { items[s].sort { $0.path < $1.path } }
        } else {
            for s in 0..<3 {
                for c in classes { items[s] += (found[s][c] ?? []).map { (root + "/" + $0, classIndex[c]!) } }
            }
        }
        self.classNames = classes
        self.items = items
        self.size = size
        self.squash = squash
        if let taxonomyPath {
            let known = Set(found.flatMap { $0.values.flatMap { $0 } })
            let (ranksPerClass, common) = try Self.readTaxonomy(taxonomyPath, classes: classes, knownFiles: known)
            taxonomy = ranksPerClass
            commonNames = common
            // Node index per rank: a node is its full lineage down to that rank.
            var nodes: [[String: Int]] = Array(repeating: [:], count: 7)
            rankLabels = ranksPerClass.map { lineage in
                (0..<7).map { r in
                    let key = lineage[...r].joined(separator: "\u{1F}")
                    if let i = nodes[r][key] { return i }
                    nodes[r][key] = nodes[r].count
                    return nodes[r].count - 1
                }
            }
        } else {
            taxonomy = nil
            commonNames = nil
            rankLabels = nil
        }
        self.skipped = skipped
    }

    public func count(split: Int) -> Int { items[split].count }

    public func item(split: Int, index: Int) throws -> (pixels: [Float], label: Int) {
        let (path, label) = items[split][index]
        var image = try Self.load(path)
        image = squash ? image.resized(width: size, height: size) : image.resizedShorterSideAndCropped(to: size)
        let plane = size * size, c = image.channels
        var out = [Float](repeating: 0, count: 3 * plane)
        for p in 0..<plane {
            for ch in 0..<3 { out[ch * plane + p] = Float(image.pixels[p * c + (c >= 3 ? ch : 0)]) / 255 }
        }
        return (out, label)
    }

    /// PNG, JPEG or TIFF (8-bit, 16-bit scaled by 1/257, float clamped to [0, 1]) as an 8-bit image.
    static func load(_ path: String) throws -> Image {
        let ext = (path as NSString).pathExtension.lowercased()
        if ext == "png" { return try PNG.read(path: path) }
        if ext == "jpg" || ext == "jpeg" { return try JPEG.read(path: path) }
        let page = try TIFF.read(path: path)
        let t = page.pixels
        let c = page.channels
        guard [1, 3, 4].contains(c) else { throw FormatError(path: path, "has \(c) channels; 1, 3 or 4 are supported") }
        let bytes: [UInt8]
        switch t.dtype {
        case .uint8: bytes = try t.scalars()
        case .int32: bytes = try t.integers().map { UInt8(min(255, max(0, $0 / 257))) }
        default: bytes = try t.doubles().map { UInt8(min(255, max(0, ($0 * 255).rounded()))) }
        }
        return Image(width: page.width, height: page.height, channels: c, pixels: bytes)
    }

    /// Rank names (and common name) per class from the taxonomy CSV; errors name the file and row.
    static func readTaxonomy(_ path: String, classes: [String], knownFiles: Set<String>) throws -> ([[String]], [String]) {
        let text = try RegularFile.text(path)
        let rows = try CSV.parse(text, path: path)
        guard let header = rows.first?.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) else {
            throw FormatError(path: path, "is empty; expected a header: file or label, then kingdom,phylum,class,order,family,genus,species[,common_name]")
        }
        guard let key = header.first, key == "file" || key == "label" else {
            throw FormatError(path: path, "the first column must be 'file' or 'label', got '\(header.first ?? "")'")
        }
        let rankColumns = try rankNames.map { r -> Int in
            guard let i = header.firstIndex(of: r) else { throw FormatError(path: path, "the header has no '\(r)' column (all seven ranks are needed)") }
            return i
        }
        let commonColumn = header.firstIndex(of: "common_name")
        let classIndex = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var perClass: [[String]?] = Array(repeating: nil, count: classes.count)
        var common = [String](repeating: "", count: classes.count)
        for (r, row) in rows.enumerated().dropFirst() where !(row.count == 1 && row[0].isEmpty) {
            let line = r + 1
            guard row.count == header.count else {
                throw FormatError(path: path, "row \(line) has \(row.count) fields; the header has \(header.count)")
            }
            let lineage = rankColumns.map { row[$0].trimmingCharacters(in: .whitespaces) }
            if let empty = lineage.firstIndex(where: \.isEmpty) {
                throw FormatError(path: path, "row \(line): rank '\(rankNames[empty])' is empty")
            }
            let cls: String
            if key == "file" {
                let file = row[0]
                guard knownFiles.contains(file) else { throw FormatError(path: path, "row \(line) names '\(file)', which is not an image under the root") }
                let parts = file.split(separator: "/")
                cls = String(parts[parts.count - 2])
            } else {
                cls = row[0]
                guard classIndex[cls] != nil else { throw FormatError(path: path, "row \(line) names class '\(cls)', which has no folder") }
            }
            guard let c = classIndex[cls] else { continue }
            if let previous = perClass[c], previous != lineage {
                throw FormatError(
                    path: path,
                    "row \(line) gives class '\(cls)' the ranks \(lineage.joined(separator: " > ")), an earlier row \(previous.joined(separator: " > "))")
            }
            perClass[c] = lineage
            if let commonColumn { common[c] = row[commonColumn] }
        }
        if let missing = perClass.firstIndex(where: { $0 == nil }) {
            throw FormatError(path: path, "class '\(classes[missing])' has no row")
        }
        return (perClass.map { $0! }, common)
    }
}

/// RFC 4180 CSV: comma-separated, fields in double quotes may hold commas, quotes ("") and newlines.
enum CSV {
    static func parse(_ text: String, path: String) throws -> [[String]] {
        var rows: [[String]] = [], row: [String] = [], field = ""
        var inQuotes = false, afterQuote = false
        var chars = Array(text.unicodeScalars)
        if chars.last != "\n" { chars.append("\n") }
        var i = 0
        while i < chars.count {
            let ch = chars[i]
            if inQuotes {
                if ch == "\"" {
                    if i + 1 < chars.count && chars[i + 1] == "\"" {
                        field.unicodeScalars.append("\"")
                        i += 1
                    } else {
                        inQuotes = false
                        afterQuote = true
                    }
                } else {
                    field.unicodeScalars.append(ch)
                }
            } else if ch == "\"" && field.isEmpty && !afterQuote {
                inQuotes = true
            } else if ch == "," {
                row.append(field)
                field = ""
                afterQuote = false
            } else if ch == "\n" || ch == "\r" {
                if ch == "\r" && i + 1 < chars.count && chars[i + 1] == "\n" { i += 1 }
                row.append(field)
                rows.append(row)
                row = []
                field = ""
                afterQuote = false
            } else {
                if afterQuote { throw FormatError(path: path, "row \(rows.count + 1): text after a closing quote") }
                field.unicodeScalars.append(ch)
            }
            i += 1
        }
        if inQuotes { throw FormatError(path: path, "an unterminated quoted field") }
        return rows
    }
}
