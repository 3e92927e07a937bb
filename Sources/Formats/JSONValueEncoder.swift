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
            if object == nil {
                object = [:]
                array = nil
            }
            return self
        }
        func makeArray() -> Node {
            if array == nil {
                array = []
                object = nil
            }
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

/// Encodes one value: primitives directly (by metatype comparison, cheaper than a chain of dynamic
/// casts), everything else through its `encode(to:)`.
private func encodeValue<T: Encodable>(_ value: T, path: [CodingKey]) throws -> JSONValue {
    let t = T.self
    if t == Int.self { return .number(Double(unsafeBitCast(value, to: Int.self))) }
    if t == Double.self {
        let v = unsafeBitCast(value, to: Double.self)
        return v.isFinite ? .number(v) : .null
    }
    if t == String.self { return .string(value as! String) }
    if t == Bool.self { return .bool(unsafeBitCast(value, to: Bool.self)) }
    if t == Float.self {
        let v = unsafeBitCast(value, to: Float.self)
        return v.isFinite ? .number(Double(v)) : .null
    }
    if t == Int64.self { return .number(Double(unsafeBitCast(value, to: Int64.self))) }
    if t == Int32.self { return .number(Double(unsafeBitCast(value, to: Int32.self))) }
    if t == UInt64.self { return .number(Double(unsafeBitCast(value, to: UInt64.self))) }
    if t == UInt32.self { return .number(Double(unsafeBitCast(value, to: UInt32.self))) }
    if t == UInt8.self { return .number(Double(unsafeBitCast(value, to: UInt8.self))) }
    if t == JSONValue.self { return value as! JSONValue }
    let encoder = JSONValueEncoder(codingPath: path)
    try value.encode(to: encoder)
    return encoder.root.value
}
