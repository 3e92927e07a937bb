/// Encodes `Encodable` values straight into a `JSONValue` tree (no text round trip), so that a
/// plugin's `Response(encoding:)` costs microseconds. Non-finite floating-point values become null.
final class JSONValueEncoder: Encoder {
    /// A node of the tree being built; containers handed out keep a reference to theirs.
    final class Node {
        var scalar: JSONValue = .null
        var object: [String: Node]?
        var array: [Node]?

        var value: JSONValue {
            if let object { return .object(object.mapValues(\.value)) }
            if let array { return .array(array.map(\.value)) }
            return scalar
        }
        func makeObject() -> Node {
            if object == nil { object = [:]; array = nil }
            return self
        }
        func makeArray() -> Node {
            if array == nil { array = []; object = nil }
            return self
        }
    }

    let root = Node()
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(codingPath: [CodingKey] = []) { self.codingPath = codingPath }

    static func encode(_ value: some Encodable) throws -> JSONValue {
        try encodeValue(value, path: [])
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(Keyed<Key>(node: root.makeObject(), codingPath: codingPath))
    }

    func unkeyedContainer() -> UnkeyedEncodingContainer { Unkeyed(node: root.makeArray(), codingPath: codingPath) }

    func singleValueContainer() -> SingleValueEncodingContainer { Single(node: root, codingPath: codingPath) }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: Node
        let codingPath: [CodingKey]
        func set(_ key: Key, _ v: JSONValue) {
            let n = Node()
            n.scalar = v
            node.object![key.stringValue] = n
        }
        mutating func encodeNil(forKey key: Key) throws { set(key, .null) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            set(key, try encodeValue(value, path: codingPath + [key]))
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let child = Node().makeObject()
            node.object![key.stringValue] = child
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath + [key]))
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
            let child = Node().makeArray()
            node.object![key.stringValue] = child
            return Unkeyed(node: child, codingPath: codingPath + [key])
        }
        mutating func superEncoder() -> Encoder { JSONValueEncoder(codingPath: codingPath) }
        mutating func superEncoder(forKey key: Key) -> Encoder { JSONValueEncoder(codingPath: codingPath + [key]) }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let node: Node
        let codingPath: [CodingKey]
        var count: Int { node.array?.count ?? 0 }
        func append(_ v: JSONValue) {
            let n = Node()
            n.scalar = v
            node.array!.append(n)
        }
        mutating func encodeNil() throws { append(.null) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            append(try encodeValue(value, path: codingPath + [JSONValueDecoder.Index(count)]))
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let child = Node().makeObject()
            node.array!.append(child)
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath))
        }
        mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
            let child = Node().makeArray()
            node.array!.append(child)
            return Unkeyed(node: child, codingPath: codingPath)
        }
        mutating func superEncoder() -> Encoder { JSONValueEncoder(codingPath: codingPath) }
    }

    struct Single: SingleValueEncodingContainer {
        let node: Node
        let codingPath: [CodingKey]
        mutating func encodeNil() throws { node.scalar = .null }
        mutating func encode<T: Encodable>(_ value: T) throws { node.scalar = try encodeValue(value, path: codingPath) }
    }
}

/// Encodes one value: primitives directly, everything else through its `encode(to:)`.
private func encodeValue<T: Encodable>(_ value: T, path: [CodingKey]) throws -> JSONValue {
    switch value {
    case let v as Bool: return .bool(v)
    case let v as String: return .string(v)
    case let v as Double: return v.isFinite ? .number(v) : .null
    case let v as Float: return v.isFinite ? .number(Double(v)) : .null
    case let v as Int: return .number(Double(v))
    case let v as Int64: return .number(Double(v))
    case let v as Int32: return .number(Double(v))
    case let v as UInt64: return .number(Double(v))
    case let v as UInt32: return .number(Double(v))
    case let v as UInt8: return .number(Double(v))
    case let v as JSONValue: return v
    default:
        let encoder = JSONValueEncoder(codingPath: path)
        try value.encode(to: encoder)
        return encoder.root.value
    }
}
