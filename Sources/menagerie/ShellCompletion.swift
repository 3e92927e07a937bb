import ArgumentParser
import Foundation
import Logging
import MenagerieHost
import MenagerieKit

/// Dynamic shell completion: the candidates a `CompletionKind.custom` closure returns when the shell
/// asks (`menagerie ---completion …`). Each call reads the registry cache (no plugin is loaded or
/// run), so a TAB costs one short start of the executable.
///
/// The closures get the shell's words, the index of the word being completed and its text before the
/// cursor. zsh and fish pass `--set key=va` as one word; bash splits it at `=` (`key`, `=`, `va`):
/// both forms are understood, and the bash script adds file completion after `--input NAME=`
/// (`BashCompletion`).
enum ShellCompletion {
    /// Options of `run` that take a value (the value is not a positional argument).
    static let valueOptions: Set<String> = ["--set", "--config", "--input", "--out", "--seed", "--lock", "--timeout", "--memory-limit"]

    /// The registry as `list` reads it (cache first); nil when it cannot be read.
    static func registry() -> Registry? {
        let safe = ["1", "true", "yes"].contains(ProcessInfo.processInfo.environment["MENAGERIE_SAFE_MODE"]?.lowercased() ?? "")
        var quiet = Logger(label: "menagerie") // a completion never writes warnings into the command line
        quiet.logLevel = .critical
        return Registry(searchPath: SearchPath(safeMode: safe), logger: quiet)
    }

    /// Component ids starting with `prefix`.
    static func components(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        (registry()?.components.map(\.component.id) ?? []).filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// The operations of the component named on the command line (and `tour` when it has one).
    static func operations(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        guard let c = component(in: words, completing: index) else { return [] }
        return (c.operations.map(\.name) + (c.tour == true ? ["tour"] : [])).filter { $0.hasPrefix(prefix) }
    }

    /// `--set`: the component's option keys as `key=`; after `key=`, the values an enum or a boolean allows.
    static func setValues(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        guard let c = component(in: words, completing: index) else { return [] }
        let properties = c.options["properties"]?.objectValue ?? [:]
        guard let eq = prefix.firstIndex(of: "=") else {
            return properties.keys.sorted().map { $0 + "=" }.filter { $0.hasPrefix(prefix) }
        }
        let key = String(prefix[..<eq])
        guard let property = properties[key] else { return [] }
        var values =
            property["enum"]?.arrayValue?.compactMap { v -> String? in
                if let s = v.stringValue { return s }
                if let d = v.doubleValue { return d.rounded() == d && abs(d) < 1e15 ? String(Int64(d)) : String(d) }
                return nil
            } ?? []
        let types = property["type"]?.stringValue.map { [$0] } ?? property["type"]?.arrayValue?.compactMap(\.stringValue) ?? []
        if values.isEmpty, types.contains("boolean") { values = ["true", "false"] }
        return values.map { key + "=" + $0 }.filter { $0.hasPrefix(prefix) }
    }

    /// `--input`: the operation's input names as `name=` (or the component's path options when the
    /// operation declares none); after `name=`, files and folders (`name=photos/`).
    static func inputValues(_ words: [String], _ index: Int, _ prefix: String) -> [String] {
        if let eq = prefix.firstIndex(of: "=") {
            let key = String(prefix[...eq])
            return files(matching: String(prefix[prefix.index(after: eq)...])).map { key + $0 }
        }
        guard let c = component(in: words, completing: index) else { return [] }
        let operation = positionals(in: words, completing: index).dropFirst().first ?? c.operations.first?.name
        var names = c.operations.first { $0.name == operation }?.inputs.map(\.name) ?? []
        if names.isEmpty {
            let properties = c.options["properties"]?.objectValue ?? [:]
            names = properties.keys.sorted().filter { key in
                let p = properties[key]!
                let types = p["type"]?.stringValue.map { [$0] } ?? p["type"]?.arrayValue?.compactMap(\.stringValue) ?? []
                return types.contains("string") && p["enum"] == nil
            }
        }
        return names.map { $0 + "=" }.filter { $0.hasPrefix(prefix) }
    }

    /// Files and folders whose path starts with `prefix` (folders end in `/`; hidden ones only when
    /// the prefix names a dot).
    static func files(matching prefix: String) -> [String] {
        let slash = prefix.lastIndex(of: "/")
        let folder = slash.map { String(prefix[...$0]) } ?? ""
        let start = slash.map { String(prefix[prefix.index(after: $0)...]) } ?? prefix
        let listed = (folder.isEmpty ? "." : (folder as NSString).expandingTildeInPath)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: listed) else { return [] }
        return names.filter { $0.hasPrefix(start) && (start.hasPrefix(".") || !$0.hasPrefix(".")) }.sorted().map { name in
            var isFolder: ObjCBool = false
            FileManager.default.fileExists(atPath: listed + "/" + name, isDirectory: &isFolder)
            return folder + name + (isFolder.boolValue ? "/" : "")
        }
    }

    /// The positional words after the subcommand (`run`/`info`), skipping options, their values
    /// (also bash's `key`, `=`, `value` pieces) and the word being completed.
    static func positionals(in words: [String], completing index: Int) -> [String] {
        guard let command = words.indices.dropFirst().first(where: { ["run", "info"].contains(words[$0]) }) else { return [] }
        var out: [String] = []
        var i = command + 1
        while i < words.count {
            defer { i += 1 }
            if i == index { continue }
            let w = words[i]
            if valueOptions.contains(w) {
                i += 1
                while i + 1 < words.count, words[i + 1] == "=" { i += 2 }
                continue
            }
            if w.hasPrefix("-") || w.isEmpty || w == "=" { continue }
            out.append(w)
        }
        return out
    }

    /// The component the command line names, from the registry cache.
    static func component(in words: [String], completing index: Int) -> ComponentInfo? {
        guard let id = positionals(in: words, completing: index).first else { return nil }
        return try? registry()?.component(id).component
    }
}
