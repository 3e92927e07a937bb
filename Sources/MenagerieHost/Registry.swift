import Foundation
import Logging
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

    public init(
        path: String, size: Int64, mtime: String, origin: String, status: Status, reason: String?,
        abi: String?, toolchain: String?, sha256: String?, metadata: PluginMetadata?
    ) {
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

    /// Lists, checks and (when new or changed) scans every candidate file, in steps (each a type
    /// of its own below, testable alone): read the cache (`RegistryCache.read`), discover the files
    /// (`RegistryDiscovery`), trust them (`RegistryTrust.check`), scan the new or changed ones in a
    /// child (`RegistryScan`), apply the lock file (`RegistryTrust.pin`), give each component id
    /// to its first plugin (`Registry.assignOwners`), and write the cache back (`RegistryCache.write`).
    ///
    /// - trust and lock checks run on every call (a `chmod` does not change mtime);
    /// - the scan itself runs in a child (`probe`), so a crash or hang marks the file failed;
    /// - a cache that cannot be read or written is a warning on `logger` (a corrupt one is rebuilt),
    ///   never an error: the registry is then built from the files themselves.
    public init(
        searchPath: SearchPath, cachePath: String = Registry.defaultCachePath(), rescan: Bool = false,
        lock: (file: LockFile, path: String)? = nil, probe: ChildProbe = ChildProbe(),
        logger: Logger = Logger(label: "menagerie")
    ) {
        self.searchPath = searchPath
        self.cachePath = cachePath
        let cache = RegistryCache(path: cachePath, logger: logger)
        let loaded: RegistryCache.Contents = rescan ? .missing : cache.read()
        let cached = loaded.entries
        var (result, toProbe) = RegistryDiscovery.entries(searchPath, cached: cached)
        // Trust first: an untrusted file is not even loaded in a child.
        let untrusted = RegistryTrust.check(&result)
        let probed = toProbe.filter { !untrusted.contains($0) }
        let transient = RegistryScan.scan(&result, indices: probed, probe: probe)
        if let lock { RegistryTrust.pin(&result, lock: lock) }
        Registry.assignOwners(&result)
        self.entries = result
        self.scanned = probed.count

        // Persist: current entries plus cached ones outside this search path whose files still exist.
        if !probed.isEmpty || rescan || loaded.needsRewrite {
            let current = Set(result.map(\.path))
            let keep = cached.values.filter { !current.contains($0.path) && FileManager.default.fileExists(atPath: $0.path) }
            cache.write(RegistryCache.cacheable(result, untrusted: untrusted, transient: transient) + keep)
        }
    }

    /// A component id belongs to the first plugin in search order that declares it; a later plugin
    /// declaring it fails, naming the first.
    static func assignOwners(_ result: inout [RegistryEntry]) {
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
        if let bad = failed.first(where: {
            ($0.path as NSString).lastPathComponent.lowercased().contains(id.replacingOccurrences(of: "-", with: "").lowercased())
        }) {
            message += " (plugin \(bad.path) failed to load: \(bad.reason ?? "unknown reason"); see `menagerie plugins --failed`)"
        } else if !failed.isEmpty {
            message += " \(failed.count) plugin file\(failed.count == 1 ? "" : "s") failed to load and may provide it: see `menagerie plugins --failed`."
        }
        message += " Run `menagerie list` to see the components."
        throw HostError(.notFound, message)
    }
}

/// Step: the plugin files on the search path, each with its size and mtime; a cached verdict is
/// reused when path, size and mtime (to the nanosecond) agree.
public enum RegistryDiscovery {
    /// The entries in search order and the indices of those that need a scan (new or changed).
    public static func entries(_ searchPath: SearchPath, cached: [String: RegistryEntry]) -> (entries: [RegistryEntry], toScan: [Int]) {
        var result: [RegistryEntry] = []
        var toScan: [Int] = []
        for (path, folder) in searchPath.candidates() {
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }
            let mtime = "\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
            var entry = RegistryEntry(
                path: path, size: Int64(st.st_size), mtime: mtime, origin: folder.origin,
                status: .ok, reason: nil, abi: nil, toolchain: nil, sha256: nil, metadata: nil)
            if let c = cached[path], c.size == entry.size, c.mtime == entry.mtime {
                entry = c
                entry.origin = folder.origin
            } else {
                toScan.append(result.count)
            }
            result.append(entry)
        }
        return (result, toScan)
    }
}

/// Step: trust (owner and mode of the file and its folders, `Trust`) and the lock file's pins.
public enum RegistryTrust {
    /// Marks every untrusted entry failed with the reason; returns their indices.
    @discardableResult
    public static func check(_ entries: inout [RegistryEntry]) -> Set<Int> {
        var untrusted = Set<Int>()
        for i in entries.indices {
            if let p = Trust.problem(path: entries[i].path) {
                entries[i].status = .failed
                entries[i].reason = p
                entries[i].metadata = nil
                untrusted.insert(i)
            }
        }
        return untrusted
    }

    /// The lock file pins every plugin outside the built-in folder: one that is not pinned, has
    /// another digest, or cannot be read to compute its digest, fails with the reason.
    public static func pin(_ entries: inout [RegistryEntry], lock: (file: LockFile, path: String)) {
        for i in entries.indices where !entries[i].builtIn && entries[i].status == .ok {
            if entries[i].sha256 == nil {
                do {
                    entries[i].sha256 = try FileDigest.sha256(path: entries[i].path)
                } catch {
                    entries[i].status = .failed
                    entries[i].reason = "cannot compute its SHA-256 for the lock file \(lock.path): \(error)"
                    continue
                }
            }
            if let p = lock.file.problem(path: entries[i].path, digest: entries[i].sha256 ?? "", lockPath: lock.path) {
                entries[i].status = .failed
                entries[i].reason = p
            }
        }
    }
}

/// Step: the scan of new or changed files, each in a child process (`ChildProbe`).
public enum RegistryScan {
    /// Scans `indices` of `entries` and records each verdict; returns the indices whose verdict
    /// may not recur (a timeout), which are not cached.
    public static func scan(_ entries: inout [RegistryEntry], indices: [Int], probe: ChildProbe) -> Set<Int> {
        let reports = probe.probe(indices.map { entries[$0].path })
        var transient = Set<Int>()
        for i in indices {
            let r = reports[entries[i].path] ?? .failed("no scan report")
            if r.transient == true { transient.insert(i) }
            entries[i].status = r.ok ? .ok : .failed
            entries[i].reason = r.reason
            entries[i].abi = r.abi
            entries[i].toolchain = r.toolchain
            entries[i].metadata = r.metadata
            entries[i].sha256 = nil
        }
        return transient
    }
}

/// Step: the cache file, `$XDG_CACHE_HOME/menagerie/registry.json`, written atomically. A cache
/// that cannot be read or decoded is reported as a warning and rebuilt; one of another host (ABI
/// or toolchain) or format version is silently replaced; a write that fails is a warning (the
/// next command scans again).
public struct RegistryCache {
    public let path: String
    public let logger: Logger
    /// Bump whenever what a cached entry holds changes (2: component metadata carries `benchmarks`;
    /// 3: operations carry `sharding`), so that no host reads an entry decoded by an older one.
    static let version = 3

    public init(path: String, logger: Logger) {
        self.path = path
        self.logger = logger
    }

    struct File: Codable {
        var version: Int
        var host: String
        var entries: [RegistryEntry]
    }

    public enum Contents: Equatable {
        /// No cache file (or `--rescan`).
        case missing
        /// Written by another host (ABI, toolchain) or format version: replaced.
        case stale
        /// Unreadable or not a cache: rebuilt (the reason was logged).
        case corrupt(String)
        case entries([String: RegistryEntry])

        public var entries: [String: RegistryEntry] {
            if case .entries(let e) = self { return e }
            return [:]
        }
        /// Whether the file must be written even when nothing was scanned.
        public var needsRewrite: Bool {
            if case .entries = self { return false }
            return true
        }
    }

    /// The cached entries by path.
    public func read() -> Contents {
        guard FileManager.default.fileExists(atPath: path) else { return .missing }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            return corrupt("cannot read it (\(error.localizedDescription))")
        }
        let file: File
        do {
            file = try JSONValue.decode(File.self, from: String(decoding: data, as: UTF8.self))
        } catch {
            return corrupt("it is not a registry cache (\(error))")
        }
        guard file.version == Self.version, file.host == Registry.hostKey else { return .stale }
        var byPath: [String: RegistryEntry] = [:]
        for e in file.entries { byPath[e.path] = e }
        return .entries(byPath)
    }

    private func corrupt(_ reason: String) -> Contents {
        logger.warning("the plugin registry cache \(path) is unusable: \(reason); scanning every plugin again and rewriting it")
        return .corrupt(reason)
    }

    /// Writes `entries` (sorted by path) atomically; a failure is a warning.
    public func write(_ entries: [RegistryEntry]) {
        let file = File(version: Self.version, host: Registry.hostKey, entries: entries.sorted { $0.path < $1.path })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try AtomicFile.write(try encoder.encode(file), to: path)
        } catch {
            logger.warning("cannot write the plugin registry cache \(path): \(error); the next command scans the plugins again")
        }
    }

    /// What is cached of this run's entries: trust and lock verdicts are recomputed on every run,
    /// so only what the scan learned is kept; an untrusted file (not scanned) and a verdict that may
    /// not recur (a timeout) get size −1, so they never match a file and are scanned again.
    static func cacheable(_ entries: [RegistryEntry], untrusted: Set<Int>, transient: Set<Int>) -> [RegistryEntry] {
        entries.enumerated().map { i, e -> RegistryEntry in
            var e = e
            if untrusted.contains(i) {
                e.status = .failed
                e.reason = "not scanned (untrusted)"
                e.size = -1
            }
            if transient.contains(i) { e.size = -1 }
            return e
        }
    }
}
