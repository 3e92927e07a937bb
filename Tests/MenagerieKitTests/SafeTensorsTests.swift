import Formats
import Foundation
import Tensors
import TestSupport
import Testing

@Suite struct SafeTensorsTests {
    let dir = TempDir("st")

    @Test func readsTheTimmCheckpointZeroCopy() throws {
        let file = try SafeTensorsFile(path: TestPaths.fixtures + "/vit-cam-tiny/model.safetensors")
        #expect(try file.entry("patch_embed.proj.weight").shape == [48, 3, 8, 8])
        let w = try file.float32("blocks.1.mlp.fc2.weight", shape: [48, 192])
        #expect(w.storage.isOwned == false) // borrowed from the mapped file
        // numpy reads the same bytes.
        let r = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import json, struct, numpy as np
                b = open('\(file.path)', 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
                s, e = h['blocks.1.mlp.fc2.weight']['data_offsets']
                a = np.frombuffer(b[8 + n + s:8 + n + e], dtype='<f4'); print(repr(float(a.sum())), repr(float(a[5])), len([k for k in h if k != '__metadata__']))
                """,
            ])
        let parts = r.stdout.split(separator: " ").map { Double($0.trimmingCharacters(in: .whitespacesAndNewlines))! }
        let values: [Float] = try w.scalars()
        #expect(abs(Double(values.reduce(0, +)) - parts[0]) < 1e-3)
        #expect(Double(values[5]) == parts[1])
        #expect(file.names.count == Int(parts[2]))
        #expect(throws: FormatError.self) { try file.float32("blocks.1.mlp.fc2.weight", shape: [192, 48]) }
        #expect(throws: FormatError.self) { try file.tensor("no.such.tensor") }
    }

    @Test func roundTripsEveryDType() throws {
        let tensors: [(name: String, tensor: Tensor)] = [
            ("f32", try Tensor([Float(1.5), -2, 3], shape: [3])), ("f64", try Tensor([0.1, 0.2], shape: [2, 1])),
            ("i32", try Tensor([Int32(-7), 8], shape: [2])), ("i64", try Tensor([Int64(1) << 40], shape: [1])),
            ("u8", try Tensor([UInt8(0), 255, 3, 4], shape: [2, 2])), ("bool", try Tensor([true, false], shape: [2])),
            ("scalar", try Tensor([Float(42)], shape: [])), ("empty", Tensor(zeros: .float32, shape: [0, 3])),
            ("f16", try Tensor([Float(0.5), -1.25, 65504]).converted(to: .float16)),
            ("bf16", try Tensor([Float(1), -3.5, 1e30]).converted(to: .bfloat16)),
        ]
        try SafeTensors.write(tensors, metadata: ["format": "pt"], to: dir.path + "/all.safetensors")
        let file = try SafeTensorsFile(path: dir.path + "/all.safetensors")
        #expect(file.metadata == ["format": "pt"])
        for (name, t) in tensors {
            let back = try file.tensor(name)
            #expect(back.dtype == t.dtype && back.shape == t.shape, "\(name)")
            #expect(back.withUnsafeBytes { Array($0) } == t.withUnsafeBytes { Array($0) }, "\(name)")
        }
        #expect(try file.float32("f16").scalars(as: Float.self) == [0.5, -1.25, 65504])
        #expect(try file.float32("bf16").scalars(as: Float.self)[0...1] == [1, -3.5])
        // Data starts 8-byte aligned.
        let n = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/all.safetensors")).prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect((8 + n) % 8 == 0)
    }

    @Test func numpyAgreesOnHalfPrecision() throws {
        let r = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import numpy as np, json
                x = np.array([0.1, -2.7, 1e-5, 3.14159, 60000], dtype=np.float32)
                h = x.astype(np.float16); bf = (x.view(np.uint32) >> 16).astype(np.uint16)
                print(json.dumps({'h': h.view(np.uint16).tolist(), 'hf': h.astype(np.float32).tolist(),
                                  'bf': bf.tolist(), 'bff': (bf.astype(np.uint32) << 16).view(np.float32).tolist()}))
                """,
            ])
        let j = try JSONValue.parse(r.stdout)
        let hBits = j["h"]!.arrayValue!.map { UInt16($0.intValue!) }, bfBits = j["bf"]!.arrayValue!.map { UInt16($0.intValue!) }
        func tensor(_ bits: [UInt16], _ dtype: DType) throws -> Tensor {
            var t = Tensor(zeros: dtype, shape: [bits.count])
            t.withUnsafeMutableBytes { raw in for (i, b) in bits.enumerated() { raw.storeBytes(of: b, toByteOffset: 2 * i, as: UInt16.self) } }
            return t
        }
        #expect(try tensor(hBits, .float16).converted(to: .float32).scalars(as: Float.self) == j["hf"]!.arrayValue!.map { Float($0.doubleValue!) })
        #expect(try tensor(bfBits, .bfloat16).converted(to: .float32).scalars(as: Float.self) == j["bff"]!.arrayValue!.map { Float($0.doubleValue!) })
    }

    /// A dozen corruptions: each gives a FormatError naming the problem, none crashes.
    @Test func corruptFilesAreRefusedWithTheReason() throws {
        let good = try SafeTensors.encode([("a", try Tensor([Float(1), 2, 3, 4], shape: [2, 2])), ("b", Tensor([Int64(5)]))])
        let n = Int(good.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = String(decoding: good[8..<(8 + n)], as: UTF8.self)
        func withHeader(_ h: String, data: Data? = nil) -> Data {
            var d = Data()
            withUnsafeBytes(of: UInt64(h.utf8.count).littleEndian) { d.append(contentsOf: $0) }
            d.append(contentsOf: Array(h.utf8))
            d.append(data ?? good[(8 + n)...])
            return d
        }
        var bigLength = good
        bigLength.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
        var pastEnd = good
        pastEnd.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(good.count).littleEndian) { Data($0) })
        // The header of `good` with one byte of its first name replaced by 0xFF.
        var notUTF8 = good
        notUTF8[8 + 2] = 0xFF
        let cases: [(String, Data, String)] = [
            ("empty", Data(), "shorter than the 8-byte header length"),
            ("truncated data", good.prefix(good.count - 4), "truncated file"),
            ("huge header length", bigLength, "exceeds the limit of 100000000 bytes"),
            ("header past the end", pastEnd, "does not fit"),
            ("not JSON", withHeader("{\"a\": nope}"), "not valid JSON"),
            ("not an object", withHeader("[1, 2]"), "does not start with '{'"),
            ("not UTF-8", notUTF8, "not valid UTF-8"),
            ("unknown dtype", withHeader(header.replacingOccurrences(of: "\"F32\"", with: "\"F33\"")), "unknown dtype 'F33'"),
            ("shape vs bytes", withHeader(header.replacingOccurrences(of: "[2,2]", with: "[2,3]")), "needs 24 bytes, data_offsets give 16"),
            ("negative dimension", withHeader(header.replacingOccurrences(of: "[2,2]", with: "[-2,-2]")), "invalid dimension -2"),
            (
                "overlap", withHeader(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#),
                "overlap"
            ),
            // The reference implementation's rule: sorted by offset, back to back, up to the end.
            (
                "overlap behind an empty tensor",
                withHeader(
                    #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[4],"data_offsets":[4,20]}}"#,
                    data: Data(count: 20)), "'a' and 'e' overlap"
            ),
            (
                "overlap of equal ranges",
                withHeader(
                    #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: Data(count: 8)),
                "overlap"
            ),
            (
                "gap",
                withHeader(
                    #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, data: Data(count: 12)),
                "a gap"
            ),
            ("not from 0", withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: Data(count: 8)), "begins at byte 4"),
            ("trailing bytes", good + Data([0]), "1 trailing bytes"),
            (
                "byte size overflows", withHeader(#"{"a":{"dtype":"F64","shape":[1073741824,1073741824],"data_offsets":[0,0]}}"#, data: Data()),
                "needs more than 2^63 bytes"
            ),
            (
                "strides overflow behind a zero",
                withHeader(#"{"a":{"dtype":"F32","shape":[0,549755813887,549755813887],"data_offsets":[0,0]}}"#, data: Data()),
                "more elements than can be addressed"
            ),
            ("no offsets", withHeader(#"{"a":{"dtype":"F32","shape":[2]}}"#), "needs \"data_offsets\""),
            ("bad metadata", withHeader(#"{"__metadata__":{"k":1}}"#), "is not a string"),
            ("offsets reversed", withHeader(#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#), "occupies bytes"),
        ]
        for (label, bytes, message) in cases {
            let path = dir.path + "/bad.safetensors"
            try bytes.write(to: URL(fileURLWithPath: path))
            do {
                _ = try SafeTensorsFile(path: path)
                Issue.record("\(label): accepted")
            } catch let e as FormatError {
                #expect(e.description.contains(message), "\(label): \(e)")
                #expect(e.description.hasPrefix(path), "\(label): the error names the file")
            }
        }
    }

    /// The issue's cuts: every file shortened by 1…8 bytes is refused, also when the last tensor is
    /// empty or the data section is empty (the cut then reaches the header).
    @Test func everyCutFromTheEndIsRefused() throws {
        let files: [(String, Data)] = [
            ("two tensors", try SafeTensors.encode([("a", try Tensor([Float(1), 2, 3, 4], shape: [2, 2])), ("b", Tensor([Int64(5)]))])),
            ("empty last", try SafeTensors.encode([("a", Tensor([UInt8(1), 2, 3])), ("z", Tensor(zeros: .float32, shape: [0]))])),
            ("no data", try SafeTensors.encode([("z", Tensor(zeros: .float32, shape: [0, 3]))])),
        ]
        for (label, good) in files {
            let path = dir.path + "/cut.safetensors"
            try good.write(to: URL(fileURLWithPath: path))
            #expect(try SafeTensorsFile(path: path).names.count >= 1, "\(label): the whole file loads")
            for cut in 1...8 {
                try good.prefix(good.count - cut).write(to: URL(fileURLWithPath: path))
                #expect(throws: FormatError.self, "\(label) minus \(cut) bytes") { try SafeTensorsFile(path: path) }
            }
        }
    }

    /// Every safetensors file the repository ships (fixtures and plugin resources) meets the rule.
    @Test func everyShippedFileLoads() throws {
        let root = TestPaths.sourceRoot
        var found = 0
        for folder in ["Tests/Fixtures", "Plugins"] {
            let walker = FileManager.default.enumerator(atPath: root + "/" + folder)
            while let item = walker?.nextObject() as? String {
                guard item.hasSuffix(".safetensors") else { continue }
                let file = try SafeTensorsFile(path: root + "/" + folder + "/" + item)
                #expect(!file.names.isEmpty, "\(item)")
                found += 1
            }
        }
        #expect(found >= 12)
    }

    @Test func shardedCheckpointsResolveEveryName() throws {
        try SafeTensors.write([("x.weight", try Tensor([Float(1), 2], shape: [2]))], to: dir.path + "/model-00001-of-00002.safetensors")
        try SafeTensors.write([("y.weight", try Tensor([Float(3)], shape: [1]))], to: dir.path + "/model-00002-of-00002.safetensors")
        try #"{"metadata": {"total_size": 12}, "weight_map": {"x.weight": "model-00001-of-00002.safetensors", "y.weight": "model-00002-of-00002.safetensors"}}"#
            .write(toFile: dir.path + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        let ckpt = try SafeTensorsCheckpoint(path: dir.path)
        #expect(ckpt.names == ["x.weight", "y.weight"])
        #expect(try ckpt.float32("y.weight").scalars(as: Float.self) == [3])
        #expect(try ckpt.float32("x.weight", shape: [2]).scalars(as: Float.self) == [1, 2])
        #expect(throws: FormatError.self) { try ckpt.tensor("z.weight") }
    }
}
