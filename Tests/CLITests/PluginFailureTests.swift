import Foundation
import TestSupport
import Testing

/// Misbehaving plugin files: each is reported with its reason and the host lives on.
@Suite struct PluginFailureTests {
    /// A 64-byte ELF header of a 32-bit shared object (ELFCLASS32, x86).
    static func elf32Header() -> Data {
        var h = [UInt8](repeating: 0, count: 64)
        h[0...3] = [0x7F, 0x45, 0x4C, 0x46]
        h[4] = 1 // ELFCLASS32
        h[5] = 1 // little-endian
        h[6] = 1 // version
        h[16] = 3 // ET_DYN
        h[18] = 3 // EM_386
        return Data(h)
    }

    func failures(_ cli: CLI) throws -> [String: String] {
        let rows = try cli.json("plugins", "--failed", "--json") as! [[String: Any]]
        var out: [String: String] = [:]
        for r in rows { out[((r["path"] as! String) as NSString).lastPathComponent] = r["reason"] as? String ?? "" }
        return out
    }

    @Test func everyBadPluginIsReportedAndListSurvives() throws {
        let dir = TempDir("bad")
        try buildCPlugin(named: "libgood.so", in: dir.path)
        try buildCPlugin(named: "libmajor.so", in: dir.path, defines: ["TEST_ABI_MAJOR=2", "TEST_ABI_MINOR=0", "TEST_ID=\"major-probe\""])
        try buildCPlugin(named: "libminor.so", in: dir.path, defines: ["TEST_ABI_MINOR=99", "TEST_ID=\"minor-probe\""])
        try buildCPlugin(named: "libcrash.so", in: dir.path, defines: ["TEST_CRASH_AT_LOAD", "TEST_ID=\"crash-probe\""])
        try buildCPlugin(named: "libhang.so", in: dir.path, defines: ["TEST_HANG_AT_LOAD", "TEST_ID=\"hang-probe\""])
        try buildCPlugin(named: "libnoentry.so", in: dir.path, defines: ["TEST_NO_ENTRY", "TEST_ID=\"noentry-probe\""])
        try buildCPlugin(named: "libtoolchain.so", in: dir.path, defines: ["TEST_TOOLCHAIN=\"swift-5.9\"", "TEST_ID=\"toolchain-probe\""])
        try "this is not a plugin\n".write(toFile: dir.path + "/libtext.so", atomically: true, encoding: .utf8)
        try Self.elf32Header().write(to: URL(fileURLWithPath: dir.path + "/libelf32.so"))

        let cli = CLI(pluginPath: [dir.path])
        let list = try cli.run("list")
        #expect(list.status == 0)
        #expect(list.stdout.contains("test-probe"))
        #expect(list.stdout.contains("classification-metrics"))
        #expect(list.stdout.contains("segmentation-metrics"))
        #expect(!list.stdout.contains("crash-probe"))
        #expect(list.stderr.contains("8 plugin files failed to load"))

        let reasons = try failures(cli)
        #expect(reasons.count == 8)
        #expect(reasons["libmajor.so"]?.contains("ABI major mismatch: plugin ABI 2.0, host ABI 1.2; the host is older") == true)
        #expect(reasons["libminor.so"]?.contains("plugin ABI 1.99") == true)
        #expect(reasons["libminor.so"]?.contains("this host is 1.2; the host is older") == true)
        #expect(reasons["libcrash.so"]?.contains("crashed while loading (signal 11, SIGSEGV)") == true)
        #expect(reasons["libhang.so"]?.contains("timed out after 3.0 s") == true)
        #expect(reasons["libnoentry.so"]?.contains("missing entry symbol 'menagerie_plugin_v1'") == true)
        #expect(reasons["libtext.so"]?.contains("text file") == true)
        #expect(reasons["libelf32.so"]?.contains("32-bit ELF") == true)
        #expect(reasons["libtoolchain.so"]?.contains("built with toolchain swift-5.9, but this host runs swift-6.") == true)

        // The verdicts are cached: a second listing neither re-probes nor changes them.
        let again = try failures(cli)
        #expect(again == reasons)
    }

    @Test func olderPluginMajorIsNamedAsTheOlderSide() throws {
        let dir = TempDir("major0")
        try buildCPlugin(named: "libold.so", in: dir.path, defines: ["TEST_ABI_MAJOR=0", "TEST_ABI_MINOR=0"])
        let reasons = try failures(CLI(pluginPath: [dir.path]))
        #expect(reasons["libold.so"]?.contains("plugin ABI 0.0, host ABI 1.2; the plugin is older: rebuild it") == true)
    }

    @Test func groupWritableForeignOwnedAndOpenFoldersAreRefused() throws {
        let root = TempDir("perm")
        let writable = root.sub("writable"), foreign = root.sub("foreign"), open = root.sub("open")
        chmod(root.path, 0o755)
        try buildCPlugin(named: "libw.so", in: writable, defines: ["TEST_ID=\"w-probe\""])
        chmod(writable + "/libw.so", 0o664)
        try buildCPlugin(named: "libf.so", in: foreign, defines: ["TEST_ID=\"f-probe\""])
        try buildCPlugin(named: "libo.so", in: open, defines: ["TEST_ID=\"o-probe\""])
        chmod(open, 0o777)
        let runningAsRoot = geteuid() == 0
        if runningAsRoot { chown(foreign + "/libf.so", 65534, 65534) } // nobody

        let cli = CLI(pluginPath: [writable, foreign, open])
        let reasons = try failures(cli)
        #expect(reasons["libw.so"]?.contains("is writable by its group") == true)
        #expect(reasons["libw.so"]?.contains("chmod go-w") == true)
        #expect(reasons["libo.so"]?.contains("plugin folder \(open) is writable by everyone") == true)
        if runningAsRoot { #expect(reasons["libf.so"]?.contains("not by you or root") == true) }

        // Fixing the mode makes it load, without --rescan.
        chmod(writable + "/libw.so", 0o644)
        #expect(try failures(cli)["libw.so"] == nil)
        #expect(try cli.run("list", "w-probe").stdout.contains("w-probe"))
    }

    @Test func validateReportsGoodAndBadFiles() throws {
        let dir = TempDir("validate")
        let good = try buildCPlugin(named: "libgood.so", in: dir.path)
        let crash = try buildCPlugin(named: "libcrash.so", in: dir.path, defines: ["TEST_CRASH_AT_LOAD"])
        let cli = CLI()
        let ok = try cli.run("validate", good, "--json")
        #expect(ok.status == 0)
        let checks = try JSONSerialization.jsonObject(with: Data(ok.stdout.utf8)) as! [[String: Any]]
        #expect(checks.allSatisfy { $0["ok"] as? Bool == true })
        #expect(checks.contains { ($0["name"] as? String) == "errors of test-probe" })
        let bad = try cli.run("validate", crash)
        #expect(bad.status == 1)
        #expect(bad.stdout.contains("crashed"))
        try "x".write(toFile: dir.path + "/libtxt.so", atomically: true, encoding: .utf8)
        let txt = try cli.run("validate", dir.path + "/libtxt.so")
        #expect(txt.status == 1)
        #expect(txt.stdout.contains("only 1 bytes"))
    }
}
