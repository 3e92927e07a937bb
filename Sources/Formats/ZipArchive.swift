import CZlib
import Foundation
import Tensors

/// The central directory of a zip archive whose records are stored uncompressed, as `torch.save`
/// writes them (PKWARE APPNOTE 6.3: end of central directory, its ZIP64 variant, central and local
/// headers). The archive's bytes stay in the caller's memory map; a record is a byte range of it.
///
/// Every number is checked before it indexes: the directory lies inside the file, each record's
/// local header and data lie inside the file, sizes agree between the central directory and the
/// ZIP64 extra field, the entry count is bounded by the directory's size. Compressed or encrypted
/// records are refused (torch never writes them). CRC-32 is checked on demand (`verify`).
public struct ZipArchive: Sendable {
    public struct Record: Sendable {
        public let name: String
        /// The record's bytes: an offset into the archive and a length.
        public let offset: Int
        public let count: Int
        public let crc32: UInt32
    }

    public let path: String
    public let records: [String: Record]
    /// Record names in directory order.
    public let names: [String]

    static let localSignature: UInt32 = 0x0403_4b50
    static let centralSignature: UInt32 = 0x0201_4b50
    static let endSignature: UInt32 = 0x0605_4b50
    static let end64Signature: UInt32 = 0x0606_4b50
    static let locator64Signature: UInt32 = 0x0706_4b50

    /// Whether `bytes` start like a zip archive (a local header, or an empty archive's end record).
    public static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 4 else { return false }
        let sig = bytes.loadUnaligned(as: UInt32.self).littleEndian
        return sig == localSignature || sig == endSignature
    }

    /// Reads the central directory of the archive in `bytes` (the whole file).
    public init(bytes: UnsafeRawBufferPointer, path: String) throws {
        self.path = path
        let reader = ByteReader(bytes: bytes, path: path)
        func fail(_ m: String) -> FormatError { FormatError(path: path, m) }
        let n = bytes.count
        guard n >= 22 else { throw fail("is \(n) bytes, too short for a zip archive: truncated?") }
        // The end record is the last 22 bytes plus a comment of at most 65,535 bytes.
        var end = -1
        var i = n - 22
        while i >= max(0, n - 22 - 65_535) {
            if try reader.u32(i) == ZipArchive.endSignature, try Int(reader.u16(i + 20)) == n - 22 - i {
                end = i
                break
            }
            i -= 1
        }
        guard end >= 0 else { throw fail("has no zip end-of-central-directory record: the file is truncated or not a zip archive") }
        var entryCount = Int(try reader.u16(end + 10))
        var directorySize = Int(try reader.u32(end + 12))
        var directoryOffset = Int(try reader.u32(end + 16))
        if entryCount == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            let locator = end - 20
            guard locator >= 0, try reader.u32(locator) == ZipArchive.locator64Signature else {
                throw fail("the zip end record asks for ZIP64 but there is no ZIP64 locator: truncated or corrupt archive")
            }
            let end64 = try reader.int64(locator + 8, what: "ZIP64 end record offset")
            guard end64 <= locator - 56, try reader.u32(end64) == ZipArchive.end64Signature else {
                throw fail("the ZIP64 end record offset \(end64) does not point at a ZIP64 end record: corrupt archive")
            }
            entryCount = try reader.int64(end64 + 32, what: "entry count")
            directorySize = try reader.int64(end64 + 40, what: "central directory size")
            directoryOffset = try reader.int64(end64 + 48, what: "central directory offset")
        }
        guard directoryOffset <= n, directorySize <= n - directoryOffset else {
            throw fail("the central directory (\(directorySize) bytes at \(directoryOffset)) lies beyond the end of the \(n)-byte file: truncated archive")
        }
        guard entryCount <= directorySize / 46 else {
            throw fail("the central directory claims \(entryCount) entries but holds \(directorySize) bytes (46 or more per entry): corrupt archive")
        }
        var records: [String: Record] = [:]
        var names: [String] = []
        names.reserveCapacity(entryCount)
        var p = directoryOffset
        let directoryEnd = directoryOffset + directorySize
        for _ in 0..<entryCount {
            guard p <= directoryEnd - 46, try reader.u32(p) == ZipArchive.centralSignature else {
                throw fail("central directory entry \(names.count) at byte \(p) is damaged: corrupt archive")
            }
            let flags = try reader.u16(p + 8), method = try reader.u16(p + 10)
            let crc = try reader.u32(p + 16)
            var compressed = Int(try reader.u32(p + 20)), size = Int(try reader.u32(p + 24))
            let nameLength = Int(try reader.u16(p + 28)), extraLength = Int(try reader.u16(p + 30)), commentLength = Int(try reader.u16(p + 32))
            var local = Int(try reader.u32(p + 42))
            let nameStart = p + 46
            guard nameLength + extraLength + commentLength <= directoryEnd - nameStart else {
                throw fail("central directory entry \(names.count) runs past the directory's end: corrupt archive")
            }
            guard let name = String(validating: UnsafeRawBufferPointer(rebasing: bytes[nameStart..<(nameStart + nameLength)]), as: UTF8.self) else {
                throw fail("central directory entry \(names.count) has a name that is not UTF-8: corrupt archive")
            }
            // ZIP64 extra field: the 8-byte values of the 32-bit fields that hold 0xFFFFFFFF, in order.
            var e = nameStart + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = try reader.u16(e), length = Int(try reader.u16(e + 2))
                guard length <= extraEnd - e - 4 else { throw fail("record '\(name)': its extra field runs past its end: corrupt archive") }
                if id == 0x0001 {
                    var q = e + 4
                    func next(_ what: String) throws -> Int {
                        guard q + 8 <= e + 4 + length else { throw fail("record '\(name)': its ZIP64 field lacks the \(what): corrupt archive") }
                        defer { q += 8 }
                        return try reader.int64(q, what: what)
                    }
                    if size == 0xFFFF_FFFF { size = try next("size") }
                    if compressed == 0xFFFF_FFFF { compressed = try next("compressed size") }
                    if local == 0xFFFF_FFFF { local = try next("local header offset") }
                }
                e += 4 + length
            }
            guard flags & 1 == 0 else { throw fail("record '\(name)' is encrypted: torch never writes encrypted records") }
            guard method == 0 else {
                throw fail("record '\(name)' is compressed (method \(method)); torch writes records uncompressed: re-save the file with torch.save")
            }
            guard compressed == size else { throw fail("record '\(name)': stored sizes disagree (\(compressed) and \(size)): corrupt archive") }
            guard local <= n - 30, try reader.u32(local) == ZipArchive.localSignature else {
                throw fail("record '\(name)': no local header at byte \(local): truncated or corrupt archive")
            }
            let dataStart = local + 30 + Int(try reader.u16(local + 26)) + Int(try reader.u16(local + 28))
            guard dataStart <= n, size <= n - dataStart else {
                throw fail("record '\(name)' needs \(size) bytes at byte \(dataStart) but the file has \(n): truncated archive")
            }
            guard records[name] == nil else { throw fail("record '\(name)' appears twice in the central directory: corrupt archive") }
            records[name] = Record(name: name, offset: dataStart, count: size, crc32: crc)
            names.append(name)
            p = nameStart + nameLength + extraLength + commentLength
        }
        self.records = records
        self.names = names
    }

    /// The CRC-32 of `bytes` (zlib's). Beyond 2 MiB the bytes are split over `Parallel.threads`
    /// and the parts' CRCs combined (`crc32_combine`): a checkpoint's storages are checked at the
    /// speed of memory rather than of one core.
    public static func crc(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        let parts = min(Parallel.threads, bytes.count >> 21)
        guard parts > 1 else { return UInt32(truncatingIfNeeded: serialCRC(bytes)) }
        let size = (bytes.count + parts - 1) / parts
        var crcs = [uLong](repeating: 0, count: parts)
        crcs.withUnsafeMutableBufferPointer { out in
            let box = UncheckedBox((bytes, out))
            DispatchQueue.concurrentPerform(iterations: parts) { i in
                let (all, results) = box.value
                let start = i * size, end = min(all.count, start + size)
                results[i] = ZipArchive.serialCRC(UnsafeRawBufferPointer(rebasing: all[start..<end]))
            }
        }
        var crc = crcs[0]
        for i in 1..<parts {
            crc = crc32_combine(crc, crcs[i], off_t(min(bytes.count, (i + 1) * size) - i * size))
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    static func serialCRC(_ b: UnsafeRawBufferPointer) -> uLong {
        var crc = crc32(0, nil, 0)
        var offset = 0
        while offset < b.count { // zlib takes 32-bit lengths
            let chunk = min(b.count - offset, 1 << 30)
            crc = crc32(crc, (b.baseAddress! + offset).assumingMemoryBound(to: Bytef.self), uInt(chunk))
            offset += chunk
        }
        return crc
    }

    /// Checks `record`'s CRC-32 against the directory's (reads every byte of it).
    public func verify(_ record: Record, in bytes: UnsafeRawBufferPointer) throws {
        guard ZipArchive.crc(UnsafeRawBufferPointer(rebasing: bytes[record.offset..<(record.offset + record.count)])) == record.crc32 else {
            throw FormatError(path: path, "record '\(record.name)' fails its CRC-32 check (the file is corrupt: download or copy it again)")
        }
    }
}

/// Bounds-checked little-endian reads from a file's bytes: a read past the end is a `FormatError`.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String

    func check(_ offset: Int, _ width: Int) throws {
        guard offset >= 0, offset <= bytes.count - width else {
            throw FormatError(path: path, "a \(width)-byte field at byte \(offset) lies beyond the end of the \(bytes.count)-byte file: truncated or corrupt")
        }
    }
    func u16(_ offset: Int) throws -> UInt16 {
        try check(offset, 2)
        return UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    func u32(_ offset: Int) throws -> UInt32 {
        try check(offset, 4)
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    /// An unsigned 64-bit size or offset, refused beyond 2^62.
    func int64(_ offset: Int, what: String) throws -> Int {
        try check(offset, 8)
        let v = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        guard v < 1 << 62 else { throw FormatError(path: path, "the \(what) \(v) is impossibly large: corrupt archive") }
        return Int(v)
    }
}
