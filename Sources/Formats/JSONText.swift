/// A small, strict JSON reader and writer for `JSONValue` (RFC 8259). It is several times faster
/// than going through Foundation's JSONDecoder, which matters on the invoke path (every call
/// carries options and a result as JSON), and its errors give line and column.
enum JSONText {
    struct ParseError: Error, CustomStringConvertible {
        let message: String
        let line: Int
        let column: Int
        var description: String { "\(message) at line \(line), column \(column)" }
    }

    static func parse(_ text: String) throws -> JSONValue {
        try parse(text, keyOrderDepth: -1).value
    }

    /// Parses and, for every object at nesting depth ≤ `keyOrderDepth` that is reached through
    /// object keys only, records its keys in file order under its key path.
    static func parse(_ text: String, keyOrderDepth: Int) throws -> (value: JSONValue, keyOrder: [[String]: [String]]) {
        var copy = text
        return try copy.withUTF8 { bytes in
            var p = Parser(bytes: bytes)
            p.keyOrderDepth = keyOrderDepth
            p.skipSpace()
            let v = try p.value(depth: 0)
            p.skipSpace()
            guard p.i == bytes.count else { throw p.error("unexpected text after the JSON value") }
            return (v, p.keyOrder)
        }
    }

    struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0
        var keyOrderDepth = -1
        var keyOrder: [[String]: [String]] = [:]
        /// The key path of the object being read, kept only while recording key order (no arrays on it).
        var path: [String] = []
        var pathThroughArray = 0

        func error(_ m: String) -> ParseError {
            var line = 1, column = 1
            for k in 0..<min(i, bytes.count) {
                if bytes[k] == 10 {
                    line += 1
                    column = 1
                } else {
                    column += 1
                }
            }
            return ParseError(message: m, line: line, column: column)
        }

        mutating func skipSpace() {
            while i < bytes.count, bytes[i] == 32 || bytes[i] == 9 || bytes[i] == 10 || bytes[i] == 13 { i += 1 }
        }

        mutating func expect(_ word: StaticString, _ v: JSONValue) throws -> JSONValue {
            let w = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
            guard i + w.count <= bytes.count, (0..<w.count).allSatisfy({ bytes[i + $0] == w[$0] }) else {
                throw error("invalid literal")
            }
            i += w.count
            return v
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < 512 else { throw error("nesting deeper than 512") }
            guard i < bytes.count else { throw error("unexpected end of text") }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var object: [String: JSONValue] = [:]
                let recording = depth <= keyOrderDepth && pathThroughArray == 0
                var keys: [String] = []
                defer { if recording { keyOrder[path] = keys } }
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
                    i += 1
                    return .object(object)
                }
                while true {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw error("expected a quoted key") }
                    let key = try string()
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw error("expected ':' after key \"\(key)\"") }
                    i += 1
                    skipSpace()
                    if recording {
                        if object[key] == nil { keys.append(key) }
                        path.append(key)
                        object[key] = try value(depth: depth + 1)
                        path.removeLast()
                    } else {
                        object[key] = try value(depth: depth + 1)
                    }
                    skipSpace()
                    guard i < bytes.count else { throw error("unexpected end of text in an object") }
                    if bytes[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    if bytes[i] == UInt8(ascii: "}") {
                        i += 1
                        return .object(object)
                    }
                    throw error("expected ',' or '}' in an object")
                }
            case UInt8(ascii: "["):
                i += 1
                var array: [JSONValue] = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
                    i += 1
                    return .array(array)
                }
                while true {
                    skipSpace()
                    pathThroughArray += 1
                    defer { pathThroughArray -= 1 }
                    array.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < bytes.count else { throw error("unexpected end of text in an array") }
                    if bytes[i] == UInt8(ascii: ",") {
                        i += 1
                        continue
                    }
                    if bytes[i] == UInt8(ascii: "]") {
                        i += 1
                        return .array(array)
                    }
                    throw error("expected ',' or ']' in an array")
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            default: return .number(try number())
            }
        }

        mutating func number() throws -> Double {
            let start = i
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
            var digits = 0
            while i < bytes.count, (48...57).contains(bytes[i]) {
                i += 1
                digits += 1
            }
            guard digits > 0 else {
                i = start
                throw error("expected a value")
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                var frac = 0
                while i < bytes.count, (48...57).contains(bytes[i]) {
                    i += 1
                    frac += 1
                }
                guard frac > 0 else { throw error("expected digits after '.'") }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                var exp = 0
                while i < bytes.count, (48...57).contains(bytes[i]) {
                    i += 1
                    exp += 1
                }
                guard exp > 0 else { throw error("expected digits in the exponent") }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            guard let d = Double(text) else { throw error("invalid number \(text)") }
            // 1e999 parses to +inf: JSON has no infinities, and every reader downstream expects finite numbers.
            guard d.isFinite else { throw error("number \(text) is out of the range of a double (±1.8e308)") }
            return d
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count else { throw error("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let d: UInt8
                switch c {
                case 48...57: d = c - 48
                case 65...70: d = c - 55
                case 97...102: d = c - 87
                default: throw error("invalid \\u escape")
                }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }

        mutating func string() throws -> String {
            i += 1
            let start = i
            // Fast path: no escapes.
            while i < bytes.count, bytes[i] != UInt8(ascii: "\""), bytes[i] != UInt8(ascii: "\\"), bytes[i] >= 32 { i += 1 }
            if i < bytes.count, bytes[i] == UInt8(ascii: "\"") {
                defer { i += 1 }
                return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            }
            var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[start..<i]))
            while true {
                guard i < bytes.count else { throw error("unterminated string") }
                let c = bytes[i]
                if c == UInt8(ascii: "\"") {
                    i += 1
                    return String(decoding: out, as: UTF8.self)
                }
                if c < 32 { throw error("control character in a string") }
                if c != UInt8(ascii: "\\") {
                    out.append(c)
                    i += 1
                    continue
                }
                i += 1
                guard i < bytes.count else { throw error("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(34)
                case UInt8(ascii: "\\"): out.append(92)
                case UInt8(ascii: "/"): out.append(47)
                case UInt8(ascii: "b"): out.append(8)
                case UInt8(ascii: "f"): out.append(12)
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard i + 1 < bytes.count, bytes[i] == 92, bytes[i + 1] == UInt8(ascii: "u") else { throw error("lone surrogate") }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw error("invalid surrogate pair") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw error("invalid unicode escape") }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: throw error("invalid escape \\\(Character(Unicode.Scalar(e)))")
                }
            }
        }
    }

    /// Writes compact or indented JSON with sorted keys. Non-finite numbers become null.
    static func write(_ v: JSONValue, pretty: Bool) -> String {
        var out = ""
        out.reserveCapacity(256)
        write(v, pretty: pretty, indent: 0, into: &out)
        return out
    }

    static func write(_ v: JSONValue, pretty: Bool, indent: Int, into out: inout String) {
        switch v {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += numberText(n)
        case .string(let s): writeString(s, into: &out)
        case .array(let a):
            if a.isEmpty {
                out += "[]"
                return
            }
            out += "["
            for (k, e) in a.enumerated() {
                if k > 0 { out += "," }
                if pretty { out += "\n" + String(repeating: "  ", count: indent + 1) }
                write(e, pretty: pretty, indent: indent + 1, into: &out)
            }
            if pretty { out += "\n" + String(repeating: "  ", count: indent) }
            out += "]"
        case .object(let o):
            if o.isEmpty {
                out += "{}"
                return
            }
            out += "{"
            for (k, key) in o.keys.sorted().enumerated() {
                if k > 0 { out += "," }
                if pretty { out += "\n" + String(repeating: "  ", count: indent + 1) }
                writeString(key, into: &out)
                out += pretty ? ": " : ":"
                write(o[key]!, pretty: pretty, indent: indent + 1, into: &out)
            }
            if pretty { out += "\n" + String(repeating: "  ", count: indent) }
            out += "}"
        }
    }

    static func numberText(_ n: Double) -> String {
        guard n.isFinite else { return "null" }
        if n.rounded() == n && abs(n) < 9.0e15 { return String(Int64(n)) }
        return "\(n)"
    }

    static func writeString(_ s: String, into out: inout String) {
        out += "\""
        // Fast path: nothing to escape.
        if !s.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            out += s
            out += "\""
            return
        }
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}
