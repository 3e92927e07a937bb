import Foundation
import MenagerieHost
import TestSupport
import Testing

/// The registry cache: keyed by path, size and mtime; rebuilt by --rescan.
@Suite struct RegistryTests {
    let dir = TempDir("registry")

    func registry(rescan: Bool = false, folder: String) -> Registry {
        let env = ["MENAGERIE_PLUGIN_PATH": folder, "HOME": dir.path]
        return Registry(
            searchPath: SearchPath(executable: TestPaths.menagerie, environment: env, safeMode: false),
            cachePath: dir.path + "/cache/registry.json", rescan: rescan,
            probe: ChildProbe(executable: TestPaths.menagerie, timeout: 10))
    }

    @Test func changedFilesAreScannedAgainAndOnlyThey() throws {
        let folder = dir.sub("plugins")
        let a = try buildCPlugin(named: "liba.so", in: folder, defines: ["TEST_ID=\"a-probe\""])
        try buildCPlugin(named: "libb.so", in: folder, defines: ["TEST_ID=\"b-probe\""])
        let builtIns = SearchPath(executable: TestPaths.menagerie, safeMode: true).candidates().count

        let first = registry(folder: folder)
        #expect(first.scanned == builtIns + 2)
        #expect(first.entries.filter { $0.status == .ok }.count == builtIns + 2)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/cache/registry.json"))

        #expect(registry(folder: folder).scanned == 0)

        // A new mtime alone invalidates the entry.
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 0), timespec(tv_sec: 1_700_000_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, a, &times, 0)
        #expect(registry(folder: folder).scanned == 1)
        #expect(registry(folder: folder).scanned == 0)

        // New bytes (another size) are re-read: the new version shows.
        try buildCPlugin(named: "liba.so", in: folder, defines: ["TEST_ID=\"a-probe\"", "TEST_VERSION=\"2.0.0-with-a-longer-version\""])
        let changed = registry(folder: folder)
        #expect(changed.scanned == 1)
        #expect(changed.entries.first { $0.path == a }?.metadata?.version == "2.0.0-with-a-longer-version")

        #expect(registry(rescan: true, folder: folder).scanned == builtIns + 2)
    }

    @Test func aCorruptCacheIsRebuiltAndTheStepsWorkAlone() throws {
        let folder = dir.sub("corrupt")
        try buildCPlugin(named: "libc.so", in: folder, defines: ["TEST_ID=\"c-probe\""])
        let cachePath = dir.path + "/cache/registry.json"
        try FileManager.default.createDirectory(atPath: dir.path + "/cache", withIntermediateDirectories: true)
        try Data([0xFF, 0x00, 0x7B]).write(to: URL(fileURLWithPath: cachePath))
        let builtIns = SearchPath(executable: TestPaths.menagerie, safeMode: true).candidates().count
        #expect(registry(folder: folder).scanned == builtIns + 1) // everything scanned again
        #expect(registry(folder: folder).scanned == 0) // and the cache was rewritten

        // Discovery alone: a cached entry with the same size and mtime is reused, others are to scan.
        let sp = SearchPath(executable: TestPaths.menagerie, environment: ["MENAGERIE_PLUGIN_PATH": folder, "HOME": dir.path], safeMode: false)
        let (fresh, toScan) = RegistryDiscovery.entries(sp, cached: [:])
        #expect(toScan.count == fresh.count && fresh.contains { $0.path == folder + "/libc.so" })
        let reused = RegistryDiscovery.entries(sp, cached: Dictionary(uniqueKeysWithValues: fresh.map { ($0.path, $0) }))
        #expect(reused.toScan.isEmpty)
        // Trust alone: a group-writable file fails with the fix named.
        chmod(folder + "/libc.so", 0o775)
        var entries = fresh
        let untrusted = RegistryTrust.check(&entries)
        #expect(untrusted.count == 1 && entries[untrusted.first!].reason?.contains("chmod") == true)
        chmod(folder + "/libc.so", 0o755)
    }

    @Test func duplicateComponentIdsKeepTheFirstOnTheSearchPath() throws {
        let one = dir.sub("one"), two = dir.sub("two")
        try buildCPlugin(named: "libx.so", in: one)
        try buildCPlugin(named: "liby.so", in: two)
        let r = registry(folder: one + ":" + two)
        #expect(try r.component("test-probe").plugin.path == one + "/libx.so")
        let loser = r.entries.first { $0.path == two + "/liby.so" }
        #expect(loser?.status == .failed)
        #expect(loser?.reason?.contains("already provided by \(one)/libx.so") == true)
    }

    @Test func searchPathOrderAndSafeMode() {
        let env = ["MENAGERIE_PLUGIN_PATH": "/opt/a:relative/b", "HOME": "/home/u"]
        let sp = SearchPath(executable: "/x/bin/menagerie", environment: env, safeMode: false)
        #expect(sp.folders.map(\.origin) == ["built-in", "MENAGERIE_PLUGIN_PATH", "MENAGERIE_PLUGIN_PATH", "user"])
        #expect(sp.folders[1].path == "/opt/a")
        #expect(sp.folders[2].path.hasPrefix("/") && sp.folders[2].path.hasSuffix("/relative/b"))
        #expect(sp.folders[3].path == "/home/u/.local/share/menagerie/plugins")
        #expect(SearchPath(executable: "/x/bin/menagerie", environment: env, safeMode: true).folders.map(\.origin) == ["built-in"])
    }
}

@Suite struct CheckTests {
    @Test func versionRuleNamesBothSidesAndTheOlder() {
        #expect(Handshake.versionProblem(pluginMajor: 1, pluginMinor: 0, hostMajor: 1, hostMinor: 3) == nil)
        #expect(
            Handshake.versionProblem(pluginMajor: 1, pluginMinor: 4, hostMajor: 1, hostMinor: 3)?
                .contains("plugin ABI 1.4 needs a host of ABI ≥ 1.4, this host is 1.3; the host is older") == true)
        #expect(Handshake.versionProblem(pluginMajor: 2, pluginMinor: 0, hostMajor: 1, hostMinor: 0)?.contains("the host is older") == true)
        #expect(Handshake.versionProblem(pluginMajor: 1, pluginMinor: 0, hostMajor: 2, hostMinor: 0)?.contains("the plugin is older") == true)
    }

    @Test func elfHeaderProblems() throws {
        let dir = TempDir("elf")
        func problem(_ bytes: [UInt8]) throws -> String? {
            let p = dir.path + "/f.so"
            try Data(bytes).write(to: URL(fileURLWithPath: p))
            return ELFCheck.problem(path: p)
        }
        var header = [UInt8](repeating: 0, count: 64)
        header[0...6] = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1]
        header[16] = 3
        header[18] = 183 // AArch64
        #if arch(x86_64)
            #expect(try problem(header)?.contains("built for AArch64, but this host is x86-64") == true)
        #endif
        header[16] = 2
        #expect(try problem(header)?.contains("an executable, not a shared library") == true)
        header[4] = 1
        #expect(try problem(header)?.contains("32-bit ELF") == true)
        #expect(try problem([1, 2, 3])?.contains("only 3 bytes") == true)
        #expect(try problem(Array(repeating: 0xFE, count: 80))?.contains("no ELF magic") == true)
    }

    @Test func signaturesParse() throws {
        let s = try ForeignCall.Signature(parsing: "f64( i64, f32 ,str)")
        #expect(s.returns == .f64 && s.arguments == [.i64, .f32, .str])
        #expect(try ForeignCall.Signature(parsing: "void()").arguments.isEmpty)
        #expect(try ForeignCall.Signature(parsing: "i32(void)").arguments.isEmpty)
        #expect(throws: HostError.self) { try ForeignCall.Signature(parsing: "f64") }
        #expect(throws: HostError.self) { try ForeignCall.Signature(parsing: "double(i32)") }
        #expect(throws: HostError.self) { try ForeignCall.Signature(parsing: "i32(void,i32)") }
    }

    @Test func libffiCallsAFunctionOfThisProcess() throws {
        // labs(3) from libc, through a runtime signature.
        let fn = dlsym(dlopen(nil, RTLD_NOW), "labs")!
        #expect(try ForeignCall.call(fn, signature: .init(parsing: "i64(i64)"), arguments: ["-42"]) == "42")
        #expect(throws: HostError.self) { try ForeignCall.call(fn, signature: .init(parsing: "i64(i64)"), arguments: []) }
    }

    @Test func trustRefusesWritableFiles() throws {
        let dir = TempDir("trust")
        let f = dir.path + "/x.so"
        try Data([0]).write(to: URL(fileURLWithPath: f))
        chmod(dir.path, 0o755)
        chmod(f, 0o644)
        #expect(Trust.problem(path: f) == nil)
        chmod(f, 0o646)
        #expect(Trust.problem(path: f)?.contains("writable by everyone") == true)
        chmod(f, 0o644)
        chmod(dir.path, 0o775)
        #expect(Trust.problem(path: f)?.contains("plugin folder") == true)
    }
}
