import Foundation

/// Values built once per process and reused across calls: loaded models, dataset splits, per-class
/// statistics. A plugin that is called many times (a study, a runtime explaining batch after batch)
/// loads each model once.
///
/// An entry may depend on a file (`stamp:`): when that file's modification time or size changes —
/// new weights written into the same folder — the entry is built again. Building happens outside
/// the lock, so a slow load does not hold up other keys; two threads asking for the same missing
/// key may both build it, and the last one is kept.
// @unchecked: `entries` is touched only under `lock`; a Value is shared with every caller, who must not mutate it (models, decoded files).
public final class ProcessCache<Value>: @unchecked Sendable {
    private var entries: [String: (stamp: String, value: Value)] = [:]
    private let lock = NSLock()

    public init() {}

    /// The value under `key`, built by `build` when absent or when `file`'s identity changed.
    public func value(_ key: String, stamp file: String? = nil, build: () throws -> Value) throws -> Value {
        let stamp = file.map(fileIdentity) ?? ""
        lock.lock()
        if let hit = entries[key], hit.stamp == stamp {
            lock.unlock()
            return hit.value
        }
        lock.unlock()
        let value = try build()
        lock.lock()
        entries[key] = (stamp, value)
        lock.unlock()
        return value
    }

    /// The value under `key` if present (no file check).
    public func cached(_ key: String) -> Value? {
        lock.lock()
        defer { lock.unlock() }
        return entries[key]?.value
    }

    /// Stores `value` under `key`.
    public func store(_ key: String, _ value: Value) {
        lock.lock()
        entries[key] = ("", value)
        lock.unlock()
    }
}

/// A file's identity for cache invalidation: modification time and size ("missing" when absent).
public func fileIdentity(_ path: String) -> String {
    guard let a = try? FileManager.default.attributesOfItem(atPath: path) else { return "missing" }
    let time = (a[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
    let size = (a[.size] as? NSNumber)?.intValue ?? 0
    return "\(time)-\(size)"
}
