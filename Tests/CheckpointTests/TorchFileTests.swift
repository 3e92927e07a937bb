import CCrypto
import Formats
import Foundation
import Tensors
import TestSupport
import Testing

/// Parity of the torch-checkpoint and pickle reader with torch.load(weights_only=True) / pickle.load,
/// on files written by Tests/Fixtures/torch/make_fixtures.py.
@Suite struct TorchFileTests {
    static let dir = TestPaths.fixtures + "/torch"

    /// Every tensor of `expected` (written by safetensors from torch's values) equals ours bit for bit.
    func expectSame(_ file: TorchFile, _ expected: SafeTensorsFile, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(Set(file.names) == Set(expected.names), sourceLocation: sourceLocation)
        for name in expected.names {
            let e = try expected.entry(name), ours = try file.rawTensor(name), stored = file.tensors[name]!
            #expect(stored.shape == e.shape, "\(name)", sourceLocation: sourceLocation)
            #expect(stored.dtype.safetensorsName == e.fileDType, "\(name)", sourceLocation: sourceLocation)
            let same = try ours.withUnsafeBytes { a in try expected.withBytes(name) { b in Array(a) == Array(b) } }
            #expect(same, "\(name): bytes differ from torch's", sourceLocation: sourceLocation)
        }
    }

    @Test func everyDTypeViewAndSharedStorageMatchesTorch() throws {
        let file = try TorchFile(path: Self.dir + "/tensors.pt")
        try expectSame(file, try SafeTensorsFile(path: Self.dir + "/tensors-expected.safetensors"))
        #expect(file.format == "torch")
        #expect(file.wrapper == "model")
        // The same archive with ZIP64 extra fields and end records reads the same.
        try expectSame(try TorchFile(path: Self.dir + "/zip64.pt"), try SafeTensorsFile(path: Self.dir + "/tensors-expected.safetensors"))
        // Views: a transposed tensor and a strided slice with an offset stay views until read.
        #expect(file.tensors["model.transposed"]!.isContiguous == false)
        #expect(file.tensors["model.strided"]!.offset > 0)
        // Two tensors of one storage share it, at different offsets.
        let a = file.tensors["model.shared_a"]!, b = file.tensors["model.shared_b"]!
        #expect(a.storage == b.storage && a.offset != b.offset)
        // A contiguous aligned tensor borrows the mapped file.
        #expect(try file.tensor("model.f32").storage.isOwned == false)
        #expect(try file.tensor("model.i16").dtype == .int32)
        #expect(
            try file.tensor("model.i16").integers()
                == (try SafeTensorsFile(path: Self.dir + "/tensors-expected.safetensors")
                    .withBytes("model.i16") { Array($0.bindMemory(to: Int16.self)).map(Int.init) }))
        // The state dict: names under "model", non-tensor values (epoch, note) left out.
        let sd = try file.stateDict()
        #expect(sd["nested.b.1.c"] == "model.nested.b.1.c")
        #expect(sd.count == file.names.count)
    }

    @Test func wrapperAndModulePrefixAreFound() throws {
        let file = try TorchFile(path: Self.dir + "/wrapped.pth")
        try expectSame(file, try SafeTensorsFile(path: Self.dir + "/wrapped-expected.safetensors"))
        #expect(file.wrapper == "state_dict" && file.modulePrefixed)
        #expect(try Set(file.stateDict().keys) == ["layer.weight", "layer.bias"])
        #expect(throws: FormatError.self) { try file.stateDict(key: "ema") }
        let bare = try TorchFile(path: Self.dir + "/bare.pt")
        #expect(bare.names == ["tensor"] && bare.tensors["tensor"]!.offset == 1)
        #expect(try bare.tensor("tensor").integers() == [1, 2, 3, 4]) // torch.arange(5)[1:]
        let p4 = try TorchFile(path: Self.dir + "/protocol4.pt")
        #expect(p4.wrapper == nil && p4.modulePrefixed)
        #expect(try p4.float32("module.layer.bias").scalars(as: Float.self) == file.float32("state_dict.module.layer.bias").scalars(as: Float.self))
    }

    @Test(arguments: [2, 4, 5]) func numpyPicklesMatchPickleLoad(protocol version: Int) throws {
        let file = try TorchFile(path: Self.dir + "/arrays-p\(version).pkl")
        #expect(file.format == "pickle")
        try expectSame(file, try SafeTensorsFile(path: Self.dir + "/arrays-expected.safetensors"))
        #expect(file.tensors["fortran"]!.isContiguous == false)
    }

    @Test func sam2CheckpointLoadsEveryTensor() throws {
        let file = try TorchFile(path: Self.dir + "/sam2-tiny.pt")
        let json = try JSONValue.parse(String(contentsOfFile: Self.dir + "/sam2-tiny-expected.json", encoding: .utf8))
        let expected = json["tensors"]!.objectValue!
        #expect(expected.count == 335) // torch.load's count for this state dict
        #expect(file.names.count == expected.count)
        #expect(file.wrapper == "model")
        #expect(try file.stateDict().count == expected.count)
        for (name, e) in expected {
            let stored = try #require(file.tensors[name], "\(name) missing")
            #expect(stored.shape == e["shape"]!.arrayValue!.map { $0.intValue! }, "\(name)")
            #expect(StoredDType.torchName(stored.dtype) == e["dtype"]!.stringValue!, "\(name)")
            let raw = try file.rawTensor(name)
            var digest = [UInt8](repeating: 0, count: 32)
            raw.withUnsafeBytes { _ = SHA256($0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count, &digest) }
            #expect(digest.map { String(format: "%02x", $0) }.joined() == e["sha256"]!.stringValue!, "\(name)")
        }
    }
}

extension StoredDType {
    /// torch's name of the dtype, as the fixture script writes it.
    static func torchName(_ d: StoredDType) -> String {
        switch d {
        case .f64: "float64"
        case .f32: "float32"
        case .f16: "float16"
        case .bf16: "bfloat16"
        case .i64: "int64"
        case .i32: "int32"
        case .i16: "int16"
        case .i8: "int8"
        case .u8: "uint8"
        case .bool: "bool"
        }
    }
}
