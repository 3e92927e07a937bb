import Formats
import Foundation
import Tensors
import TestSupport
import Testing

/// `menagerie convert` and `menagerie inspect`, driven through the built executable.
@Suite struct ConvertInspectCLITests {
    static let dir = TestPaths.fixtures + "/torch"
    let temp = TempDir("convert")

    func menagerie(_ args: [String]) throws -> CommandResult { try runProcess(TestPaths.menagerie, args) }

    func bytes(_ file: SafeTensorsFile, _ name: String) throws -> [UInt8] { try file.withBytes(name) { Array($0) } }

    @Test func convertWritesTheStateDictBitExact() throws {
        let out = temp.path + "/out.safetensors"
        let r = try menagerie(["convert", Self.dir + "/tensors.pt", out])
        #expect(r.status == 0, "\(r.output)")
        let ours = try SafeTensorsFile(path: out), torch = try SafeTensorsFile(path: Self.dir + "/tensors-expected.safetensors")
        #expect(ours.names.map { "model." + $0 }.sorted() == torch.names.sorted()) // unwrapped from {"model": …}
        for name in ours.names {
            #expect(try bytes(ours, name) == bytes(torch, "model." + name), "\(name)")
            #expect(try ours.entry(name).fileDType == torch.entry("model." + name).fileDType)
        }
        // --dtype f16: floating-point tensors rounded to f16, integers untouched.
        let half = temp.path + "/half.safetensors"
        #expect(try menagerie(["convert", Self.dir + "/tensors.pt", half, "--dtype", "f16"]).status == 0)
        let h = try SafeTensorsFile(path: half)
        #expect(try h.entry("f32").fileDType == "F16" && h.entry("i64").fileDType == "I64")
        let rounded = try torch.tensor("model.f32").converted(to: .float16)
        #expect(try bytes(h, "f32") == rounded.withUnsafeBytes { Array($0) })
        #expect(try bytes(h, "i64") == bytes(torch, "model.i64"))
        // --key, and refusals with exit codes.
        #expect(try menagerie(["convert", Self.dir + "/tensors.pt", temp.path + "/n.safetensors", "--key", "model.nested"]).status == 0)
        #expect(try SafeTensorsFile(path: temp.path + "/n.safetensors").names == ["a", "b.0", "b.1.c"])
        let evil = try menagerie(["convert", Self.dir + "/evil.pt", temp.path + "/e.safetensors"])
        #expect(evil.status == 1 && evil.stderr.contains("refusing global 'posix.system'"))
        #expect(!FileManager.default.fileExists(atPath: temp.path + "/e.safetensors"))
        #expect(try menagerie(["convert", Self.dir + "/tensors.pt", half, "--dtype", "i8"]).status == 2)
    }

    @Test func convertAFolderKeepsItsOtherFiles() throws {
        let out = temp.path + "/vit"
        let r = try menagerie(["convert", Self.dir + "/vit-cam-tiny-pt", out])
        #expect(r.status == 0, "\(r.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["config.json", "model.safetensors"])
        let ours = try SafeTensorsFile(path: out + "/model.safetensors"),
            timm = try SafeTensorsFile(path: TestPaths.fixtures + "/vit-cam-tiny/model.safetensors")
        #expect(ours.names == timm.names)
        for name in timm.names { #expect(try bytes(ours, name) == bytes(timm, name), "\(name)") }
        #expect(try menagerie(["convert", Self.dir + "/vit-cam-tiny-pt", out]).status == 2) // never overwrites
    }

    @Test func inspectListsEveryTensor() throws {
        let r = try menagerie(["inspect", Self.dir + "/sam2-tiny.pt", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONValue.parse(r.stdout)
        #expect(report["tensors"]?.arrayValue?.count == 335)
        #expect(report["state_dict_key"]?.stringValue == "model")
        let pkl = try menagerie(["inspect", Self.dir + "/arrays-p4.pkl"])
        #expect(pkl.status == 0 && pkl.stdout.contains("clusters.0") && pkl.stdout.contains("[4, 3]"))
        let st = try menagerie(["inspect", TestPaths.fixtures + "/vit-cam-tiny/model.safetensors"])
        #expect(st.status == 0 && st.stdout.contains("patch_embed.proj.weight"))
    }
}
