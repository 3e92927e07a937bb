import Formats
import Foundation
import MenagerieKit
import Tensors

/// Everything `menagerie run` checks before any work starts: the component, the operation, the
/// options (`--config` then `--set`, typed by the component's schema) and the input files.
public struct RunRequest: Sendable {
    public let plugin: RegistryEntry
    public let component: ComponentInfo
    public let operation: String
    /// The options given by the user (sent to the plugin, which fills in defaults).
    public let options: JSONValue
    /// Defaults merged with the given options (recorded in result.json; several files given to
    /// one folder option are recorded by their count, not by the temporary folder they go in).
    public let effectiveOptions: JSONValue
    public let inputs: [(name: String, tensor: Tensor)]
    /// What each input named: a path, or several joined by ", " (repeated `--input` or a glob).
    public let inputPaths: [String: String]
    /// The seed the component draws from: its own `seed` option when given, else the run's `--seed`
    /// (which is also the default of that option). Recorded in result.json.
    public let effectiveSeed: UInt64
    /// Folders made for this run (several files given to one folder input); remove them afterwards.
    public let temporaryFolders: [String]

    /// One rule for seeds: the run's `seed` is the default of every component's `seed` option; an
    /// explicit option wins. Several `--input NAME=PATH` of one name, or a glob (`photos/*.jpg`), go
    /// to the component as one folder of links when NAME is a folder option.
    public init(
        registry: Registry, component id: String, operation: String?, config: String?, sets: [String], inputs: [String],
        seed: UInt64 = 0
    ) throws {
        let (plugin, component) = try registry.component(id)
        self.plugin = plugin
        self.component = component
        let ops = component.operations.map(\.name) + (component.tour == true ? ["tour"] : [])
        let op = operation ?? component.operations.first?.name ?? ""
        guard ops.contains(op) else {
            throw HostError(.usage, "'\(id)' has no operation '\(op)'.\(didYouMean(op, in: ops)) Operations: \(ops.joined(separator: ", ")).")
        }
        self.operation = op

        let schema = OptionSchema(component.options)
        var given: [String: JSONValue] = [:]
        if let config {
            let text: String
            do { text = try RegularFile.text(config, limit: 64 << 20) } catch {
                throw HostError(.usage, "--config \(config) does not exist or is not readable: \(error)")
            }
            let value: JSONValue
            do { value = try JSONValue.parse(text, source: "--config \(config)") } catch { throw HostError(.usage, "\(error)") }
            guard let object = value.objectValue else { throw HostError(.usage, "--config \(config) must hold a JSON object of options") }
            let (options, renamed) = schema.normalized(object)
            for (old, new) in renamed { RunRequest.warnDeprecated(old, new, component: id) }
            given = options
        }
        for s in sets {
            guard let eq = s.firstIndex(of: "="), eq != s.startIndex else {
                throw HostError(.usage, "--set '\(s)' must be KEY=VALUE (see `menagerie info \(id)` for the options)")
            }
            var key = String(s[..<eq])
            let text = String(s[s.index(after: eq)...])
            if schema.canonicalKey(key) != key {
                RunRequest.warnDeprecated(key, schema.canonicalKey(key), component: id)
                key = schema.canonicalKey(key)
            }
            do { given[key] = try schema.parse(text, for: key, component: id) } catch { throw HostError(.usage, "\(error)") }
        }
        let spec = component.operations.first { $0.name == op }
        let declared = spec?.inputs.map(\.name) ?? []
        var loaded: [(String, Tensor)] = []
        var paths: [String: String] = [:]
        // NAME → its paths in order (globs expanded), so that a name given several times is one input.
        var grouped: [(name: String, paths: [String])] = []
        for item in inputs {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex, item.index(after: eq) != item.endIndex else {
                throw HostError(.usage, "--input '\(item)' must be NAME=PATH")
            }
            let name = String(item[..<eq]), raw = String(item[item.index(after: eq)...])
            if !declared.isEmpty && !declared.contains(name) {
                throw HostError(.usage, "'\(id)' \(op) takes no input '\(name)'.\(didYouMean(name, in: declared)) Inputs: \(declared.joined(separator: ", ")).")
            }
            let expanded = try RunRequest.expand(raw, name: name)
            if let i = grouped.firstIndex(where: { $0.name == name }) { grouped[i].paths += expanded } else { grouped.append((name, expanded)) }
        }
        var folders: [String] = []
        for (name, list) in grouped {
            paths[name] = list.joined(separator: ", ")
            let takesPath = schema.types(of: name).contains("string")
            // Several files go only to a path option (a string without a fixed set of values).
            let takesFiles = takesPath && schema.properties[name]?["enum"] == nil
            if list.count > 1 {
                // Several files for one name: a folder of links, for a component that reads a folder.
                guard takesFiles else {
                    throw HostError(.usage, "--input \(name) is given \(list.count) files, but '\(id)' takes one tensor file for '\(name)'")
                }
                guard given[name] == nil else { throw HostError(.usage, "'\(name)' is given both as --input and as an option") }
                let folder = try RunRequest.linkFolder(list, name: name)
                folders.append(folder)
                given[name] = .string(folder)
                continue
            }
            let path = list[0]
            // A folder, or a file that is not a tensor file, goes to the component as the string
            // option of the same name when it declares one (e.g. `--input images=DIR`).
            if InputFile.isPathInput(path), takesPath {
                guard given[name] == nil else { throw HostError(.usage, "'\(name)' is given both as --input and as an option") }
                given[name] = .string((path as NSString).expandingTildeInPath)
                continue
            }
            loaded.append((name, try InputFile.load(path: path, name: name)))
        }
        self.temporaryFolders = folders
        if let spec, op != "tour" {
            let missing = spec.inputs.filter { !$0.optional && paths[$0.name] == nil }.map(\.name)
            if !missing.isEmpty {
                throw HostError(
                    .usage,
                    "'\(id)' \(op) needs " + missing.map { "--input \($0)=FILE" }.joined(separator: " ")
                        + " (" + InputFile.supportedExtensions.map { "." + $0 }.joined(separator: ", ") + ")")
            }
        }
        // The run's seed is the default of the component's own seed option.
        if schema.properties["seed"] != nil, given["seed"] == nil {
            guard seed <= 1 << 53 else {
                throw HostError(.usage, "--seed \(seed) is too large for '\(id)''s seed option (at most 2^53 = 9007199254740992)")
            }
            given["seed"] = .number(Double(seed))
        }
        do { given = try schema.validate(given, component: id) } catch { throw HostError(.usage, "\(error)") }
        if let s = given["seed"]?.doubleValue, s >= 0, s < 1.8e19 { self.effectiveSeed = UInt64(s) } else { self.effectiveSeed = seed }
        self.options = .object(given)
        var effective = schema.defaults
        for (k, v) in given { effective[k] = v }
        // Files given one by one or by a glob reach the component as a temporary folder of links,
        // another in every process: the record names them by their count (`inputs` lists them), so
        // that result.json is the same for the same command (and the shards of one run agree).
        for (name, list) in grouped where list.count > 1 {
            effective[name] = .string("(\(list.count) files given with --input \(name)=…)")
        }
        self.effectiveOptions = .object(effective)

        self.inputs = loaded
        self.inputPaths = paths
    }

    /// One line on stderr per option spelled the old way.
    static func warnDeprecated(_ old: String, _ new: String, component: String) {
        FileHandle.standardError.write(Data("warning: option '\(old)' of '\(component)' is now spelled '\(new)'; the old spelling will be removed\n".utf8))
    }

    /// A path, or the sorted matches of a glob (`*`, `?`, `[…]`); a glob matching nothing is an error.
    static func expand(_ raw: String, name: String) throws -> [String] {
        let path = (raw as NSString).expandingTildeInPath
        guard path.contains(where: { "*?[".contains($0) }) else { return [path] }
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(path, 0, nil, &g) == 0, g.gl_pathc > 0 else {
            throw HostError(.usage, "--input \(name)=\(raw) matches no file")
        }
        return (0..<Int(g.gl_pathc)).compactMap { g.gl_pathv[$0].map { String(cString: $0) } }.sorted()
    }

    /// A private folder (in $TMPDIR, swept like a scratch folder if the run is killed) holding one
    /// symbolic link per file (`FolderFiles.linkFolder`).
    static func linkFolder(_ files: [String], name: String, listed: [String]? = nil) throws -> String {
        let folder: String
        do { folder = try FolderFiles.linkFolder(files, listed: listed) } catch { throw HostError(.usage, "--input \(name): \(error)") }
        Lifecycle.markOwned(folder)
        Lifecycle.removeOnForcedExit(folder)
        return folder
    }
}
