import CFFI
import Foundation

/// Calls an exported C function whose signature is known only at run time, through libffi.
///
/// Signature grammar: `RET(ARG,ARG,...)` with types `void i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 ptr str`
/// (`str`: a NUL-terminated string; as a return type it is printed as text). Example: `f64(i64,i64,i64)`.
public enum ForeignCall {
    public enum CType: String, CaseIterable, Sendable {
        case void, i8, i16, i32, i64, u8, u16, u32, u64, f32, f64, ptr, str

        var ffi: UnsafeMutablePointer<ffi_type> {
            switch self {
            case .void: mng_ffi_void()
            case .i8: mng_ffi_sint8()
            case .i16: mng_ffi_sint16()
            case .i32: mng_ffi_sint32()
            case .i64: mng_ffi_sint64()
            case .u8: mng_ffi_uint8()
            case .u16: mng_ffi_uint16()
            case .u32: mng_ffi_uint32()
            case .u64: mng_ffi_uint64()
            case .f32: mng_ffi_float()
            case .f64: mng_ffi_double()
            case .ptr, .str: mng_ffi_pointer()
            }
        }
    }

    public struct Signature: Sendable, Equatable {
        public let returns: CType
        public let arguments: [CType]

        public init(parsing text: String) throws {
            let t = text.replacingOccurrences(of: " ", with: "")
            guard let open = t.firstIndex(of: "("), t.hasSuffix(")") else {
                throw HostError(.usage, "signature '\(text)' must look like RET(ARG,...), e.g. f64(f64,i32)")
            }
            let types = CType.allCases.map(\.rawValue).joined(separator: " ")
            guard let r = CType(rawValue: String(t[..<open])) else {
                throw HostError(.usage, "unknown return type '\(t[..<open])' in '\(text)' (types: \(types))")
            }
            let inner = t[t.index(after: open)..<t.index(before: t.endIndex)]
            var args: [CType] = []
            for a in inner.split(separator: ",") where !(inner == "void") {
                guard let c = CType(rawValue: String(a)), c != .void else {
                    throw HostError(.usage, "unknown argument type '\(a)' in '\(text)' (types: \(types.replacingOccurrences(of: "void ", with: "")))")
                }
                args.append(c)
            }
            returns = r
            arguments = args
        }
    }

    /// Calls `function` with `arguments` (as text, converted by the signature). Returns the result as text.
    public static func call(_ function: UnsafeMutableRawPointer, signature: Signature, arguments: [String]) throws -> String {
        guard arguments.count == signature.arguments.count else {
            throw HostError(.usage, "the signature takes \(signature.arguments.count) argument(s), \(arguments.count) given")
        }
        // Storage for every argument value, 8 bytes each (16-byte aligned), plus C strings.
        let slots = UnsafeMutableRawPointer.allocate(byteCount: max(1, arguments.count) * 16, alignment: 16)
        defer { slots.deallocate() }
        var strings: [UnsafeMutablePointer<CChar>] = []
        defer { strings.forEach { free($0) } }
        var values: [UnsafeMutableRawPointer?] = []
        for (i, (type, text)) in zip(signature.arguments, arguments).enumerated() {
            let slot = slots + i * 16
            func bad() -> HostError { HostError(.usage, "argument \(i + 1) '\(text)' is not a valid \(type.rawValue)") }
            switch type {
            case .i8:
                guard let v = Int8(text) else { throw bad() }
                slot.storeBytes(of: v, as: Int8.self)
            case .i16:
                guard let v = Int16(text) else { throw bad() }
                slot.storeBytes(of: v, as: Int16.self)
            case .i32:
                guard let v = Int32(text) else { throw bad() }
                slot.storeBytes(of: v, as: Int32.self)
            case .i64:
                guard let v = Int64(text) else { throw bad() }
                slot.storeBytes(of: v, as: Int64.self)
            case .u8:
                guard let v = UInt8(text) else { throw bad() }
                slot.storeBytes(of: v, as: UInt8.self)
            case .u16:
                guard let v = UInt16(text) else { throw bad() }
                slot.storeBytes(of: v, as: UInt16.self)
            case .u32:
                guard let v = UInt32(text) else { throw bad() }
                slot.storeBytes(of: v, as: UInt32.self)
            case .u64:
                guard let v = UInt64(text) else { throw bad() }
                slot.storeBytes(of: v, as: UInt64.self)
            case .f32:
                guard let v = Float(text) else { throw bad() }
                slot.storeBytes(of: v, as: Float.self)
            case .f64:
                guard let v = Double(text) else { throw bad() }
                slot.storeBytes(of: v, as: Double.self)
            case .ptr:
                let hex = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
                guard let v = UInt(hex, radix: text.hasPrefix("0x") ? 16 : 10) else { throw bad() }
                slot.storeBytes(of: v, as: UInt.self)
            case .str:
                let p = strdup(text)!
                strings.append(p)
                slot.storeBytes(of: p, as: UnsafeMutablePointer<CChar>.self)
            case .void: throw bad()
            }
            values.append(slot)
        }
        var argTypes: [UnsafeMutablePointer<ffi_type>?] = signature.arguments.map { $0.ffi }
        var cif = ffi_cif()
        let prepared = argTypes.withUnsafeMutableBufferPointer { buf in
            ffi_prep_cif(&cif, FFI_DEFAULT_ABI, UInt32(signature.arguments.count), signature.returns.ffi, buf.baseAddress)
        }
        guard prepared == FFI_OK else { throw HostError(.failed, "libffi could not prepare the call (status \(prepared))") }
        // Return values narrower than a word are widened by libffi: read them from a full word.
        var ret = [UInt64](repeating: 0, count: 2)
        let fn = unsafeBitCast(function, to: (@convention(c) () -> Void).self)
        values.withUnsafeMutableBufferPointer { v in
            ret.withUnsafeMutableBytes { r in ffi_call(&cif, fn, r.baseAddress, v.baseAddress) }
        }
        return ret.withUnsafeBytes { r -> String in
            switch signature.returns {
            case .void: return ""
            case .i8: return String(Int8(truncatingIfNeeded: r.load(as: Int64.self)))
            case .i16: return String(Int16(truncatingIfNeeded: r.load(as: Int64.self)))
            case .i32: return String(Int32(truncatingIfNeeded: r.load(as: Int64.self)))
            case .i64: return String(r.load(as: Int64.self))
            case .u8: return String(UInt8(truncatingIfNeeded: r.load(as: UInt64.self)))
            case .u16: return String(UInt16(truncatingIfNeeded: r.load(as: UInt64.self)))
            case .u32: return String(UInt32(truncatingIfNeeded: r.load(as: UInt64.self)))
            case .u64: return String(r.load(as: UInt64.self))
            case .f32: return "\(r.load(as: Float.self))"
            case .f64: return "\(r.load(as: Double.self))"
            case .ptr: return "0x" + String(r.load(as: UInt.self), radix: 16)
            case .str:
                guard let p = UnsafePointer<CChar>(bitPattern: r.load(as: UInt.self)) else { return "(null)" }
                return String(cString: p)
            }
        }
    }
}
