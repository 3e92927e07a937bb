import CCrypto
import Foundation

/// SHA-256 of a file, through OpenSSL's libcrypto (streamed, 1 MiB at a time).
public enum FileDigest {
    public static func sha256(path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw HostError(.failed, "cannot read \(path) to compute its SHA-256")
        }
        defer { try? handle.close() }
        guard let ctx = EVP_MD_CTX_new() else { throw HostError(.failed, "libcrypto could not allocate a digest context") }
        defer { EVP_MD_CTX_free(ctx) }
        EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            chunk.withUnsafeBytes { _ = EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) }
        }
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &digest, &length)
        return digest.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
    }
}
