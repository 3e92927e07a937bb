import Foundation
import TestSupport
import Testing

/// Issue 19's host cases: every misbehaving plugin, signal and leftover ends in a clear error (or a
/// correct result), never a signal in the host, a hang, a forged component or a partial output.
@Suite struct ReliabilityTests {
    /// A plugin folder with the test plugin built under `defines`, and a CLI whose TMPDIR is private
    /// (so the test can see every scratch folder a run leaves).
    final class Setup: @unchecked Sendable {
        let plugins = TempDir("rel-plugins")
        let tmp = TempDir("rel-tmp")
        let cli: CLI
        init(_ builds: [(String, [String])] = [("libgood.so", [])]) throws {
            for (name, defines) in builds { try buildCPlugin(named: name, in: plugins.path, defines: defines) }
            cli = CLI(pluginPath: [plugins.path])
            cli.extra["TMPDIR"] = tmp.path
        }
        /// Scratch folders left in the private TMPDIR.
        var leftovers: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? []).filter { $0.hasPrefix("menagerie-") } }
    }

    // MARK: scanning

    @Test func stdoutOfAPluginCannotForgeAScanReport() throws {
        let s = try Setup([
            ("libforge.so", ["TEST_ATEXIT_FORGE", "TEST_ID=\"forge-probe\""]),
            ("libchatty.so", ["TEST_CHATTY", "TEST_ID=\"chatty-probe\""]),
        ])
        let list = try s.cli.run("list")
        #expect(list.status == 0)
        #expect(list.stdout.contains("forge-probe"))
        #expect(list.stdout.contains("chatty-probe")) // 64 MiB on stdout at load do not break the scan
        #expect(!list.stdout.contains("forged-component"))
    }

    @Test func hugeMetadataIsRefused() throws {
        let s = try Setup([("libhuge.so", ["TEST_HUGE_METADATA", "TEST_ID=\"huge-probe\""])])
        let r = try s.cli.run("plugins", "--failed")
        #expect(r.stdout.contains("metadata JSON is larger than 4 MiB"))
        #expect(!(try s.cli.run("list")).stdout.contains("huge-probe"))
    }

    @Test func aTimedOutScanIsRetriedNotCached() throws {
        let s = try Setup([("libhang.so", ["TEST_HANG_AT_LOAD", "TEST_ID=\"hang-probe\""])])
        s.cli.extra["MENAGERIE_SCAN_TIMEOUT"] = "0.5"
        // The number before "scanned now" (a substring test would take "11 scanned now" for 1).
        func scanned(_ r: CommandResult) -> Int? { r.stdout.firstMatch(of: #/(\d+) scanned now/#).flatMap { Int($0.1) } }
        let first = try s.cli.run("doctor")
        #expect((scanned(first) ?? 0) >= 1, "\(first.stdout)")
        #expect(first.stdout.contains("timed out after 0.5 s"))
        // A cached failure would say "0 scanned now": the timeout (and only it) is scanned again.
        let second = try s.cli.run("doctor")
        #expect(scanned(second) == 1, "\(second.stdout)")
    }

    // MARK: invoking

    @Test(arguments: [false, true])
    func exitInsideInvokeIsAFailure(isolated: Bool) throws {
        let s = try Setup()
        let out = s.tmp.path + "/out"
        let r = try s.cli.run(["run", "test-probe", "exit", "--out", out, isolated ? "--isolate" : "--no-isolate"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("component 'test-probe'"))
        #expect(r.stderr.contains("called exit() while running"))
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(s.leftovers.isEmpty)
    }

    @Test(arguments: [("abort", "signal 6, SIGABRT"), ("segv", "signal 11, SIGSEGV")])
    func aCrashInAnIsolatedPluginLeavesTheHostAlive(operation: String, expected: String) throws {
        let s = try Setup()
        let r = try s.cli.run("run", "test-probe", operation) // third-party: isolated by default
        #expect(r.status == 1)
        #expect(r.stderr.contains("'test-probe' \(operation) (isolated"))
        #expect(r.stderr.contains(expected))
        #expect(r.stderr.contains("the host is fine"))
        #expect(s.leftovers.isEmpty)
    }

    @Test(arguments: [("bad_count", "tensor_count is 9223372036854775813"), ("bad_shape", "has more bytes than can be addressed")])
    func malformedResponsesAreRefused(operation: String, expected: String) throws {
        let s = try Setup()
        for mode in ["--isolate", "--no-isolate"] {
            let r = try s.cli.run("run", "test-probe", operation, mode)
            #expect(r.status == 1, "\(mode)")
            #expect(r.stderr.contains(expected), "\(mode): \(r.stderr)")
        }
    }

    @Test func isolationLimitsTimeAndMemory() throws {
        let s = try Setup()
        let started = Date()
        let hang = try s.cli.run("run", "test-probe", "hang", "--timeout", "1")
        #expect(hang.status == 1)
        #expect(hang.stderr.contains("timed out after 1.0 s"))
        #expect(Date().timeIntervalSince(started) < 20)
        let limited = try s.cli.run("run", "test-probe", "alloc", "--memory-limit", "256M")
        #expect(limited.status == 1)
        #expect(limited.stderr.contains("malloc of 1 GiB failed"))
        let unlimited = try s.cli.run("run", "test-probe", "alloc")
        #expect(unlimited.status == 0)
        #expect(try s.cli.run("run", "test-probe", "echo", "--memory-limit", "12").stderr.contains("--memory-limit 12"))
    }

    /// Isolated and in-process runs of the same call write the same bytes; nested calls and
    /// progress go through the child.
    @Test func isolatedResultsEqualInProcessResults() throws {
        let s = try Setup()
        let input = s.tmp.path + "/x.npy"
        try writeNPYFloat32([1.5, -2, 3.25, 0, 7, 8], shape: [2, 3], to: input)
        var outputs: [Data] = []
        for mode in ["--isolate", "--no-isolate"] {
            let out = s.tmp.path + "/out" + mode
            let r = try s.cli.run("run", "test-probe", "echo", "--input", "x=" + input, "--set", "count=7", "--out", out, mode)
            #expect(r.status == 0, "\(r.stderr)")
            outputs.append(try Data(contentsOf: URL(fileURLWithPath: out + "/x.npy")))
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0] == (try Data(contentsOf: URL(fileURLWithPath: input))))
        let nested = try s.cli.run("run", "test-probe", "nested", "--isolate", "--json")
        #expect(nested.status == 0)
        #expect(nested.stdout.contains("\"miou\""))
        // A built-in plugin isolated on request gives the in-process answer.
        let a = try s.cli.run("run", "test-probe", "nested", "--no-isolate")
        #expect(a.stdout == (try s.cli.run("run", "test-probe", "nested")).stdout)
        let printed = try s.cli.run("run", "test-probe", "print", "--isolate")
        #expect(printed.status == 0)
        #expect(printed.stderr.contains("test-probe prints on stdout")) // relayed to stderr: stdout stays the result
        #expect(!printed.stdout.contains("prints on"))
    }

    // MARK: signals and leftovers

    /// Starts the CLI, sends SIGTERM once the plugin has printed `marker` on stderr, returns the
    /// exit status and stderr.
    func terminate(_ s: Setup, _ arguments: [String], when marker: String) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestPaths.menagerie)
        p.arguments = arguments
        p.environment = s.cli.environment
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let fd = err.fileHandleForReading.fileDescriptor
        var seen = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(60)
        while !String(decoding: seen, as: UTF8.self).contains(marker), Date() < deadline {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 { seen.append(contentsOf: buffer[0..<n]) } else if !(n < 0 && errno == EINTR) { break }
        }
        p.terminate() // SIGTERM
        seen.append(readAll(fd))
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: seen, as: UTF8.self))
    }

    @Test(arguments: ["--isolate", "--no-isolate"])
    func sigtermCancelsAndLeavesNothing(mode: String) throws {
        let s = try Setup()
        let out = s.tmp.path + "/out"
        let (status, stderr) = try terminate(s, ["run", "test-probe", "progress", "--out", out, mode], when: "progress started")
        #expect(status == 1)
        #expect(stderr.contains("cancelling on SIGTERM"))
        #expect(stderr.contains("cancelled"))
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(s.leftovers.isEmpty)
    }

    @Test func aPluginIgnoringSigtermIsStoppedAfterTheGrace() throws {
        let s = try Setup()
        s.cli.extra["MENAGERIE_TERM_GRACE"] = "0.5"
        let out = s.tmp.path + "/out"
        let (status, stderr) = try terminate(s, ["run", "test-probe", "hang", "--no-isolate", "--out", out], when: "hang started")
        #expect(status == 128 + SIGTERM)
        #expect(stderr.contains("did not stop within 0.5 s"))
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(s.leftovers.isEmpty)
    }

    @Test func staleFoldersOfKilledRunsAreSwept() throws {
        let s = try Setup()
        let out = s.tmp.path + "/out"
        let staleScratch = s.tmp.path + "/menagerie-run-killed", stalePartial = out + "/.menagerie-partial-1-2"
        let liveScratch = s.tmp.path + "/menagerie-run-alive", otherHost = s.tmp.path + "/menagerie-run-other-node"
        for d in [staleScratch, stalePartial, liveScratch, otherHost] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
        // A folder of another machine (a TMPDIR shared by cluster nodes) is not this machine's to judge.
        try "4194305 1 some-other-node\n".write(toFile: otherHost + "/.menagerie-owner", atomically: true, encoding: .utf8)
        // pid 2^22 + 1 exceeds Linux's pid_max: that process cannot exist.
        try "4194305 1\n".write(toFile: staleScratch + "/.menagerie-owner", atomically: true, encoding: .utf8)
        try "4194305 1\n".write(toFile: stalePartial + "/.menagerie-owner", atomically: true, encoding: .utf8)
        try "\(getpid()) 0\n".write(toFile: liveScratch + "/.menagerie-owner", atomically: true, encoding: .utf8)
        let r = try s.cli.run("doctor", "--clean", out)
        #expect(r.stdout.contains("removed 2 stale folder(s)"))
        #expect(!FileManager.default.fileExists(atPath: staleScratch))
        #expect(!FileManager.default.fileExists(atPath: stalePartial))
        #expect(FileManager.default.fileExists(atPath: liveScratch)) // a running process's folder stays
        #expect(FileManager.default.fileExists(atPath: otherHost))
        // The next run sweeps too.
        try FileManager.default.createDirectory(atPath: staleScratch, withIntermediateDirectories: true)
        try "4194305 1\n".write(toFile: staleScratch + "/.menagerie-owner", atomically: true, encoding: .utf8)
        #expect(try s.cli.run("run", "test-probe", "echo").status == 0)
        #expect(!FileManager.default.fileExists(atPath: staleScratch))
    }

    // MARK: outputs

    @Test func refusedRunsCreateNoOutputAndReplacingIsAllOrNothing() throws {
        let s = try Setup()
        let out = s.tmp.path + "/a/b/out"
        let refused = try s.cli.run("run", "test-probe", "echo", "--set", "no_such_option=1", "--out", out)
        #expect(refused.status == 2)
        #expect(!FileManager.default.fileExists(atPath: s.tmp.path + "/a"))
        let input = s.tmp.path + "/x.npy"
        try writeNPYFloat32([1, 2], shape: [2], to: input)
        #expect(try s.cli.run("run", "test-probe", "echo", "--input", "x=" + input, "--out", out).status == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: out + "/result.json"))
        // Another run into the same folder is refused: two runs' files must not mix.
        let mixed = try s.cli.run("run", "test-probe", "echo", "--input", "z=" + input, "--out", out)
        #expect(mixed.status == 2)
        #expect(mixed.stderr.contains("holds the outputs of another run"))
        #expect(mixed.stderr.contains("--force"))
        // With --force, a run that would put a file where a folder stands fails before anything moves.
        try FileManager.default.createDirectory(atPath: out + "/y.npy", withIntermediateDirectories: true)
        let second = try s.cli.run("run", "test-probe", "echo", "--input", "y=" + input, "--set", "count=9", "--out", out, "--force")
        #expect(second.status == 1)
        #expect(second.stderr.contains("y.npy is a folder"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/result.json")) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["result.json", "x.npy", "y.npy"])
        // A successful --force replaces the earlier run's outputs whole (x.npy goes, z.npy comes).
        try FileManager.default.removeItem(atPath: out + "/y.npy")
        let third = try s.cli.run("run", "test-probe", "echo", "--input", "z=" + input, "--out", out, "--force")
        #expect(third.status == 0, "\(third.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["result.json", "z.npy"])
    }

    // MARK: files

    @Test func trustFollowsSymlinksAndChecksEveryFolder() throws {
        let s = try Setup()
        let open = TempDir("rel-open")
        chmod(open.path, 0o777)
        try copyFile(s.plugins.path + "/libgood.so", to: open.path + "/libx.so")
        let links = TempDir("rel-links")
        try FileManager.default.createSymbolicLink(atPath: links.path + "/liblink.so", withDestinationPath: open.path + "/libx.so")
        let cli = CLI(pluginPath: [links.path])
        let r = try cli.run("plugins", "--failed")
        #expect(r.stdout.contains("liblink.so"))
        #expect(r.stdout.contains("\(open.path) is writable by everyone"))
        #expect(!(try cli.run("list")).stdout.contains("test-probe"))
    }

    @Test func aFIFONamedLikeWeightsDoesNotHang() throws {
        let s = try Setup()
        let model = s.tmp.path + "/model"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try copyFile(TestPaths.fixtures + "/openclip-tiny/open_clip_config.json", to: model + "/open_clip_config.json")
        #expect(mkfifo(model + "/open_clip_model.safetensors", 0o600) == 0)
        let started = Date()
        let r = try s.cli.run("run", "bioclip2", "predict", "--set", "model=" + model, "--input", "images=" + TestPaths.fixtures + "/openclip-tiny")
        #expect(r.status != 0)
        #expect(r.stderr.contains("open_clip_model.safetensors: is a FIFO (named pipe), not a regular file"))
        #expect(Date().timeIntervalSince(started) < 60)
    }
}

/// Writes a little-endian float32 .npy file.
func writeNPYFloat32(_ values: [Float], shape: [Int], to path: String) throws {
    var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(shape.map(String.init).joined(separator: ", "))\(shape.count == 1 ? "," : "")), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
    data.append(contentsOf: [UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)])
    data.append(contentsOf: Array(header.utf8))
    values.withUnsafeBytes { data.append(contentsOf: $0) }
    try data.write(to: URL(fileURLWithPath: path))
}
