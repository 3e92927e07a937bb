import Foundation

/// What an unpickled file holds: the root value and the arena its containers, bytes, tensors and
/// storages live in.
public struct PickleResult: Sendable {
    public var root: PickleValue = .none
    public var lists: [[PickleValue]] = []
    public var tuples: [[PickleValue]] = []
    public var dicts: [PickleDict] = []
    public var sets: [[PickleValue]] = []
    public var blobs: [StorageBytes.Source] = []
    public var blobCounts: [Int] = []
    /// Tensors and arrays; nil for a numpy array whose state never came (BUILD missing).
    public var tensors: [StoredTensor?] = []
    public var storages: [StorageBytes] = []
    /// Instances of the allowed classes: the class name and the state dict BUILD gave (nil before).
    public var objects: [(className: String, state: PickleValue?)] = []
}

/// A dict (or OrderedDict) in insertion order; a key set twice keeps its first place and its last value.
public struct PickleDict: Sendable {
    public var keys: [PickleValue] = []
    public var values: [PickleValue] = []
    var index: [PickleValue: Int] = [:]

    mutating func set(_ key: PickleValue, _ value: PickleValue) {
        if let i = index[key] {
            values[i] = value
            return
        }
        index[key] = keys.count
        keys.append(key)
        values.append(value)
    }
}

/// A restricted unpickler for pickle protocols 2–5: it builds containers, scalars, torch tensors
/// (from the archive's storages) and, for plain pickles, numpy arrays — nothing else. No code of
/// the file runs: a global outside `PickleGlobals`' allow-list is refused when it is named, before
/// any call. Opcodes of protocols 0–1 that only serve code or text (INST, OBJ, PERSID, EXT*, …)
/// are refused by name.
///
/// Bounded: every length is checked against the bytes that remain; the stack, the memo and the
/// open marks are capped (`maxStack`, `maxMemo`, `maxMarks`); containers live in an arena (no
/// recursion in building or freeing). Nesting is bounded where values are walked (`PickleWalk`).
struct Unpickler {
    enum Flavor { case torch, plain }

    static let maxStack = 1 << 22
    static let maxMemo = 1 << 20
    static let maxMarks = 1 << 16

    let bytes: UnsafeRawBufferPointer
    /// Where `bytes` start in the mapped file (bytes values are recorded as file offsets).
    let base: Int
    let path: String
    let flavor: Flavor
    /// Resolves a torch persistent id's storage key, element type and element count to its bytes.
    let loadStorage: ((String, StoredDType, Int) throws -> StorageBytes)?
    /// Classes ("module.Name") whose instances are kept as their state dict (no code of theirs runs).
    let objectClasses: Set<String>

    var result = PickleResult()
    var stack: [PickleValue] = []
    var marks: [Int] = []
    var memo: [Int: PickleValue] = [:]
    var position = 0
    var storageIndex: [String: Int] = [:]
    var dtypes: [(code: String, order: Character)] = []

    init(
        bytes: UnsafeRawBufferPointer, base: Int, path: String, flavor: Flavor,
        loadStorage: ((String, StoredDType, Int) throws -> StorageBytes)? = nil, objectClasses: Set<String> = []
    ) {
        self.objectClasses = objectClasses
        self.bytes = bytes
        self.base = base
        self.path = path
        self.flavor = flavor
        self.loadStorage = loadStorage
    }

    func fail(_ m: String) -> FormatError { FormatError(path: path, m) }
    func failAt(_ m: String) -> FormatError { FormatError(path: path, "pickle byte \(position): \(m)") }

    // MARK: reading

    mutating func take(_ n: Int) throws -> Int {
        guard n >= 0, n <= bytes.count - position else {
            throw failAt("needs \(n) more bytes but the pickle has \(bytes.count - position) left: truncated or corrupt")
        }
        defer { position += n }
        return position
    }
    mutating func u8() throws -> Int { Int(bytes[try take(1)]) }
    mutating func u16() throws -> Int { Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(2), as: UInt16.self))) }
    mutating func u32() throws -> Int { Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self))) }
    mutating func length64() throws -> Int {
        let v = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self))
        guard v <= UInt64(bytes.count) else { throw failAt("a length of \(v) bytes exceeds the pickle: corrupt") }
        return Int(v)
    }
    mutating func line() throws -> String {
        guard let nl = bytes[position...].firstIndex(of: 0x0A) else { throw failAt("a text field has no end of line: truncated") }
        let start = try take(nl - position + 1)
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<nl]), as: UTF8.self)
    }
    mutating func utf8(_ n: Int) throws -> String {
        let start = try take(n)
        guard let s = String(validating: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + n)]), as: UTF8.self) else {
            throw failAt("a string is not valid UTF-8: corrupt")
        }
        return s
    }
    mutating func blob(_ n: Int) throws -> PickleValue {
        let start = try take(n)
        result.blobs.append(.mapped(offset: base + start, record: nil))
        result.blobCounts.append(n)
        return .bytes(result.blobs.count - 1)
    }

    // MARK: the stack

    mutating func push(_ v: PickleValue) throws {
        guard stack.count < Unpickler.maxStack else { throw failAt("the stack exceeds \(Unpickler.maxStack) values: a hostile or corrupt pickle") }
        stack.append(v)
    }
    mutating func pop() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0), let v = stack.popLast() else { throw failAt("pops an empty stack (or across a MARK): corrupt pickle") }
        return v
    }
    mutating func top() throws -> PickleValue {
        guard let v = stack.last, stack.count > (marks.last ?? 0) else { throw failAt("reads an empty stack: corrupt pickle") }
        return v
    }
    /// The values above the last mark, which is removed.
    mutating func popMark() throws -> [PickleValue] {
        guard let m = marks.popLast() else { throw failAt("no MARK to pop to: corrupt pickle") }
        defer { stack.removeSubrange(m...) }
        return Array(stack[m...])
    }
    mutating func newTuple(_ items: [PickleValue]) -> PickleValue {
        result.tuples.append(items)
        return .tuple(result.tuples.count - 1)
    }
    mutating func memoize(_ index: Int, _ v: PickleValue) throws {
        guard index >= 0, memo.count < Unpickler.maxMemo || memo[index] != nil else {
            throw failAt("the memo exceeds \(Unpickler.maxMemo) entries: a hostile or corrupt pickle")
        }
        memo[index] = v
    }
    func recall(_ index: Int) throws -> PickleValue {
        guard let v = memo[index] else { throw failAt("memo entry \(index) was never stored: corrupt pickle") }
        return v
    }

    mutating func append(to target: PickleValue, _ items: [PickleValue]) throws {
        switch target {
        case .list(let i): result.lists[i].append(contentsOf: items)
        case .set(let i): result.sets[i].append(contentsOf: items)
        default: throw failAt("appends to a \(target.kind), not a list")
        }
    }
    mutating func setItems(of target: PickleValue, _ items: [PickleValue]) throws {
        guard case .dict(let d) = target else { throw failAt("sets items of a \(target.kind), not a dict") }
        guard items.count % 2 == 0 else { throw failAt("SETITEMS with an odd number of values: corrupt pickle") }
        for k in stride(from: 0, to: items.count, by: 2) { result.dicts[d].set(items[k], items[k + 1]) }
    }

    // MARK: the machine

    mutating func run() throws -> PickleResult {
        var sawProtocol = false
        while true {
            let opcodeAt = position
            let op = try u8()
            switch op {
            case 0x80: // PROTO
                let v = try u8()
                guard (2...5).contains(v) else { throw failAt("pickle protocol \(v); protocols 2–5 are read") }
                sawProtocol = true
            case 0x95: _ = try length64() // FRAME: the frame's bytes follow in line
            case 0x2E: // STOP
                result.root = try pop()
                return result
            case 0x28: // MARK
                guard marks.count < Unpickler.maxMarks else { throw failAt("more than \(Unpickler.maxMarks) open MARKs: nesting beyond the limit") }
                marks.append(stack.count)
            case 0x30: _ = try pop() // POP
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: try push(try top()) // DUP
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4A: try push(.int(Int(Int32(bitPattern: UInt32(try u32()))))) // BININT
            case 0x4B: try push(.int(try u8())) // BININT1
            case 0x4D: try push(.int(try u16())) // BININT2
            case 0x8A: try push(try long(try u8())) // LONG1
            case 0x8B: try push(try long(try u32())) // LONG4
            case 0x47: // BINFLOAT (big-endian)
                let bits = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self))
                try push(.float(Double(bitPattern: bits)))
            case 0x58: try push(.string(try utf8(try u32()))) // BINUNICODE
            case 0x8C: try push(.string(try utf8(try u8()))) // SHORT_BINUNICODE
            case 0x8D: try push(.string(try utf8(try length64()))) // BINUNICODE8
            case 0x55: try push(.string(try utf8(try u8()))) // SHORT_BINSTRING (Python 2 str)
            case 0x54: try push(.string(try utf8(try u32()))) // BINSTRING
            case 0x43: try push(try blob(try u8())) // SHORT_BINBYTES
            case 0x42: try push(try blob(try u32())) // BINBYTES
            case 0x8E, 0x96: try push(try blob(try length64())) // BINBYTES8, BYTEARRAY8
            case 0x5D:
                result.lists.append([])
                try push(.list(result.lists.count - 1)) // EMPTY_LIST
            case 0x6C:
                result.lists.append(try popMark())
                try push(.list(result.lists.count - 1)) // LIST
            case 0x61:
                let v = try pop()
                try append(to: try top(), [v]) // APPEND
            case 0x65:
                let items = try popMark()
                try append(to: try top(), items) // APPENDS
            case 0x29: try push(newTuple([])) // EMPTY_TUPLE
            case 0x74: try push(newTuple(try popMark())) // TUPLE
            case 0x85:
                let a = try pop()
                try push(newTuple([a])) // TUPLE1
            case 0x86:
                let b = try pop(), a = try pop()
                try push(newTuple([a, b])) // TUPLE2
            case 0x87:
                let c = try pop(), b = try pop(), a = try pop()
                try push(newTuple([a, b, c])) // TUPLE3
            case 0x7D:
                result.dicts.append(PickleDict())
                try push(.dict(result.dicts.count - 1)) // EMPTY_DICT
            case 0x64: // DICT
                let items = try popMark()
                result.dicts.append(PickleDict())
                try setItems(of: .dict(result.dicts.count - 1), items)
                try push(.dict(result.dicts.count - 1))
            case 0x73:
                let v = try pop(), k = try pop()
                try setItems(of: try top(), [k, v]) // SETITEM
            case 0x75:
                let items = try popMark()
                try setItems(of: try top(), items) // SETITEMS
            case 0x8F:
                result.sets.append([])
                try push(.set(result.sets.count - 1)) // EMPTY_SET
            case 0x90:
                let items = try popMark()
                try append(to: try top(), items) // ADDITEMS
            case 0x91:
                result.sets.append(try popMark())
                try push(.set(result.sets.count - 1)) // FROZENSET
            case 0x71: try memoize(try u8(), try top()) // BINPUT
            case 0x72: try memoize(try u32(), try top()) // LONG_BINPUT
            case 0x94: try memoize(memo.count, try top()) // MEMOIZE
            case 0x68: try push(try recall(try u8())) // BINGET
            case 0x6A: try push(try recall(try u32())) // LONG_BINGET
            case 0x63: // GLOBAL "module\nname\n"
                let module = try line(), name = try line()
                try push(try PickleGlobals.resolve(module: module, name: name, flavor: flavor, objects: objectClasses, path: path))
            case 0x93: // STACK_GLOBAL
                let nameValue = try pop(), moduleValue = try pop()
                guard case .string(let name) = nameValue, case .string(let module) = moduleValue else {
                    throw failAt("STACK_GLOBAL needs two strings, got \(moduleValue.kind) and \(nameValue.kind)")
                }
                try push(try PickleGlobals.resolve(module: module, name: name, flavor: flavor, objects: objectClasses, path: path))
            case 0x52: // REDUCE
                let args = try pop(), callable = try pop()
                try push(try PickleGlobals.call(callable, args, in: &self))
            case 0x81: // NEWOBJ
                let args = try pop(), cls = try pop()
                try push(try PickleGlobals.instantiate(cls, args, in: &self))
            case 0x62: // BUILD
                let state = try pop()
                try PickleGlobals.build(try top(), state: state, in: &self)
            case 0x51: // BINPERSID
                let pid = try pop()
                try push(try PickleGlobals.persistentLoad(pid, in: &self))
            default:
                let name = Unpickler.refusedNames[UInt8(op)].map { "opcode \($0)" } ?? String(format: "unknown opcode 0x%02x", op)
                throw FormatError(
                    path: path,
                    "pickle byte \(opcodeAt): \(name) is not allowed — only tensors and containers are loaded"
                        + (sawProtocol ? "" : " (a protocol 0/1 pickle? protocols 2–5 are read)"))
            }
        }
    }

    /// LONG1/LONG4: a little-endian two's-complement integer of `n` bytes.
    mutating func long(_ n: Int) throws -> PickleValue {
        let start = try take(n)
        guard n <= 8 else { return .bigInt(bytes: n) }
        guard n > 0 else { return .int(0) }
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(bytes[start + i]) << (8 * UInt64(i)) }
        if n < 8, bytes[start + n - 1] & 0x80 != 0 { v |= ~0 << (8 * UInt64(n)) }
        return .int(Int(Int64(bitPattern: v)))
    }

    /// The opcodes refused on purpose, by their pickletools names.
    static let refusedNames: [UInt8: String] = [
        0x69: "INST", 0x6F: "OBJ", 0x50: "PERSID", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x92: "NEWOBJ_EX",
        0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER", 0x49: "INT", 0x4C: "LONG", 0x46: "FLOAT", 0x53: "STRING",
        0x56: "UNICODE", 0x67: "GET", 0x70: "PUT",
    ]
}
