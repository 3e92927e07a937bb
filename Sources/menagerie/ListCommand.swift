import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the components of every plugin.")

    @Argument(help: "Only components whose id matches this glob (e.g. 'finer-*').")
    var glob: String?

    @Option(name: .long, help: "Only components of this kind (\(Kind.allCases.map(\.rawValue).joined(separator: ", "))).")
    var kind: String?

    @Flag(name: .long, help: "Print JSON on stdout.")
    var json = false

    @OptionGroup var global: GlobalOptions

    struct Row: Codable {
        let id, kind, plugin, version, summary, path: String
        let operations: [String]
        let builtIn: Bool
        enum CodingKeys: String, CodingKey { case id, kind, plugin, version, summary, path, operations, builtIn = "built_in" }
    }

    func run() throws {
        if let kind, Kind(rawValue: kind) == nil {
            throw HostError(
                .usage,
                "unknown kind '\(kind)'.\(didYouMean(kind, in: Kind.allCases.map(\.rawValue))) Kinds: \(Kind.allCases.map(\.rawValue).joined(separator: ", "))."
            )
        }
        let registry = try global.registry()
        let rows = registry.components.filter { item in
            (kind == nil || item.component.kind == kind) && (glob == nil || fnmatch(glob!, item.component.id, 0) == 0)
        }.map { p, c in
            Row(
                id: c.id, kind: c.kind, plugin: p.metadata?.name ?? "", version: p.metadata?.version ?? "", summary: c.summary,
                path: p.path, operations: c.operations.map(\.name) + (c.tour == true ? ["tour"] : []), builtIn: p.builtIn)
        }
        if json { return try printJSON(rows) }
        if rows.isEmpty {
            print(
                "No components" + (glob != nil || kind != nil ? " match." : " found. Search path: ")
                    + (glob == nil && kind == nil ? registry.searchPath.folders.map(\.path).joined(separator: ":") : ""))
        } else {
            print(table([["COMPONENT", "KIND", "PLUGIN", "SUMMARY"]] + rows.map { [$0.id, $0.kind, $0.plugin + " " + $0.version, $0.summary] }))
        }
        let failed = registry.failed.count
        if failed > 0 { writeError("note: \(failed) plugin file\(failed == 1 ? "" : "s") failed to load: see `menagerie plugins --failed`") }
    }
}

struct PluginsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plugins", abstract: "Plugin files with their status, ABI and reason of failure.")

    @Flag(name: .long, help: "Only the plugins that failed to load.")
    var failed = false

    @Flag(name: .long, help: "Print JSON on stdout.")
    var json = false

    @Option(name: .long, help: "Pin every loadable plugin outside the built-in folder into this lock file (SHA-256), then list.")
    var writeLock: String?

    @OptionGroup var global: GlobalOptions

    struct Row: Codable {
        let path, status, origin: String
        let name, version, abi, toolchain, reason, sha256: String?
        let components: [String]
    }

    func run() throws {
        var registry = try global.registry()
        if let writeLock {
            var pins: [String: String] = [:]
            // Pin what the scan accepted, ignoring any lock file currently in force.
            let unlocked = Registry(searchPath: registry.searchPath, rescan: false, lock: nil)
            for e in unlocked.entries where !e.builtIn && e.status == .ok { pins[e.path] = try FileDigest.sha256(path: e.path) }
            try LockFile(plugins: pins).write(to: writeLock)
            writeError("wrote \(pins.count) pin\(pins.count == 1 ? "" : "s") to \(writeLock)")
            registry = unlocked
        }
        let entries = registry.entries.filter { !failed || $0.status == .failed }
        let rows = entries.map { e in
            Row(
                path: e.path, status: e.status.rawValue, origin: e.origin, name: e.metadata?.name, version: e.metadata?.version,
                abi: e.abi, toolchain: e.toolchain, reason: e.reason, sha256: e.sha256, components: e.metadata?.components.map(\.id) ?? [])
        }
        if json { return try printJSON(rows) }
        if rows.isEmpty {
            print(failed ? "No plugin failed to load." : "No plugin files found.")
            return
        }
        print(
            table(
                [["STATUS", "PLUGIN", "ABI", "ORIGIN", "FILE"]]
                    + rows.map {
                        [$0.status, ($0.name ?? "-") + ($0.version.map { " " + $0 } ?? ""), $0.abi ?? "-", $0.origin, $0.path]
                    }))
        for r in rows where r.status == "failed" { print("  \(r.path): \(r.reason ?? "unknown reason")") }
    }
}

/// `table`, with its last column wrapped so that no line is wider than `columns`.
func wrappedTable(_ rows: [[String]], columns: Int) -> String {
    guard let width = rows.map(\.count).max(), width > 1 else { return table(rows) }
    var widths = [Int](repeating: 0, count: width)
    for r in rows { for (i, c) in r.enumerated() where i < width - 1 { widths[i] = max(widths[i], c.count) } }
    let indent = widths.dropLast().reduce(0, +) + 2 * (width - 1)
    let room = max(30, columns - indent)
    var out: [String] = []
    for r in rows {
        let head = r.dropLast().enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
        let lines = wrap(r.last ?? "", width: room)
        out.append(head + "  " + (lines.first ?? ""))
        for l in lines.dropFirst() { out.append(String(repeating: " ", count: indent) + l) }
    }
    return out.joined(separator: "\n")
}

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "A component's summary, paper, operations and options.")

    @Argument(help: "The component id (see `menagerie list`).", completion: .custom { ShellCompletion.components($0, $1, $2) })
    var component: String

    @Option(name: .long, help: "Only this operation (its tensors), and the options.", completion: .custom { ShellCompletion.operations($0, $1, $2) })
    var op: String?

    @Flag(name: .long, help: "Print JSON on stdout.")
    var json = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let registry = try global.registry()
        let (plugin, c) = try registry.component(component)
        let names = c.operations.map(\.name) + (c.tour == true ? ["tour"] : [])
        if let op, !names.contains(op) {
            throw HostError(.usage, "'\(c.id)' has no operation '\(op)'.\(didYouMean(op, in: names)) Operations: \(names.joined(separator: ", ")).")
        }
        let columns = terminalColumns()
        let meta = plugin.metadata!
        if json {
            let doc: JSONValue = [
                "component": try JSONValue(encoding: c),
                "plugin": [
                    "name": .string(meta.name), "version": .string(meta.version),
                    "license": .string(meta.license), "authors": .array(meta.authors.map { .string($0) }),
                    "paper": try JSONValue(encoding: meta.paper), "path": .string(plugin.path), "abi": .string(plugin.abi ?? ""),
                ],
            ]
            print(doc.prettyText)
            return
        }
        print("\(c.id)  (\(c.kind))")
        print("  \(c.summary)")
        print("plugin: \(meta.name) \(meta.version), \(meta.license), by \(meta.authors.joined(separator: ", "))")
        print("file:   \(plugin.path)  (ABI \(plugin.abi ?? "?"), \(plugin.toolchain ?? "?"))")
        if let paper = meta.paper { print("paper:  \(paper.title)\n        \(paper.url)") }
        print("\noperations:")
        for operation in c.operations where op == nil || op == operation.name {
            print("  \(operation.name)\(operation.name == c.operations.first?.name ? " (default)" : "")  \(operation.summary)")
            var rows: [[String]] = []
            for t in operation.inputs {
                rows.append(["    in", t.name, t.dtypes.joined(separator: "|"), t.shape, (t.optional ? "(optional) " : "") + t.summary])
            }
            for t in operation.outputs { rows.append(["    out", t.name, t.dtypes.joined(separator: "|"), t.shape, t.summary]) }
            if !rows.isEmpty { print(wrappedTable(rows, columns: columns)) }
        }
        if c.tour == true, op == nil || op == "tour" { print("  tour  run on embedded data (used by `menagerie tour`)") }
        let schema = OptionSchema(c.options)
        print("\noptions:" + (schema.names.isEmpty ? " none" : ""))
        var rows: [[String]] = []
        for name in schema.names {
            let p = schema.properties[name]!
            var type = schema.types(of: name).joined(separator: "|")
            if let items = p["items"]?["type"]?.stringValue { type += "<\(items)>" }
            let def = p["default"].map { $0.compactText } ?? "-"
            var help = p["description"]?.stringValue ?? ""
            if let e = p["enum"]?.arrayValue { help += (help.isEmpty ? "" : "; ") + "one of " + e.map(\.compactText).joined(separator: ", ") }
            let low = p["minimum"]?.compactText, high = p["maximum"]?.compactText
            if low != nil || high != nil { help += (help.isEmpty ? "" : "; ") + "range \(low ?? "")…\(high ?? "")" }
            rows.append(["  " + name, type, def, help])
        }
        if !rows.isEmpty { print(wrappedTable([["  NAME", "TYPE", "DEFAULT", "DESCRIPTION"]] + rows, columns: columns)) }
        if let benchmarks = c.benchmarks, !benchmarks.isEmpty, op == nil {
            print("\nbenchmarks (menagerie bench NAME):")
            print(wrappedTable([["  NAME", "UNIT", "WHAT IS TIMED"]] + benchmarks.map { ["  " + $0.name, $0.unit, $0.summary] }, columns: columns))
        }
        print("\nrun: menagerie run \(c.id) [\(c.operations.first?.name ?? "")] --set KEY=VALUE --input NAME=FILE --out DIR")
    }
}

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "_probe", abstract: "Scan one plugin file (internal: run by the host in a child process).",
        shouldDisplay: false)
    @Argument var path: String

    func run() throws {
        let report = Handshake.probeReport(path: path)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        ProbeReport.emit(try encoder.encode(report))
    }
}
