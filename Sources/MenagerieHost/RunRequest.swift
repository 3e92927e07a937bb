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
    /// Defaults merged with the given options (recorded in result.json).
    public let effectiveOptions: JSONValue
    public let inputs: [(name: String, tensor: Tensor)]
    public let inputPaths: [String: String]

    public init(registry: Registry, component id: String, operation: String?, config: String?, sets: [String], inputs: [String]) throws {
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
            given = object
        }
        for s in sets {
            guard let eq = s.firstIndex(of: "="), eq != s.startIndex else {
                throw HostError(.usage, "--set '\(s)' must be KEY=VALUE (see `menagerie info \(id)` for the options)")
            }
            let key = String(s[..<eq]), text = String(s[s.index(after: eq)...])
            do { given[key] = try schema.parse(text, for: key, component: id) } catch { throw HostError(.usage, "\(error)") }
        }
        let spec = component.operations.first { $0.name == op }
        let declared = spec?.inputs.map(\.name) ?? []
        var loaded: [(String, Tensor)] = []
        var paths: [String: String] = [:]
        for item in inputs {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex, item.index(after: eq) != item.endIndex else {
                throw HostError(.usage, "--input '\(item)' must be NAME=PATH")
            }
            let name = String(item[..<eq]), path = String(item[item.index(after: eq)...])
            if !declared.isEmpty && !declared.contains(name) {
                throw HostError(.usage, "'\(id)' \(op) takes no input '\(name)'.\(didYouMean(name, in: declared)) Inputs: \(declared.joined(separator: ", ")).")
            }
            guard paths[name] == nil else { throw HostError(.usage, "--input \(name) is given twice") }
            paths[name] = path
            // A folder, or a file that is not a tensor file, goes to the component as the string
            // option of the same name when it declares one (e.g. `--input images=DIR`).
            if InputFile.isPathInput(path), schema.types(of: name).contains("string") {
                guard given[name] == nil else { throw HostError(.usage, "'\(name)' is given both as --input and as an option") }
                given[name] = .string((path as NSString).expandingTildeInPath)
                continue
            }
            loaded.append((name, try InputFile.load(path: path, name: name)))
        }
        if let spec, op != "tour" {
            let missing = spec.inputs.filter { !$0.optional && paths[$0.name] == nil }.map(\.name)
            if !missing.isEmpty {
                throw HostError(.usage, "'\(id)' \(op) needs " + missing.map { "--input \($0)=FILE" }.joined(separator: " ")
                    + " (" + InputFile.supportedExtensions.map { "." + $0 }.joined(separator: ", ") + ")")
            }
        }
        do { given = try schema.validate(given, component: id) } catch { throw HostError(.usage, "\(error)") }
        self.options = .object(given)
        var effective = schema.defaults
        for (k, v) in given { effective[k] = v }
        self.effectiveOptions = .object(effective)

        self.inputs = loaded
        self.inputPaths = paths
    }
}
