import Foundation
import MenagerieKit

/// One plugin file as the registry knows it.
public struct RegistryEntry: Codable, Sendable, Equatable {
    public var path: String
    public var size: Int64
    /// Modification time as "seconds.nanoseconds" text: JSON numbers are doubles and cannot
    /// hold a nanosecond timestamp exactly.
    public var mtime: String
    public var origin: String
    public var status: Status
    public var reason: String?
    public var abi: String?
    public var toolchain: String?
    public var sha256: String?
    public var metadata: PluginMetadata?

    public enum Status: String, Codable, Sendable { case ok, failed }

    public init(path: String, size: Int64, mtime: String, origin: String, status: Status, reason: String?,
                abi: String?, toolchain: String?, sha256: String?, metadata: PluginMetadata?) {
        self.path = path
        self.size = size
        self.mtime = mtime
        self.origin = origin
        self.status = status
        self.reason = reason
        self.abi = abi
        self.toolchain = toolchain
        self.sha256 = sha256
        self.metadata = metadata
    }
    public var builtIn: Bool { origin == "built-in" }
    public var name: String { metadata?.name ?? (path as NSString).lastPathComponent }
}

/// The set of plugin files on the search path, each scanned once per (path, size, mtime) in a
/// child process; the result is cached at `$XDG_CACHE_HOME/menagerie/registry.json`.
public struct Registry: Sendable {
    public let entries: [RegistryEntry]
    public let cachePath: String
    public let searchPath: SearchPath
    /// How many files this construction had to scan (0 when everything came from the cache).
    public let scanned: Int

    struct CacheFile: Codable {
        var version: Int
        var host: String
        var entries: [RegistryEntry]
    }

    /// Changes whenever a cached verdict could differ: the ABI or the toolchain of the host.
    static var hostKey: String { "abi-\(abiVersion.major).\(abiVersion.minor)/\(swiftToolchain)" }

    public static func defaultCachePath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        let cache = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.cache")
        return cache + "/menagerie/registry.json"
    }

    /// A registry of already-scanned entries (for `validate` and tests); nothing is cached.
    public init(entries: [RegistryEntry], searchPath: SearchPath = SearchPath(safeMode: true)) {
        self.entries = entries
        self.cachePath = ""
        self.searchPath = searchPath
        self.scanned = 0
    }

    /// Lists, checks and (when new or changed) scans every candidate file.
    ///
    /// - trust and lock checks run on every call (a `chmod` does not change mtime);
    /// - the scan itself runs in a child (`probe`), so a crash or hang marks the file failed.
    public init(searchPath: SearchPath, cachePath: String = Registry.defaultCachePath(), rescan: Bool = false,
                lock: (file: LockFile, path: String)? = nil, probe: ChildProbe = ChildProbe()) {
        self.searchPath = searchPath
        self.cachePath = cachePath
        var cached: [String: RegistryEntry] = [:]
        var keep: [RegistryEntry] = []
        if !rescan, let data = FileManager.default.contents(atPath: cachePath),
           let file = try? JSONValue.decode(CacheFile.self, from: String(decoding: data, as: UTF8.self)), file.version == 1, file.host == Registry.hostKey {
            for e in file.entries { cached[e.path] = e }
        }
        var result: [RegistryEntry] = []
        var toProbe: [(Int, String)] = []
        for (path, folder) in searchPath.candidates() {
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            let mtime = "\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
            var entry = RegistryEntry(path: path, size: Int64(st.st_size), mtime: mtime, origin: folder.origin,
                                      status: .ok, reason: nil, abi: nil, toolchain: nil, sha256: nil, metadata: nil)
            if let c = cached[path], c.size == entry.size, c.mtime == entry.mtime {
                entry = c
                entry.origin = folder.origin
            } else {
                toProbe.append((result.count, path))
            }
            result.append(entry)
        }
        // Trust first: an untrusted file is not even loaded in a child.
        var untrusted = Set<Int>()
        for (i, e) in result.enumerated() {
            if let p = Trust.problem(path: e.path) {
                result[i].status = .failed
                result[i].reason = p
                result[i].metadata = nil
                untrusted.insert(i)
            }
        }
        let probePaths = toProbe.filter { !untrusted.contains($0.0) }
        let reports = probe.probe(probePaths.map(\.1))
        var transient = Set<Int>()
        for (i, path) in probePaths {
            let r = reports[path] ?? .failed("no scan report")
            if r.transient == true { transient.insert(i) }
            result[i].status = r.ok ? .ok : .failed
            result[i].reason = r.reason
            result[i].abi = r.abi
            result[i].toolchain = r.toolchain
            result[i].metadata = r.metadata
            result[i].sha256 = nil
        }
        // Lock file: pins every plugin outside the built-in folder.
        if let lock {
            for i in result.indices where !result[i].builtIn && result[i].status == .ok {
                if result[i].sha256 == nil { result[i].sha256 = try? FileDigest.sha256(path: result[i].path) }
                if let p = lock.file.problem(path: result[i].path, digest: result[i].sha256 ?? "", lockPath: lock.path) {
                    result[i].status = .failed
                    result[i].reason = p
                }
            }
        }
        // A component id belongs to the first plugin in search order that declares it.
        var owner: [String: String] = [:]
        for i in result.indices where result[i].status == .ok {
            let ids = result[i].metadata?.components.map(\.id) ?? []
            if let clash = ids.first(where: { owner[$0] != nil }) {
                result[i].status = .failed
                result[i].reason = "component '\(clash)' is already provided by \(owner[clash]!) (earlier on the search path): rename it"
                continue
            }
            for id in ids { owner[id] = result[i].path }
        }
        self.entries = result
        self.scanned = probePaths.count

        // Persist: current entries plus cached ones outside this search path whose files still exist.
        let current = Set(result.map(\.path))
        keep = cached.values.filter { !current.contains($0.path) && FileManager.default.fileExists(atPath: $0.path) }
        if probePaths.count > 0 || rescan || !FileManager.default.fileExists(atPath: cachePath) {
            // Trust and lock verdicts are recomputed on every run; cache only what the scan learned.
            let cacheable = result.enumerated().map { i, e -> RegistryEntry in
                var e = e
                if untrusted.contains(i) { e.status = .failed; e.reason = "not scanned (untrusted)"; e.size = -1 }
                // A verdict that may not recur (a timeout) is kept for this command only.
                if transient.contains(i) { e.size = -1 }
                return e
            }
            let file = CacheFile(version: 1, host: Registry.hostKey, entries: (cacheable + keep).sorted { $0.path < $1.path })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            try? FileManager.default.createDirectory(atPath: (cachePath as NSString).deletingLastPathComponent,
                                                     withIntermediateDirectories: true)
            if let data = try? encoder.encode(file) { try? AtomicFile.write(data, to: cachePath) }
        }
    }

    public var plugins: [RegistryEntry] { entries }
    public var failed: [RegistryEntry] { entries.filter { $0.status == .failed } }

    /// Every component of every loadable plugin, in search order.
    public var components: [(plugin: RegistryEntry, component: ComponentInfo)] {
        entries.filter { $0.status == .ok }.flatMap { e in (e.metadata?.components ?? []).map { (e, $0) } }
    }

    /// The component `id`, or an error suggesting the closest ids.
    public func component(_ id: String) throws -> (plugin: RegistryEntry, component: ComponentInfo) {
        if let hit = components.first(where: { $0.component.id == id }) { return hit }
        let ids = components.map(\.component.id)
        var message = "no component '\(id)'.\(didYouMean(id, in: ids))"
        if let bad = failed.first(where: { ($0.path as NSString).lastPathComponent.lowercased().contains(id.replacingOccurrences(of: "-", with: "").lowercased()) }) {
            message += " (plugin \(bad.path) failed to load: \(bad.reason ?? "unknown reason"); see `menagerie plugins --failed`)"
        } else if !failed.isEmpty {
            message += " \(failed.count) plugin file\(failed.count == 1 ? "" : "s") failed to load and may provide it: see `menagerie plugins --failed`."
        }
        message += " Run `menagerie list` to see the components."
        throw HostError(.notFound, message)
    }
}
