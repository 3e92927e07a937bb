/// Decodes `Decodable` values straight from a `JSONValue` tree (no text round trip). Errors are
/// the standard `DecodingError`s with their coding paths.
struct JSONValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let o) = value else { throw mismatch([String: JSONValue].self, value, codingPath) }
        return KeyedDecodingContainer(Keyed<Key>(object: o, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        guard case .array(let a) = value else { throw mismatch([JSONValue].self, value, codingPath) }
        return Unkeyed(array: a, codingPath: codingPath)
    }

    func singleValueContainer() throws -> SingleValueDecodingContainer { Single(value: value, codingPath: codingPath) }

    struct Index: CodingKey {
        var stringValue: String { "\(intValue!)" }
        var intValue: Int?
        init(_ i: Int) { intValue = i }
        init?(stringValue: String) { nil }
        init?(intValue: Int) { self.intValue = intValue }
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let object: [String: JSONValue]
        let codingPath: [CodingKey]
        var allKeys: [Key] { object.keys.compactMap { Key(stringValue: $0) } }
        func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }
        func get(_ key: Key) throws -> JSONValue {
            guard let v = object[key.stringValue] else {
                throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no value for '\(key.stringValue)'"))
            }
            return v
        }
        func decodeNil(forKey key: Key) throws -> Bool { (object[key.stringValue] ?? .null) == .null }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            try decodeValue(T.self, try get(key), codingPath + [key])
        }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try JSONValueDecoder(value: try get(key), codingPath: codingPath + [key]).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
            try JSONValueDecoder(value: try get(key), codingPath: codingPath + [key]).unkeyedContainer()
        }
        func superDecoder() throws -> Decoder { JSONValueDecoder(value: .object(object), codingPath: codingPath) }
        func superDecoder(forKey key: Key) throws -> Decoder { JSONValueDecoder(value: try get(key), codingPath: codingPath + [key]) }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let array: [JSONValue]
        let codingPath: [CodingKey]
        var currentIndex = 0
        var count: Int? { array.count }
        var isAtEnd: Bool { currentIndex >= array.count }
        mutating func next() throws -> (JSONValue, [CodingKey]) {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(JSONValue.self, .init(codingPath: codingPath, debugDescription: "array ended"))
            }
            defer { currentIndex += 1 }
            return (array[currentIndex], codingPath + [Index(currentIndex)])
        }
        mutating func decodeNil() throws -> Bool {
            if !isAtEnd, array[currentIndex] == .null {
                currentIndex += 1
                return true
            }
            return false
        }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            let (v, path) = try next()
            return try decodeValue(T.self, v, path)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            let (v, path) = try next()
            return try JSONValueDecoder(value: v, codingPath: path).container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> UnkeyedDecodingContainer {
            let (v, path) = try next()
            return try JSONValueDecoder(value: v, codingPath: path).unkeyedContainer()
        }
        mutating func superDecoder() throws -> Decoder {
            let (v, path) = try next()
            return JSONValueDecoder(value: v, codingPath: path)
        }
    }

    struct Single: SingleValueDecodingContainer {
        let value: JSONValue
        let codingPath: [CodingKey]
        func decodeNil() -> Bool { value == .null }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeValue(T.self, value, codingPath) }
    }
}

private func mismatch(_ type: Any.Type, _ v: JSONValue, _ path: [CodingKey]) -> DecodingError {
    .typeMismatch(type, .init(codingPath: path, debugDescription: "expected \(type), found \(v.schemaType) \(v.compactText)"))
}

private func integer<I: FixedWidthInteger>(_ type: I.Type, _ v: JSONValue, _ path: [CodingKey]) throws -> I {
    guard case .number(let n) = v, n.rounded() == n, let i = I(exactly: n) else { throw mismatch(I.self, v, path) }
    return i
}

/// Decodes one value: the primitive types directly, everything else through its `init(from:)`.
private func decodeValue<T: Decodable>(_ type: T.Type, _ v: JSONValue, _ path: [CodingKey]) throws -> T {
    switch type {
    case is Bool.Type:
        guard case .bool(let b) = v else { throw mismatch(Bool.self, v, path) }
        return b as! T
    case is String.Type:
        guard case .string(let s) = v else { throw mismatch(String.self, v, path) }
        return s as! T
    case is Double.Type:
        guard case .number(let n) = v else { throw mismatch(Double.self, v, path) }
        return n as! T
    case is Float.Type:
        guard case .number(let n) = v else { throw mismatch(Float.self, v, path) }
        return Float(n) as! T
    case is Int.Type: return try integer(Int.self, v, path) as! T
    case is Int32.Type: return try integer(Int32.self, v, path) as! T
    case is Int64.Type: return try integer(Int64.self, v, path) as! T
    case is UInt64.Type: return try integer(UInt64.self, v, path) as! T
    case is UInt32.Type: return try integer(UInt32.self, v, path) as! T
    case is UInt8.Type: return try integer(UInt8.self, v, path) as! T
    case is Int8.Type: return try integer(Int8.self, v, path) as! T
    case is Int16.Type: return try integer(Int16.self, v, path) as! T
    case is UInt16.Type: return try integer(UInt16.self, v, path) as! T
    case is UInt.Type: return try integer(UInt.self, v, path) as! T
    case is JSONValue.Type: return v as! T
    default:
        return try T(from: JSONValueDecoder(value: v, codingPath: path))
    }
}
