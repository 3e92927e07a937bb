import Formats

/// A reader of protobuf's wire format (proto2/proto3 encoding) over one message's bytes: varints,
/// fixed 32/64-bit values and length-delimited fields; groups (wire types 3/4) are skipped. Every
/// length is checked against the bytes left, so truncated or corrupted input throws a `FormatError`
/// naming the file and the message — it never reads out of bounds or traps.
struct ProtobufReader {
    enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case bytes(Range<Int>)
        case fixed32(UInt32)
    }

    let bytes: [UInt8]
    let path: String
    /// The message being read, for errors ("ModelProto.pieces[3]").
    let context: String
    private(set) var position: Int
    let end: Int

    init(bytes: [UInt8], range: Range<Int>, path: String, context: String) {
        self.bytes = bytes
        self.path = path
        self.context = context
        position = range.lowerBound
        end = range.upperBound
    }

    func fail(_ what: String) -> FormatError { FormatError(path: path, "\(context): \(what) (is the file a SentencePiece model, whole?)") }

    mutating func readVarint() throws -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw fail("a varint runs past the end of the message at byte \(position)") }
            let b = bytes[position]
            position += 1
            if shift == 63 && b > 1 { throw fail("a varint at byte \(position - 1) is longer than 64 bits") }
            value |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return value }
            shift += 7
        }
    }

    mutating func readFixed(_ count: Int) throws -> UInt64 {
        guard end - position >= count else { throw fail("a \(count * 8)-bit value runs past the end of the message at byte \(position)") }
        var v: UInt64 = 0
        for k in 0..<count { v |= UInt64(bytes[position + k]) << (8 * UInt64(k)) }
        position += count
        return v
    }

    /// The next field (number, value), or nil at the end of the message.
    mutating func next() throws -> (field: Int, value: Value)? {
        while position < end {
            let at = position
            let key = try readVarint()
            let field = key >> 3
            guard field >= 1 && field < (1 << 29) else { throw fail("field number \(field) at byte \(at) is out of range") }
            switch key & 7 {
            case 0: return (Int(field), .varint(try readVarint()))
            case 1: return (Int(field), .fixed64(try readFixed(8)))
            case 2:
                let length = try readVarint()
                guard length <= UInt64(end - position) else {
                    throw fail("field \(field) at byte \(at) claims \(length) bytes but only \(end - position) are left")
                }
                let r = position..<(position + Int(length))
                position = r.upperBound
                return (Int(field), .bytes(r))
            case 3: try skipGroup(Int(field), at: at)
            case 5: return (Int(field), .fixed32(UInt32(try readFixed(4))))
            case let w: throw fail("field \(field) at byte \(at) has wire type \(w), which protobuf does not define here")
            }
        }
        return nil
    }

    /// Skips a (deprecated) group up to its matching end-group key, nested groups included.
    private mutating func skipGroup(_ field: Int, at: Int) throws {
        var open = [field]
        while let top = open.last {
            guard position < end else { throw fail("group \(field) at byte \(at) has no end") }
            let key = try readVarint()
            let f = Int(truncatingIfNeeded: key >> 3)
            switch key & 7 {
            case 0: _ = try readVarint()
            case 1: _ = try readFixed(8)
            case 2:
                let length = try readVarint()
                guard length <= UInt64(end - position) else { throw fail("a field inside group \(field) runs past the end of the message") }
                position += Int(length)
            case 3:
                guard open.count < 64 else { throw fail("groups nest more than 64 deep at byte \(position)") }
                open.append(f)
            case 4:
                guard f == top else { throw fail("group \(top) is closed by an end-group key for field \(f)") }
                open.removeLast()
            case 5: _ = try readFixed(4)
            case let w: throw fail("wire type \(w) inside group \(field)")
            }
        }
    }

    // MARK: typed fields

    func wrongType(_ name: String, _ expected: String) -> FormatError { fail("field \(name) is not encoded as \(expected)") }

    func int32(_ v: Value, _ name: String) throws -> Int32 {
        guard case .varint(let x) = v else { throw wrongType(name, "a varint") }
        return Int32(truncatingIfNeeded: x) // negative int32s are sign-extended to 64 bits on the wire
    }

    func bool(_ v: Value, _ name: String) throws -> Bool {
        guard case .varint(let x) = v else { throw wrongType(name, "a varint") }
        return x != 0
    }

    func float(_ v: Value, _ name: String) throws -> Float {
        guard case .fixed32(let x) = v else { throw wrongType(name, "a 32-bit float") }
        return Float(bitPattern: x)
    }

    func range(_ v: Value, _ name: String) throws -> Range<Int> {
        guard case .bytes(let r) = v else { throw wrongType(name, "length-delimited bytes") }
        return r
    }

    func string(_ v: Value, _ name: String) throws -> String {
        let r = try range(v, name)
        guard let s = String(validating: bytes[r], as: UTF8.self) else { throw fail("field \(name) is not valid UTF-8") }
        return s
    }

    /// A nested message's reader.
    func message(_ v: Value, _ name: String) throws -> ProtobufReader {
        ProtobufReader(bytes: bytes, range: try range(v, name), path: path, context: context + "." + name)
    }
}
