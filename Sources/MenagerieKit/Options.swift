import Foundation
import Synchronization

/// The options of a component: a `Codable` struct whose `init()` holds the defaults.
///
/// ```swift
/// struct Options: ComponentOptions {
///     var topK = 5
///     var bins = 10
///     static let help = ["topK": "k of top-k accuracy", "bins": "number of calibration bins"]
/// }
/// ```
/// `info` shows the JSON Schema derived from the defaults. Option keys are the property names in
/// snake_case (`topK` → `top_k`), whatever the Swift spelling; `help`, `choices` and `ranges` may be
/// keyed by either. The camelCase spelling is still accepted (the CLI warns that it is deprecated).
public protocol ComponentOptions: Codable, Sendable {
    init()
    /// A one-line description per option key.
    static var help: [String: String] { get }
    /// The allowed values of string options.
    static var choices: [String: [String]] { get }
    /// The allowed range of numeric options (the schema's `minimum` / `maximum`; for arrays, of
    /// each element), checked before the component sees them.
    static var ranges: [String: ClosedRange<Double>] { get }
}

extension ComponentOptions {
    public static var help: [String: String] { [:] }
    public static var choices: [String: [String]] { [:] }
    public static var ranges: [String: ClosedRange<Double>] { [:] }

    /// JSON Schema of these options, with the defaults of `init()` (computed once per type).
    public static var schema: JSONValue {
        OptionsCache.shared.entry(for: Self.self).schema
    }

    /// The defaults as a JSON object (computed once per type).
    static var defaultValues: [String: JSONValue] {
        OptionsCache.shared.entry(for: Self.self).defaults
    }

    static func computeSchema() -> JSONValue {
        let defaults = (try? JSONValue(encoding: Self())) ?? .object([:])
        var properties: [String: JSONValue] = [:]
        for (key, value) in defaults.objectValue ?? [:] {
            properties[snakeCase(key)] = propertySchema(
                type: value.schemaType, items: value.arrayValue?.first?.schemaType,
                defaultValue: value, key: key)
        }
        // Optionals that default to nil are not encoded: find them by reflection.
        for child in Mirror(reflecting: Self()).children {
            guard let label = child.label, properties[snakeCase(label)] == nil else { continue }
            let typeName = "\(type(of: child.value))"
            guard typeName.hasPrefix("Optional<") else { continue }
            let inner = String(typeName.dropFirst("Optional<".count).dropLast())
            let (type, items) = schemaType(swiftType: inner)
            properties[snakeCase(label)] = propertySchema(type: type, items: items, defaultValue: .null, key: label, nullable: true)
        }
        return ["type": "object", "properties": .object(properties), "additionalProperties": false]
    }

    /// The coding key (the Swift spelling) of each snake_case option key.
    static func codingKeys() -> [String: String] {
        var keys: [String: String] = [:]
        for key in ((try? JSONValue(encoding: Self()))?.objectValue ?? [:]).keys { keys[snakeCase(key)] = key }
        for child in Mirror(reflecting: Self()).children {
            if let label = child.label, keys[snakeCase(label)] == nil { keys[snakeCase(label)] = label }
        }
        return keys
    }

    private static func propertySchema(
        type: String, items: String?, defaultValue: JSONValue, key: String,
        nullable: Bool = false
    ) -> JSONValue {
        var p: [String: JSONValue] = [
            "type": nullable ? .array([.string(type), "null"]) : .string(type),
            "default": defaultValue,
        ]
        // An integral default of a Float/Double property still accepts fractions.
        if type == "integer", let mirrorType = swiftTypeName(of: key), ["Float", "Double"].contains(mirrorType) {
            p["type"] = nullable ? ["number", "null"] : "number"
        }
        if type == "array" {
            if let items { p["items"] = ["type": .string(items)] }
            if let t = swiftTypeName(of: key), t.contains("Float") || t.contains("Double") { p["items"] = ["type": "number"] }
            // An integer array with an empty default (`[Int] = []`): its items are integers all the same.
            if p["items"] == nil, let t = swiftTypeName(of: key), t.hasPrefix("Array<"), schemaType(swiftType: t).1 == "integer" {
                p["items"] = ["type": "integer"]
            }
            // An array of arrays (`[[Double]]`, e.g. points [[x, y], …]): the elements are arrays; their items are checked when decoded.
            if let t = swiftTypeName(of: key), t.hasPrefix("Array<Array<") {
                let inner = schemaType(swiftType: String(t.dropFirst("Array<Array<".count).dropLast(2))).0
                p["items"] = ["type": "array", "items": ["type": .string(inner)]]
            }
        }
        let snake = snakeCase(key)
        if let h = help[key] ?? help[snake] { p["description"] = .string(h) }
        if let c = choices[key] ?? choices[snake] { p["enum"] = .array(c.map { .string($0) }) }
        if let r = ranges[key] ?? ranges[snake] {
            p["minimum"] = .number(r.lowerBound)
            p["maximum"] = .number(r.upperBound)
        }
        return .object(p)
    }

    private static func swiftTypeName(of key: String) -> String? {
        Mirror(reflecting: Self()).children.first { $0.label == key }.map { "\(type(of: $0.value))" }
    }

    private static func schemaType(swiftType t: String) -> (String, String?) {
        switch t {
        case "Int", "Int32", "Int64", "UInt", "UInt32", "UInt64", "Int8", "Int16", "UInt8", "UInt16": return ("integer", nil)
        case "Float", "Double": return ("number", nil)
        case "Bool": return ("boolean", nil)
        case "String": return ("string", nil)
        default:
            if t.hasPrefix("Array<") {
                let inner = String(t.dropFirst("Array<".count).dropLast())
                return ("array", schemaType(swiftType: inner).0)
            }
            return ("object", nil)
        }
    }

    /// Decodes options from a (possibly partial) JSON object: missing keys take their defaults,
    /// unknown keys and wrong types are refused with a message naming the option.
    public static func decode(_ json: JSONValue, component: String) throws -> Self {
        let given = json.objectValue ?? [:]
        if given.isEmpty { return Self() }
        let schema = OptionSchema(schema)
        let validated = try schema.validate(schema.normalized(given).options, component: component)
        var merged = defaultValues
        for (k, v) in validated { merged[k] = v }
        // Back to the Swift spelling for decoding.
        let coding = OptionsCache.shared.entry(for: Self.self).codingKeys
        var decoded: [String: JSONValue] = [:]
        for (k, v) in merged { decoded[coding[k] ?? k] = v }
        do { return try JSONValue.object(decoded).decode(Self.self) } catch {
            throw MenagerieError.invalidArgument("options of '\(component)': \(OptionSchema.explain(error))")
        }
    }
}

/// Schema and defaults of each options type, computed on first use.
final class OptionsCache: Sendable {
    static let shared = OptionsCache()
    struct Entry: Sendable {
        let schema: JSONValue
        /// Keyed by the snake_case option keys.
        let defaults: [String: JSONValue]
        /// snake_case key → the Swift coding key.
        let codingKeys: [String: String]
    }
    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])

    func entry<O: ComponentOptions>(for type: O.Type) -> Entry {
        if let e = entries.withLock({ $0[ObjectIdentifier(type)] }) { return e }
        var defaults: [String: JSONValue] = [:]
        for (k, v) in (try? JSONValue(encoding: O()))?.objectValue ?? [:] { defaults[snakeCase(k)] = v }
        let e = Entry(schema: O.computeSchema(), defaults: defaults, codingKeys: O.codingKeys())
        entries.withLock { $0[ObjectIdentifier(type)] = e }
        return e
    }
}

/// `weightDecay` → `weight_decay`, `topK` → `top_k`, `mAP` → `m_ap`; snake_case stays as it is.
public func snakeCase(_ name: String) -> String {
    var out = ""
    var previous: Character?
    for c in name {
        if c.isUppercase {
            if let p = previous, p.isLowercase || p.isNumber { out.append("_") }
            out.append(Character(c.lowercased()))
        } else {
            out.append(c)
        }
        previous = c
    }
    return out
}

/// Options for components that take none.
public struct NoOptions: ComponentOptions {
    public init() {}
}

/// Checks and converts option values against a component's JSON Schema. Shared by the host
/// (before any work starts) and the SDK (inside the plugin).
public struct OptionSchema: Sendable {
    public let schema: JSONValue
    public init(_ schema: JSONValue) { self.schema = schema }

    public var properties: [String: JSONValue] { schema["properties"]?.objectValue ?? [:] }
    public var names: [String] { properties.keys.sorted() }

    public func types(of key: String) -> [String] {
        guard let t = properties[key]?["type"] else { return [] }
        if let s = t.stringValue { return [s] }
        return t.arrayValue?.compactMap(\.stringValue) ?? []
    }

    /// The defaults of every option that has one.
    public var defaults: [String: JSONValue] {
        properties.compactMapValues { $0["default"] }
    }

    /// Keys spelled the old camelCase way (`weightDecay`) renamed to the schema's snake_case key
    /// (`weight_decay`); `renamed` lists (old, new) so a caller can warn.
    public func normalized(_ given: [String: JSONValue]) -> (options: [String: JSONValue], renamed: [(String, String)]) {
        var out: [String: JSONValue] = [:], renamed: [(String, String)] = []
        for (key, value) in given {
            let snake = snakeCase(key)
            if properties[key] == nil, snake != key, properties[snake] != nil, given[snake] == nil {
                out[snake] = value
                renamed.append((key, snake))
            } else {
                out[key] = value
            }
        }
        return (out, renamed.sorted { $0.0 < $1.0 })
    }

    /// The schema's key for `key`: itself, or its snake_case form when only that exists.
    public func canonicalKey(_ key: String) -> String {
        properties[key] == nil && properties[snakeCase(key)] != nil ? snakeCase(key) : key
    }

    /// Refuses unknown keys (with the closest names) and values of the wrong type or outside `enum`.
    public func validate(_ given: [String: JSONValue], component: String) throws -> [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for (key, value) in given {
            guard let prop = properties[key] else {
                let known = names.isEmpty ? "it takes no options" : "its options are \(names.joined(separator: ", "))"
                throw MenagerieError.invalidArgument(
                    "'\(component)' has no option '\(key)'.\(didYouMean(key, in: names)) (\(known); see `menagerie info \(component)`)")
            }
            let allowed = types(of: key)
            let ok = allowed.isEmpty || allowed.contains { Self.matches(value, type: $0, items: prop["items"]?["type"]?.stringValue) }
            guard ok else {
                throw MenagerieError.invalidArgument(
                    "option '\(key)' of '\(component)' must be \(allowed.joined(separator: " or ")), got \(value.schemaType) \(value.compactText)")
            }
            try Self.checkNumbers(value, key: key, property: prop, types: allowed, component: component)
            if let choices = prop["enum"]?.arrayValue, !choices.contains(value) {
                throw MenagerieError.invalidArgument(
                    "option '\(key)' of '\(component)' must be one of \(choices.map(\.compactText).joined(separator: ", ")), got \(value.compactText)")
            }
            out[key] = value
        }
        return out
    }

    /// The largest integer magnitude an integer option takes (2^53: every such integer is exact as a
    /// JSON number and converts to `Int` without trapping).
    public static let integerMagnitude = 9_007_199_254_740_992.0

    /// Refuses numbers that no integer conversion can hold, and numbers outside the option's declared
    /// `minimum` / `maximum` (of the value, or of each element of an array).
    static func checkNumbers(_ value: JSONValue, key: String, property prop: JSONValue, types allowed: [String], component: String) throws {
        let numbers: [(Double, String)]
        let integer: Bool
        switch value {
        case .number(let n):
            numbers = [(n, "")]
            integer = allowed.contains("integer") && !allowed.contains("number")
        case .array(let a):
            numbers = a.enumerated().compactMap { i, v in v.doubleValue.map { ($0, "[\(i)]") } }
            integer = prop["items"]?["type"]?.stringValue == "integer"
        default: return
        }
        let lo = prop["minimum"]?.doubleValue, hi = prop["maximum"]?.doubleValue
        for (n, at) in numbers {
            guard n.isFinite else {
                throw MenagerieError.invalidArgument("option '\(key)\(at)' of '\(component)' must be a finite number, got \(n)")
            }
            if integer, abs(n) > integerMagnitude {
                throw MenagerieError.invalidArgument(
                    "option '\(key)\(at)' of '\(component)' = \(JSONValue.number(n).compactText) is beyond the integer range ±2^53")
            }
            if (lo.map { n < $0 } ?? false) || (hi.map { n > $0 } ?? false) {
                let range = [lo.map { "≥ \(JSONValue.number($0).compactText)" }, hi.map { "≤ \(JSONValue.number($0).compactText)" }]
                    .compactMap { $0 }.joined(separator: " and ")
                throw MenagerieError.invalidArgument(
                    "option '\(key)\(at)' of '\(component)' = \(JSONValue.number(n).compactText) is out of range: it must be \(range)")
            }
        }
    }

    static func matches(_ v: JSONValue, type: String, items: String?) -> Bool {
        switch (type, v) {
        case ("null", .null), ("boolean", .bool), ("string", .string), ("object", .object): return true
        case ("number", .number): return true
        case ("integer", .number(let n)): return n.rounded() == n
        case ("array", .array(let a)):
            guard let items else { return true }
            return a.allSatisfy { matches($0, type: items, items: nil) }
        default: return false
        }
    }

    /// Parses the text of `--set key=value` according to the option's type.
    /// Arrays take JSON (`[1,2]`) or comma-separated values (`1,2`).
    public func parse(_ text: String, for key: String, component: String) throws -> JSONValue {
        guard let prop = properties[key] else {
            throw MenagerieError.invalidArgument(
                "'\(component)' has no option '\(key)'.\(didYouMean(key, in: names)) (see `menagerie info \(component)`)")
        }
        let allowed = types(of: key)
        if allowed.contains("null") && (text == "null" || text.isEmpty) { return .null }
        for type in allowed where type != "null" {
            if let v = Self.parseScalar(text, type: type, items: prop["items"]?["type"]?.stringValue) {
                return try validate([key: v], component: component)[key]!
            }
        }
        throw MenagerieError.invalidArgument(
            "option '\(key)' of '\(component)' must be \(allowed.filter { $0 != "null" }.joined(separator: " or ")); '\(text)' is not")
    }

    static func parseScalar(_ text: String, type: String, items: String?) -> JSONValue? {
        let t = text.trimmingCharacters(in: .whitespaces)
        switch type {
        case "integer": return Int64(t).map { .number(Double($0)) }
        case "number": return Double(t).flatMap { $0.isFinite ? .number($0) : nil }
        case "boolean":
            switch t.lowercased() {
            case "true", "yes", "1", "on": return .bool(true)
            case "false", "no", "0", "off": return .bool(false)
            default: return nil
            }
        case "string": return .string(text)
        case "array":
            if t.hasPrefix("["), let v = try? JSONValue.parse(t), matches(v, type: "array", items: items) { return v }
            // Arrays of arrays only as JSON.
            if items == "array" { return nil }
            let parts = t.isEmpty ? [] : t.split(separator: ",").map(String.init)
            let values = parts.map { parseScalar($0, type: items ?? "string", items: nil) }
            guard values.allSatisfy({ $0 != nil }) else { return nil }
            return .array(values.map { $0! })
        case "object": return (try? JSONValue.parse(t)).flatMap { $0.objectValue != nil ? $0 : nil }
        default: return nil
        }
    }

    static func explain(_ error: Error) -> String {
        switch error {
        case DecodingError.typeMismatch(let t, let ctx), DecodingError.valueNotFound(let t, let ctx):
            return "option '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' must be \(t)"
        case DecodingError.dataCorrupted(let ctx):
            return "option '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))': \(ctx.debugDescription)"
        case DecodingError.keyNotFound(let k, _):
            return "option '\(k.stringValue)' is required"
        default:
            return "\(error)"
        }
    }
}
