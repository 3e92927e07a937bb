import Foundation

/// Paths and helpers shared by the test targets. Integration tests drive the real `menagerie`
/// executable and the real plugin `.so` files of the current build (`make test` builds them first).
public enum TestPaths {
    /// The repository root (this file is Tests/TestSupport/TestSupport.swift).
    public static let sourceRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The build products folder: where the test runner, `menagerie` and the plugins are.
    public static let products: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        // The runner may live inside a .xctest bundle folder.
        while !FileManager.default.fileExists(atPath: dir + "/menagerie"), dir != "/" {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()

    public static var menagerie: String { products + "/menagerie" }
    public static var fixtures: String { sourceRoot + "/Tests/Fixtures" }
    public static var abiInclude: String { sourceRoot + "/Sources/CMenagerie/include" }
}

/// A private temporary folder (mode 0700), removed on deinit.
public final class TempDir: @unchecked Sendable {
    public let path: String
    public init(_ label: String = "test") {
        var template = Array((NSTemporaryDirectory() + "/menagerie-\(label)-XXXXXX").utf8CString)
        path = (String(cString: mkdtemp(&template)!) as NSString).standardizingPath
    }
    public func sub(_ name: String) -> String {
        let p = path + "/" + name
        try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// What a command printed and returned.
public struct CommandResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
    public var output: String { stdout + stderr }
    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Runs an executable and waits (stdin closed).
@discardableResult
public func runProcess(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
    directory: String? = nil
) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Read both pipes concurrently so that a chatty child never blocks.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = readAll(err.fileHandleForReading.fileDescriptor)
        group.leave()
    }
    let outData = readAll(out.fileHandleForReading.fileDescriptor)
    group.wait()
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// Reads a descriptor to its end, retrying on EINTR (FileHandle.readDataToEndOfFile traps on it).
public func readAll(_ fd: Int32) -> Data {
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n > 0 {
            data.append(contentsOf: buffer[0..<n])
            continue
        }
        if n < 0 && errno == EINTR { continue }
        return data
    }
}

/// An isolated environment for the CLI: its own HOME, cache and config, no lock file,
/// and the given plugin path.
public final class CLI: @unchecked Sendable {
    public let home = TempDir("home")
    public var pluginPath: [String] = []
    public var extra: [String: String] = [:]

    public init(pluginPath: [String] = []) { self.pluginPath = pluginPath }

    public var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = home.path
        env["XDG_CACHE_HOME"] = home.path + "/cache"
        env["XDG_CONFIG_HOME"] = home.path + "/config"
        env["MENAGERIE_PLUGIN_PATH"] = pluginPath.joined(separator: ":")
        env["MENAGERIE_SCAN_TIMEOUT"] = "3"
        env.removeValue(forKey: "MENAGERIE_SAFE_MODE")
        env.removeValue(forKey: "MENAGERIE_LOCK_FILE")
        for (k, v) in extra { env[k] = v }
        return env
    }

    @discardableResult
    public func run(_ arguments: String..., directory: String? = nil) throws -> CommandResult {
        try run(arguments, directory: directory)
    }

    @discardableResult
    public func run(_ arguments: [String], directory: String? = nil) throws -> CommandResult {
        guard FileManager.default.isExecutableFile(atPath: TestPaths.menagerie) else {
            throw TestSupportError("no menagerie executable at \(TestPaths.menagerie): run `make test` (it builds before testing)")
        }
        return try runProcess(TestPaths.menagerie, arguments, environment: environment, directory: directory)
    }

    /// Parses stdout as JSON (fails the caller's expectation by throwing).
    public func json(_ arguments: String...) throws -> Any {
        let r = try run(arguments)
        guard r.status == 0 else { throw TestSupportError("menagerie \(arguments.joined(separator: " ")) exited \(r.status): \(r.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(r.stdout.utf8), options: [.fragmentsAllowed])
    }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Compiles `Tests/Fixtures/plugins/test_plugin.c` (or another source) into `dir/name` with macros.
@discardableResult
public func buildCPlugin(named name: String, in dir: String, defines: [String] = [], source: String? = nil) throws -> String {
    let src = source ?? TestPaths.fixtures + "/plugins/test_plugin.c"
    let out = dir + "/" + name
    let r = try runProcess(
        "/usr/bin/cc",
        ["-shared", "-fPIC", "-O1", "-std=gnu11", "-I", TestPaths.abiInclude]
            + defines.map { "-D" + $0 } + ["-o", out, src])
    guard r.status == 0 else { throw TestSupportError("cc failed for \(name): \(r.stderr)") }
    return out
}

/// Copies a file (for placing a built plugin into a test folder).
public func copyFile(_ from: String, to: String) throws {
    try? FileManager.default.removeItem(atPath: to)
    try FileManager.default.copyItem(atPath: from, toPath: to)
}
