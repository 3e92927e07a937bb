import Foundation

/// A JSON document as a Swift value: what options, metadata and results are made of.
public enum JSONValue: Codable, Equatable, Sendable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n):
            if n.rounded() == n && abs(n) < 9.0e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Parses JSON text. The error (`JSONParseError`) names `source` and where the text stopped
    /// being JSON (line and column).
    public static func parse(_ text: String, source: String = "JSON") throws -> JSONValue {
        do { return try JSONText.parse(text) } catch let e as JSONText.ParseError {
            throw JSONParseError(source: source, detail: e.description)
        }
    }

    /// Parses JSON text and also returns the file order of object keys, which `JSONValue` does not
    /// keep: for every object at depth ≤ `keyOrderDepth` (the root is depth 0) reached through
    /// object keys only, its keys as written, under its key path (`[]` for the root).
    public static func parse(_ text: String, source: String = "JSON", keyOrderDepth: Int) throws
        -> (value: JSONValue, keyOrder: [[String]: [String]])
    {
        do { return try JSONText.parse(text, keyOrderDepth: keyOrderDepth) } catch let e as JSONText.ParseError {
            throw JSONParseError(source: source, detail: e.description)
        }
    }

    /// Converts any Encodable value.
    public init(encoding value: some Encodable) throws {
        self = try JSONValueEncoder.encode(value)
    }

    /// Parses JSON text and decodes it into `T` (the fast path used across the ABI).
    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try JSONText.parse(text).decode(T.self)
    }

    /// Decodes this value into a Decodable type (directly, without going through text).
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try T(from: JSONValueDecoder(value: self, codingPath: []))
    }

    /// Compact text with sorted keys (stable across runs).
    public var compactText: String { text(pretty: false) }
    /// Indented text with sorted keys.
    public var prettyText: String { text(pretty: true) }
    public var description: String { compactText }

    public func text(pretty: Bool) -> String { JSONText.write(self, pretty: pretty) }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var doubleValue: Double? { if case .number(let n) = self { n } else { nil } }
    public var intValue: Int? {
        if case .number(let n) = self, n.rounded() == n, abs(n) < 9.0e15 { return Int(n) }
        return nil
    }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { a } else { nil } }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }

    /// The JSON type name used by JSON Schema ("integer" for integral numbers).
    public var schemaType: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number(let n): n.rounded() == n ? "integer" : "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }

    static func explain(_ error: Error) -> String {
        if case DecodingError.dataCorrupted(let ctx) = error {
            let under = (ctx.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return under ?? ctx.debugDescription
        }
        return "\(error)"
    }
}

/// JSON text that could not be parsed.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let source: String
    public let detail: String
    public var description: String { "\(source) is not valid JSON: \(detail)" }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
    }
    public init(nilLiteral: ()) { self = .null }
}
