import Foundation
import MenagerieKit

/// An optional list of allowed plugins pinned by SHA-256. When a lock file is in force, a plugin
/// outside the built-in folder loads only if its path is listed with the digest of its bytes.
///
/// Format: `{"version": 1, "plugins": {"/abs/path/libX.so": "<sha256 hex>"}}`.
/// Location: `--lock FILE`, else `$MENAGERIE_LOCK_FILE`, else `$XDG_CONFIG_HOME/menagerie/plugins.lock`
/// (default `~/.config/menagerie/plugins.lock`) when that file exists.
public struct LockFile: Sendable, Codable, Equatable {
    public var version: Int
    public var plugins: [String: String]

    public init(plugins: [String: String]) {
        self.version = 1
        self.plugins = plugins
    }

    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let p = environment["MENAGERIE_LOCK_FILE"], !p.isEmpty { return p }
        let config = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.config")
        return config + "/menagerie/plugins.lock"
    }

    public static func load(path: String) throws -> LockFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw HostError(.notFound, "lock file \(path) cannot be read")
        }
        do { return try JSONDecoder().decode(LockFile.self, from: data) } catch {
            throw HostError(.usage, "lock file \(path) is not valid: expected {\"version\": 1, \"plugins\": {\"/path/lib.so\": \"sha256\"}} (\(error))")
        }
    }

    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try AtomicFile.write(try encoder.encode(self), to: path)
    }

    /// nil when `path` with `digest` is allowed; else the reason.
    public func problem(path: String, digest: String, lockPath: String) -> String? {
        guard let pinned = plugins[path] else {
            return "not pinned in the lock file \(lockPath): add it with `menagerie plugins --write-lock` after checking it"
        }
        return pinned.lowercased() == digest
            ? nil
            : "SHA-256 mismatch against the lock file \(lockPath): pinned \(pinned.prefix(16))…, file is \(digest.prefix(16))…; the file changed since it was pinned"
    }
}
