import CZlib
import Formats
import Foundation

/// gzip (and zlib) decompression through the system zlib.
public enum Gzip {
    /// The decompressed bytes of a `.gz` file (one or more concatenated members).
    public static func read(path: String) throws -> Data {
        try decompress(try RegularFile.read(path), source: path)
    }

    public static func decompress(_ data: Data, source: String = "gzip data") throws -> Data {
        var stream = z_stream()
        // 15 + 32: a zlib or gzip header, detected automatically.
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw FormatError(path: source, "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            guard let base = input.bindMemory(to: UInt8.self).baseAddress, !input.isEmpty else {
                throw FormatError(path: source, "empty gzip data")
            }
            stream.next_in = UnsafeMutablePointer(mutating: base)
            stream.avail_in = uInt(input.count)
            while true {
                let status = buffer.withUnsafeMutableBufferPointer { b -> Int32 in
                    stream.next_out = b.baseAddress
                    stream.avail_out = uInt(b.count)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                out.append(contentsOf: buffer[0..<(buffer.count - Int(stream.avail_out))])
                // A decompression bomb stops at the allocation limit (or 4 GiB), not at the machine's memory.
                if out.count > min(Limits.allocationLimit, 1 << 32) {
                    throw FormatError(
                        path: source, "decompresses to more than \(Limits.formatBytes(min(Limits.allocationLimit, 1 << 32))): a decompression bomb?")
                }
                if status == Z_STREAM_END {
                    // Concatenated members: start the next one if input remains.
                    if stream.avail_in == 0 { break }
                    guard inflateReset(&stream) == Z_OK else { throw FormatError(path: source, "corrupt gzip data") }
                    continue
                }
                guard status == Z_OK else {
                    throw FormatError(path: source, "corrupt or truncated gzip data (zlib status \(status))")
                }
                if stream.avail_in == 0 && stream.avail_out != 0 { throw FormatError(path: source, "truncated gzip data") }
            }
        }
        return out
    }
}
