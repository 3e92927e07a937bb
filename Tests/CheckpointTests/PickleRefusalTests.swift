import Formats
import Foundation
import TestSupport
import Testing

/// Hostile and damaged inputs: refused with a message naming the file and the fault, never run,
/// never a crash or a hang.
@Suite struct PickleRefusalTests {
    static let dir = TestPaths.fixtures + "/torch"
    let temp = TempDir("pickle")

    func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "(no error)"
    }

    func pickle(_ bytes: [UInt8], _ name: String = "p.pkl") throws -> String {
        let path = temp.path + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The payloads (os.system, builtins.eval, subprocess.Popen through __reduce__) would create
    /// a marker file: we refuse them by name and the marker never appears. Python's own
    /// pickle.load of the same file does create it, which shows the payload is live.
    @Test(arguments: [("evil-os-system", "posix.system"), ("evil-eval", "builtins.eval"), ("evil-popen", "subprocess.Popen")])
    func maliciousPicklesAreRefusedAndNotRun(_ file: String, _ global: String) throws {
        let marker = "/tmp/menagerie-pickle-payload-ran-" + file.dropFirst("evil-".count)
        unlink(marker)
        let path = Self.dir + "/\(file).pkl"
        let text = message { _ = try TorchFile(path: path) }
        #expect(text == "\(path): refusing global '\(global)' — only tensors and containers are loaded")
        #expect(!FileManager.default.fileExists(atPath: marker))
        _ = try runProcess("/usr/bin/env", ["python3", "-c", "import pickle, sys, time; pickle.load(open(sys.argv[1], 'rb')); time.sleep(0.2)", path])
        #expect(FileManager.default.fileExists(atPath: marker), "the fixture's payload should be live under pickle.load")
        unlink(marker)
    }

    @Test func maliciousTorchCheckpointIsRefused() throws {
        let marker = "/tmp/menagerie-pickle-payload-ran-torch"
        unlink(marker)
        let path = Self.dir + "/evil.pt"
        #expect(message { _ = try TorchFile(path: path) } == "\(path): refusing global 'posix.system' — only tensors and containers are loaded")
        #expect(!FileManager.default.fileExists(atPath: marker))
        // In a plain pickle, torch is read only as pickle.dump(a_tensor) writes it (_rebuild_tensor_v2 of
        // _load_from_bytes): a storage class, a parameter, or _rebuild_tensor_v2 of anything else is refused.
        let plain = try pickle([0x80, 0x02] + Array("ctorch\nFloatStorage\n.".utf8))
        #expect(message { _ = try TorchFile(path: plain) }.contains("refusing global 'torch.FloatStorage'"))
        let parameter = try pickle([0x80, 0x02] + Array("ctorch._utils\n_rebuild_parameter\n.".utf8))
        #expect(message { _ = try TorchFile(path: parameter) }.contains("refusing global 'torch._utils._rebuild_parameter'"))
        // _rebuild_tensor_v2((None, 0, (1,), (1,), False, None)): PROTO 2, GLOBAL, MARK, NONE, BININT1 0,
        // (BININT1 1,) twice, NEWFALSE, NONE, TUPLE, REDUCE, STOP.
        let notStorage = try pickle(
            [0x80, 0x02] + Array("ctorch._utils\n_rebuild_tensor_v2\n".utf8) + [
                0x28, 0x4E, 0x4B, 0, 0x4B, 1, 0x85, 0x4B, 1, 0x85, 0x89, 0x4E, 0x74, 0x52, 0x2E,
            ])
        #expect(message { _ = try TorchFile(path: notStorage) }.contains("the first argument is a None, not a storage"))
        // _load_from_bytes of bytes that are not torch's legacy format.
        let notLegacy = try pickle([0x80, 0x02] + Array("ctorch.storage\n_load_from_bytes\n".utf8) + [0x43, 3, 1, 2, 3, 0x85, 0x52, 0x2E])
        #expect(message { _ = try TorchFile(path: notLegacy) }.contains("do not start with torch's legacy magic number"))
    }

    @Test func damagedArchivesAreRefused() throws {
        let wrapped = try Data(contentsOf: URL(fileURLWithPath: Self.dir + "/wrapped.pth"))
        for cut in [10, 100, wrapped.count / 2, wrapped.count - 30, wrapped.count - 1] {
            let path = temp.path + "/cut\(cut).pt"
            try wrapped.prefix(cut).write(to: URL(fileURLWithPath: path))
            #expect(throws: FormatError.self, "truncated at \(cut)") { _ = try TorchFile(path: path) }
        }
        let crc = try TorchFile(path: Self.dir + "/bad-crc.pt") // the directory is fine; the storage is checked when read
        let bad = crc.names.first { crc.tensors[$0]!.storage == 0 }!
        #expect(message { _ = try crc.tensor(bad) }.contains("fails its CRC-32 check"))
        #expect(message { _ = try TorchFile(path: Self.dir + "/short-storage.pt") }.contains("its record has 12 bytes"))
        #expect(message { _ = try TorchFile(path: Self.dir + "/short-storage.pt") }.contains("truncated or corrupt"))
        #expect(message { _ = try TorchFile(path: Self.dir + "/missing-record.pt") }.contains("storage '1' has no record"))
        #expect(message { _ = try TorchFile(path: Self.dir + "/legacy.pt") }.contains("legacy PyTorch checkpoint"))
        #expect(message { _ = try TorchFile(path: Self.dir + "/big-endian.pt") }.contains("big-endian"))
        let text = try pickle(Array("not a checkpoint".utf8), "x.pt")
        #expect(message { _ = try TorchFile(path: text) }.contains("neither a PyTorch zip checkpoint nor a pickle"))
    }

    /// A pickle cut at any byte is refused, and no refusal reports a negative number of bytes left
    /// (that would mean a read ran past the end first). The pickle, by hand (protocol 2): PROTO 2,
    /// EMPTY_LIST, BINPUT 0, MARK, BININT 1 (4 bytes), BINUNICODE "abc" (4-byte length, 3 bytes),
    /// APPENDS, STOP. Cut after 3 of BININT's 4 bytes: "needs 4 more bytes but the pickle has 3 left".
    @Test func cutPicklesAreRefusedWithoutReadingPastTheEnd() throws {
        let whole: [UInt8] = [0x80, 0x02, 0x5D, 0x71, 0x00, 0x28, 0x4A, 1, 0, 0, 0, 0x58, 3, 0, 0, 0] + Array("abc".utf8) + [0x65, 0x2E]
        for cut in 1..<whole.count {
            let text = message { _ = try TorchFile(path: try pickle(Array(whole.prefix(cut)), "cut\(cut).pkl")) }
            #expect(text != "(no error)" && !text.contains("has -"), "cut at \(cut): \(text)")
        }
        #expect(message { _ = try TorchFile(path: try pickle(Array(whole.prefix(10)))) }.contains("needs 4 more bytes but the pickle has 3 left"))
    }

    @Test func hostilePicklesAreBounded() throws {
        let proto: [UInt8] = [0x80, 0x02]
        // Opcodes outside the allowed set, by name.
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x69] + Array("os\nsystem\n".utf8))) }.contains("opcode INST is not allowed"))
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x82, 1])) }.contains("opcode EXT1"))
        #expect(message { _ = try TorchFile(path: try pickle([0x80, 0x06, 0x4E, 0x2E])) }.contains("protocol 6"))
        // 100,000 nested tuples: refused when walked, no recursion while building or freeing.
        let deep = proto + [0x4E] + [UInt8](repeating: 0x85, count: 100_000) + [0x2E]
        #expect(message { _ = try TorchFile(path: try pickle(deep)) }.contains("more than \(TorchFile.maxNesting) deep"))
        // A list that contains itself.
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x5D, 0x71, 0, 0x68, 0, 0x61, 0x2E])) }.contains("cycle"))
        // Shared references that double the paths at each of 40 levels (2^40 names): refused, not walked.
        let doubling = proto + [0x4E] + [UInt8](repeating: 0, count: 40).flatMap { _ in [0x32, 0x86] } + [0x2E]
        #expect(message { _ = try TorchFile(path: try pickle(doubling)) }.contains("more than \(TorchFile.maxVisits) values"))
        // A memo beyond its cap, a recall of an index never stored, a huge declared length, a truncated pickle.
        var memo = proto + [0x4E]
        memo.reserveCapacity(5 * (1 << 20) + 16)
        for i in 0...(1 << 20) { memo += [0x72, UInt8(i & 255), UInt8((i >> 8) & 255), UInt8(i >> 16), 0] }
        #expect(message { _ = try TorchFile(path: try pickle(memo + [0x2E])) }.contains("the memo exceeds"))
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x6A, 0xFF, 0xFF, 0xFF, 0xFF, 0x2E])) }.contains("never stored"))
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x8D] + [UInt8](repeating: 0xFF, count: 8))) }.contains("exceeds the pickle"))
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x58, 100, 0, 0, 0, 0x41])) }.contains("truncated"))
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x30, 0x2E])) }.contains("empty stack"))
        #expect(message { _ = try TorchFile(path: try pickle(proto + [0x28, 0x4E, 0x28, 0x30, 0x30, 0x2E])) }.contains("empty stack"))
    }
}
