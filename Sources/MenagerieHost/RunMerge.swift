import Formats
import Foundation
import MenagerieKit

/// Joins the outputs of runs over consecutive parts of one file list — the chunks of a resumable
/// run, or the shards of a job array — into the output one run over the whole list writes. The
/// rules are those of `ShardingSpec` (recorded in every part's result.json under `sharding`, so
/// `menagerie merge` needs no plugin).
public enum RunMerge {
    /// One part: a committed run folder, its manifest, and which files (by index) it covered.
    public struct Part {
        public let folder: String
        public let manifest: JSONValue
        public let offset: Int
        public let items: Int

        public init(folder: String) throws {
            let path = folder + "/result.json"
            let text: String
            do { text = try RegularFile.text(path, limit: 256 << 20) } catch {
                throw HostError(.usage, "\(folder) holds no readable result.json: is it the --out folder of a finished run? (\(error))")
            }
            let manifest: JSONValue
            do { manifest = try JSONValue.parse(text, source: path) } catch { throw HostError(.usage, "\(error)") }
            guard let s = manifest["sharding"], let offset = s["offset"]?.intValue, let items = s["items"]?.intValue, offset >= 0, items >= 0
            else {
                throw HostError(.usage, "\(path) is not the output of a sharded run (no 'sharding' with offset and items): run with --shard I/N")
            }
            self.folder = folder
            self.manifest = manifest
            self.offset = offset
            self.items = items
        }

        /// The part's files and their manifest entries, in the manifest's order.
        var files: [(file: String, entry: JSONValue)] {
            (manifest["artifacts"]?.arrayValue ?? []).compactMap { e in e["file"]?.stringValue.map { ($0, e) } }
        }
    }

    /// What a merge produced in its folder: the manifest's `artifacts` entries and the merged `result`.
    public struct Merged {
        public let entries: [JSONValue]
        public let result: JSONValue
        public let seconds: Double
    }

    /// Writes the merge of `parts` (consecutive, in order) into `folder` (which must exist and be
    /// empty); files are moved out of the parts when `consume`, copied otherwise.
    public static func merge(_ parts: [Part], spec: ShardingSpec, into folder: String, consume: Bool) throws -> Merged {
        guard let first = parts.first else { throw HostError(.usage, "nothing to merge") }
        var expected = first.offset
        for p in parts {
            guard p.offset == expected else {
                throw HostError(
                    .usage, "\(p.folder) starts at file \(p.offset), but the parts before it end at file \(expected): a shard is missing or repeated")
            }
            expected += p.items
        }
        let full = parts.filter { $0.items > 0 }
        // Every file name, in the order the parts list them.
        var names: [String] = []
        var entryOf: [String: JSONValue] = [:]
        for p in full {
            for (f, e) in p.files where entryOf[f] == nil {
                names.append(f)
                entryOf[f] = e
            }
        }
        var entries: [JSONValue] = []
        var written = Set<String>()
        func claim(_ name: String) throws -> String {
            guard !name.contains(".."), !name.hasPrefix("/") else { throw HostError(.usage, "a part lists the unsafe file name '\(name)'") }
            guard written.insert(name).inserted else { throw HostError(.usage, "two parts both write \(name): the shards overlap") }
            let target = folder + "/" + name
            if name.contains("/") {
                try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            }
            return target
        }
        func place(_ from: String, _ to: String) throws {
            if consume, rename(from, to) == 0 { return }
            do { try FileManager.default.copyItem(atPath: from, toPath: to) } catch {
                throw HostError(.failed, "cannot copy \(from) to \(to): \(error.localizedDescription)")
            }
        }
        for name in names {
            let having = full.filter { p in p.files.contains { $0.file == name } }
            let base = (name as NSString).lastPathComponent
            if !name.contains("/"), let prefix = spec.indexed?.first(where: { base.hasPrefix($0) }), let (number, width, ext) = indexParts(base, prefix) {
                // Numbered by position within each part: renumbered by the part's place in the merge.
                for p in having {
                    let renamed = prefix + String(format: "%0\(width)d", number + p.offset - first.offset) + ext
                    try place(p.folder + "/" + name, try claim(renamed))
                    entries.append(["name": .string(renamed), "file": .string(renamed), "type": "file"])
                }
                continue
            }
            if name.contains("/") {
                // Named after each input file: collected.
                for p in having { try place(p.folder + "/" + name, try claim(name)) }
                entries.append(entryOf[name]!)
                continue
            }
            if having.count < full.count {
                let missing = full.first { p in !p.files.contains { $0.file == name } }!
                throw HostError(.usage, "\(missing.folder) has no \(name), which the other parts have: were they run with the same options?")
            }
            let target = try claim(name)
            let sources = having.map { $0.folder + "/" + name }
            if let member = spec.jsonMaps?[name] {
                try spliceJSON(sources, member: member, to: target)
                entries.append(entryOf[name]!)
            } else if name.hasSuffix(".npy") {
                let (dtype, shape) = try concatenateNPY(sources, to: target)
                var e = entryOf[name]!.objectValue ?? [:]
                if e["shape"] != nil {
                    e["shape"] = .array(shape.map { .number(Double($0)) })
                    e["dtype"] = .string(dtype.name)
                }
                entries.append(.object(e))
            } else if name.hasSuffix(".csv") {
                try concatenateText(sources, to: target, header: true)
                entries.append(entryOf[name]!)
            } else if name.hasSuffix(".txt") || name.hasSuffix(".jsonl") {
                try concatenateText(sources, to: target, header: false)
                entries.append(entryOf[name]!)
            } else {
                // Anything else must be the same in every part (a constant file).
                let data = try sources.map { s in
                    guard let d = FileManager.default.contents(atPath: s) else { throw HostError(.failed, "cannot read \(s)") }
                    return d
                }
                guard data.allSatisfy({ $0 == data[0] }) else {
                    throw HostError(
                        .usage,
                        "\(name) differs between the parts and is not a per-file output (.npy, .csv, .txt, .jsonl, a listed JSON map): it cannot be merged")
                }
                try place(sources[0], target)
                entries.append(entryOf[name]!)
            }
        }
        let results = full.map { $0.manifest["result"] ?? .object([:]) }
        let merged = results.isEmpty ? JSONValue.object([:]) : mergeResults(results, sum: Set(spec.sum ?? []))
        let seconds = parts.compactMap { $0.manifest["seconds"]?.doubleValue }.reduce(0, +)
        return Merged(entries: entries, result: merged, seconds: seconds)
    }

    /// `overlay_012.png` with prefix `overlay_` → (12, 3, ".png").
    public static func indexParts(_ name: String, _ prefix: String) -> (Int, Int, String)? {
        let rest = name.dropFirst(prefix.count)
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 9, let n = Int(digits) else { return nil }
        let ext = String(rest.dropFirst(digits.count))
        guard ext.isEmpty || ext.hasPrefix(".") else { return nil }
        return (n, digits.count, ext)
    }

    /// Parts' `result` objects: arrays concatenated, `sum` keys added, equal values kept, other
    /// differing values listed under `per_shard`.
    public static func mergeResults(_ results: [JSONValue], sum: Set<String>) -> JSONValue {
        var keys: [String] = []
        for r in results { for k in (r.objectValue ?? [:]).keys.sorted() where !keys.contains(k) { keys.append(k) } }
        var out: [String: JSONValue] = [:]
        var perShard: [String: JSONValue] = [:]
        for k in keys {
            let values = results.map { $0[k] ?? .null }
            if values.allSatisfy({ $0.arrayValue != nil }) {
                out[k] = .array(values.flatMap { $0.arrayValue! })
            } else if sum.contains(k), values.allSatisfy({ $0.doubleValue != nil }) {
                out[k] = .number(values.reduce(0) { $0 + $1.doubleValue! })
            } else if values.allSatisfy({ $0 == values[0] }) {
                out[k] = values[0]
            } else {
                perShard[k] = .array(values)
            }
        }
        if !perShard.isEmpty { out["per_shard"] = .object(perShard) }
        return .object(out)
    }

    /// Concatenates `.npy` files along their first axis, through memory maps (nothing is read
    /// whole into memory); dtype and trailing dimensions must agree.
    public static func concatenateNPY(_ sources: [String], to target: String) throws -> (DType, [Int]) {
        var maps: [(MappedFile, NPY.Header)] = []
        for s in sources {
            let file: MappedFile
            do { file = try MappedFile(path: s) } catch { throw HostError(.failed, "cannot map \(s): \(error)") }
            let data = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: file.bytes), count: file.count, deallocator: .none)
            let h: NPY.Header
            do { h = try NPY.header(data, path: s) } catch { throw HostError(.usage, "\(error)") }
            guard !h.shape.isEmpty else { throw HostError(.usage, "\(s) holds a scalar: nothing to concatenate") }
            if let (_, h0) = maps.first {
                guard h.dtype == h0.dtype, Array(h.shape.dropFirst()) == Array(h0.shape.dropFirst()) else {
                    throw HostError(
                        .usage, "\(s) is \(h.dtype.name) \(h.shape), the first part is \(h0.dtype.name) \(h0.shape): only the first dimension may differ")
                }
            }
            maps.append((file, h))
        }
        var shape = maps[0].1.shape
        shape[0] = maps.reduce(0) { $0 + $1.1.shape[0] }
        guard FileManager.default.createFile(atPath: target, contents: NPY.encodeHeader(dtype: maps[0].1.dtype, shape: shape)),
            let out = FileHandle(forWritingAtPath: target)
        else { throw HostError(.failed, "cannot write \(target)") }
        defer { try? out.close() }
        do {
            try out.seekToEnd()
            for (file, h) in maps {
                try out.write(contentsOf: UnsafeRawBufferPointer(start: file.bytes + h.dataOffset, count: h.byteCount))
            }
        } catch { throw HostError(.failed, "cannot write \(target): \(error.localizedDescription)") }
        return (maps[0].1.dtype, shape)
    }

    /// Text files joined line by line (`header`: every part's first line must be the same and is
    /// written once).
    public static func concatenateText(_ sources: [String], to target: String, header: Bool) throws {
        var out = Data()
        var firstLine: Data?
        for s in sources {
            guard var d = FileManager.default.contents(atPath: s) else { throw HostError(.failed, "cannot read \(s)") }
            if !d.isEmpty, d.last != UInt8(ascii: "\n") { d.append(UInt8(ascii: "\n")) }
            if header {
                let end = d.firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? d.endIndex
                let line = d[d.startIndex..<end]
                if let firstLine {
                    guard firstLine == line else {
                        throw HostError(.usage, "\(s) has another header than the first part's: were the shards run with the same options?")
                    }
                    d = d[end...]
                } else {
                    firstLine = line
                }
            }
            out.append(d)
        }
        guard FileManager.default.createFile(atPath: target, contents: out) else { throw HostError(.failed, "cannot write \(target)") }
    }

    /// JSON files whose top-level `member` is an object of per-file entries: the entries' text is
    /// joined (byte for byte, with the separator the files use); everything around it must agree.
    public static func spliceJSON(_ sources: [String], member: String, to target: String) throws {
        var around: (Data, Data)?
        var inners: [Data] = []
        var separator = Data(",".utf8)
        for s in sources {
            guard let d = FileManager.default.contents(atPath: s) else { throw HostError(.failed, "cannot read \(s)") }
            guard let span = JSONSpan.member(member, in: [UInt8](d)) else {
                throw HostError(.usage, "\(s): no top-level object member '\(member)' to merge (is it a complete JSON file?)")
            }
            let bytes = [UInt8](d)
            let before = Data(bytes[..<span.open]), after = Data(bytes[span.close...])
            if let around {
                guard around.0 == before, around.1 == after else {
                    throw HostError(.usage, "\(s) differs from the first part outside '\(member)': were the shards run with the same options and model?")
                }
            } else {
                around = (before, after)
            }
            if let sep = span.separator { separator = Data(sep) }
            let inner = Data(bytes[span.open..<span.close])
            if !inner.isEmpty { inners.append(inner) }
        }
        var out = around!.0
        for (i, inner) in inners.enumerated() {
            if i > 0 { out.append(separator) }
            out.append(inner)
        }
        out.append(around!.1)
        guard FileManager.default.createFile(atPath: target, contents: out) else { throw HostError(.failed, "cannot write \(target)") }
    }
}

/// A byte-level scanner of JSON text, enough to find where a top-level member's object value
/// holds its entries (strings, nesting and escapes respected; nothing is decoded).
enum JSONSpan {
    /// The bytes between `{` and `}` of the top-level member `name` (trimmed of the whitespace at
    /// both ends), and the separator between its first two entries when it has two.
    static func member(_ name: String, in b: [UInt8]) -> (open: Int, close: Int, separator: [UInt8]?)? {
        var i = skipSpace(b, 0)
        guard i < b.count, b[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        while true {
            i = skipSpace(b, i)
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
            guard let keyEnd = skipString(b, i) else { return nil }
            let key = String(decoding: b[(i + 1)..<(keyEnd - 1)], as: UTF8.self)
            i = skipSpace(b, keyEnd)
            guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
            i = skipSpace(b, i + 1)
            guard let valueEnd = skipValue(b, i) else { return nil }
            if key == name {
                guard b[i] == UInt8(ascii: "{") else { return nil }
                let open = skipSpace(b, i + 1)
                var close = valueEnd - 1
                while close > open, isSpace(b[close - 1]) { close -= 1 }
                // The separator: from the end of the first entry's value to the second key.
                var separator: [UInt8]?
                var j = open
                if j < close, let k = skipString(b, j) {
                    j = skipSpace(b, k)
                    if j < close, b[j] == UInt8(ascii: ":"), let v = skipValue(b, skipSpace(b, j + 1)), v < close {
                        var next = v
                        while next < close, b[next] != UInt8(ascii: "\"") { next += 1 }
                        separator = Array(b[v..<next])
                    }
                }
                return (open, close, separator)
            }
            i = skipSpace(b, valueEnd)
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: ",") {
                i += 1
                continue
            }
            return nil
        }
    }

    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 }

    static func skipSpace(_ b: [UInt8], _ i: Int) -> Int {
        var i = i
        while i < b.count, isSpace(b[i]) { i += 1 }
        return i
    }

    /// The index after the string starting at `i` (a `"`), nil if it does not end.
    static func skipString(_ b: [UInt8], _ i: Int) -> Int? {
        var i = i + 1
        while i < b.count {
            if b[i] == UInt8(ascii: "\\") {
                i += 2
                continue
            }
            if b[i] == UInt8(ascii: "\"") { return i + 1 }
            i += 1
        }
        return nil
    }

    /// The index after the value starting at `i`, nil if it does not end.
    static func skipValue(_ b: [UInt8], _ i: Int) -> Int? {
        guard i < b.count else { return nil }
        switch b[i] {
        case UInt8(ascii: "\""): return skipString(b, i)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var j = i
            while j < b.count {
                switch b[j] {
                case UInt8(ascii: "\""):
                    guard let e = skipString(b, j) else { return nil }
                    j = e
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return j + 1 }
                default: break
                }
                j += 1
            }
            return nil
        default:
            var j = i
            while j < b.count, !isSpace(b[j]), b[j] != UInt8(ascii: ","), b[j] != UInt8(ascii: "}"), b[j] != UInt8(ascii: "]") { j += 1 }
            return j > i ? j : nil
        }
    }
}
