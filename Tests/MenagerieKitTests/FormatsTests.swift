import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

@Suite struct FormatsTests {
    let npy = TestPaths.fixtures + "/npy/"

    @Test func readsWhatNumpyWrote() throws {
        let t = try NPY.read(path: npy + "f32_2x3.npy")
        #expect(t.dtype == .float32 && t.shape == [2, 3])
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: npy + "values.json"))) as! [String: [Double]]
        #expect(try t.scalars(as: Float.self) == expected["f32_2x3"]!.map { Float($0) })
        let i = try NPY.read(path: npy + "i64_4.npy")
        #expect(try i.scalars(as: Int64.self) == [-1, 0, 7, 1 << 40])
        let u = try NPY.read(path: npy + "u8_2x2x3.npy")
        #expect(try u.shape == [2, 2, 3] && u.scalars(as: UInt8.self) == Array(0..<12))
        let s = try NPY.read(path: npy + "f64_scalar.npy")
        #expect(try s.shape == [] && s.scalars(as: Double.self) == [3.25])
        let b = try NPY.read(path: npy + "bool_3.npy")
        #expect(try b.dtype == .bool && b.integers() == [1, 0, 1])
    }

    @Test func refusesWhatItCannotReadWithTheReason() {
        #expect(throws: FormatError.self) { try NPY.read(path: npy + "f32_fortran.npy") }
        do { _ = try NPY.read(path: npy + "c64.npy") } catch {
            #expect("\(error)".contains("dtype '<c8' is not supported"))
        }
        do { _ = try NPY.decode(Data("hello".utf8), path: "x.npy") } catch {
            #expect("\(error)".contains("x.npy: not a .npy file"))
        }
        var truncated = try! Data(contentsOf: URL(fileURLWithPath: npy + "f32_2x3.npy"))
        truncated.removeLast(4)
        do { _ = try NPY.decode(truncated, path: "t.npy") } catch {
            #expect("\(error)".contains("needs 24 bytes of data; the file has 20"))
        }
    }

    @Test func writesWhatNumpyReads() throws {
        let dir = TempDir("npy")
        let t = try Tensor([Float(1.5), -2, 3.25, 0, 7, 8], shape: [3, 2])
        try AtomicFile.write(NPY.encode(t), to: dir.path + "/w.npy")
        let r = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                "import numpy as np; a = np.load('\(dir.path)/w.npy'); assert a.dtype == np.float32 and a.shape == (3, 2) and a.ravel().tolist() == [1.5, -2, 3.25, 0, 7, 8], a",
            ])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try NPY.decode(NPY.encode(t)).scalars(as: Float.self) == t.scalars(as: Float.self))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["w.npy"])
    }

    @Test func pngRoundTripAndRead() throws {
        let img = try PNG.read(path: TestPaths.fixtures + "/images/rgb32.png")
        #expect(img.width == 32 && img.height == 32 && img.channels == 3)
        let back = try PNG.decodeRoundTrip(img)
        #expect(back == img)
        var gray = Image(width: 5, height: 3, channels: 1)
        for i in 0..<15 { gray.pixels[i] = UInt8(i * 17) }
        #expect(try PNG.decodeRoundTrip(gray) == gray)
        #expect(throws: FormatError.self) { try PNG.read(path: npy + "f32_2x3.npy") }
    }

    /// 16-bit PNGs written by an independent encoder (Tests/Fixtures/images/make_png16.py) read
    /// back exactly; ours round-trip through libpng and carry bit depth 16 in IHDR.
    @Test func png16BitSamples() throws {
        let images = TestPaths.fixtures + "/images/"
        for name in ["gray16", "rgb16", "rgba16", "ga16"] {
            let got = try PNG.readSamples(path: images + name + ".png")
            let want = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: images + name + ".npy")))
            #expect(got.bitDepth == 16 && got.pixels.dtype == .int32, "\(name)")
            #expect(got.pixels.shape == want.shape, "\(name): \(got.pixels.shape) vs \(want.shape)")
            let (gotValues, wantValues) = (try got.pixels.integers(), try want.integers())
            #expect(gotValues == wantValues, "\(name)")
        }
        let dir = TempDir("png16")
        for shape in [[3, 4], [2, 5, 3], [4, 2, 4]] {
            let n = shape.reduce(1, *)
            let values = (0..<n).map { Int32(($0 * 40_503 + 7) % 65_536) }
            let t = try Tensor(values, shape: shape)
            try PNG.writeSamples(t, to: dir.path + "/w.png")
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/w.png"))
            #expect(bytes[24] == 16, "IHDR bit depth")
            let back = try PNG.readSamples(path: dir.path + "/w.png")
            let backValues = try back.pixels.integers()
            #expect(back.bitDepth == 16 && back.pixels.shape == shape && backValues == values.map(Int.init))
        }
        // 8-bit files keep u8 samples; out-of-range and wrong-typed samples are refused.
        let eight = try PNG.readSamples(path: images + "rgb32.png")
        let (eightValues, decoded) = (try eight.pixels.scalars(as: UInt8.self), try PNG.read(path: images + "rgb32.png"))
        #expect(eight.bitDepth == 8 && eight.pixels.dtype == .uint8 && eightValues == decoded.pixels)
        #expect(throws: FormatError.self) { try PNG.writeSamples(Tensor([Int32(70_000)], shape: [1, 1]), to: dir.path + "/bad.png") }
        #expect(throws: FormatError.self) { try PNG.writeSamples(Tensor([Float(1)], shape: [1, 1]), to: dir.path + "/bad.png") }
        #expect(throws: FormatError.self) { try PNG.readSamples(path: self.npy + "f32_2x3.npy") }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/bad.png"))
    }

    @Test func seededGeneratorIsDeterministicAndNormal() {
        var a = SeededGenerator(seed: 7), b = SeededGenerator(seed: 7), c = SeededGenerator(seed: 8)
        let xs = (0..<5).map { _ in a.next() }
        #expect(xs == (0..<5).map { _ in b.next() })
        #expect(xs != (0..<5).map { _ in c.next() })
        var g = SeededGenerator(seed: 1)
        let n = 20000
        let samples = (0..<n).map { _ in g.nextNormal() }
        let mean = samples.reduce(0, +) / Double(n)
        let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n)
        #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
    }
}

extension PNG {
    /// Encode then decode through a file, as a user would.
    static func decodeRoundTrip(_ img: Image) throws -> Image {
        let dir = TempDir("png")
        try write(img, to: dir.path + "/x.png")
        return try read(path: dir.path + "/x.png")
    }
}

/// Corrupted and truncated files of each format: a clear error naming the file, never a crash.
@Suite struct CorruptFileTests {
    let dir = TempDir("corrupt")

    func mutations(of good: Data) -> [(String, Data)] {
        var out: [(String, Data)] = [
            ("empty", Data()), ("one byte", good.prefix(1)), ("half", good.prefix(good.count / 2)),
            ("all but one byte", good.prefix(good.count - 1)), ("text", Data("not an image at all".utf8)),
        ]
        for offset in [0, 1, 8, 12, 16, 20, 24, 33] where offset < good.count {
            var d = good
            d[offset] ^= 0xFF
            out.append(("byte \(offset) flipped", d))
        }
        return out
    }

    /// Both readers (the simplified 8-bit one and the 16-bit one), on 8- and 16-bit files.
    @Test func pngMutations() throws {
        var img = Image(width: 9, height: 7, channels: 3)
        for i in img.pixels.indices { img.pixels[i] = UInt8(i % 251) }
        let sixteen = dir.path + "/good16.png"
        try PNG.writeSamples(Tensor((0..<(9 * 7 * 3)).map { Int32($0 * 311) }, shape: [7, 9, 3]), to: sixteen)
        for good in [try PNG.encode(img), try Data(contentsOf: URL(fileURLWithPath: sixteen))] {
            for reader in [
                { (p: String) in
                    let i = try PNG.read(path: p)
                    return [i.height, i.width]
                },
                { (p: String) in Array(try PNG.readSamples(path: p).pixels.shape.prefix(2)) },
            ] {
                var refused = 0
                for (label, bytes) in mutations(of: good) {
                    let path = dir.path + "/m.png"
                    try bytes.write(to: URL(fileURLWithPath: path))
                    do {
                        // A flip in an ancillary place can leave a valid PNG: then it must still be 9×7.
                        #expect(try reader(path) == [7, 9], "\(label)")
                    } catch let e as FormatError {
                        refused += 1
                        #expect(e.description.hasPrefix(path), "\(label): \(e)")
                    }
                }
                #expect(refused >= 10)
            }
        }
    }

    @Test func npyMutations() throws {
        let good = NPY.encode(try Tensor([Float](repeating: 1.5, count: 12), shape: [3, 4]))
        var refused = 0
        for (label, bytes) in mutations(of: good) {
            do {
                let t = try NPY.decode(bytes, path: "m.npy")
                #expect(t.count == 12, "\(label)")
            } catch let e as FormatError {
                refused += 1
                #expect(e.description.hasPrefix("m.npy"), "\(label): \(e)")
            }
        }
        #expect(refused >= 8)
        // Headers that lie about the shape.
        for shape in ["(3, -4)", "(99999999999, 2)", "(3 4)", "(4000000000, 4000000000, 4000000000)"] {
            var header = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
            header += String(repeating: " ", count: 127 - 10 - header.utf8.count) + "\n" // 128-byte preamble
            var d = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.utf8.count), 0])
            d.append(Data(header.utf8))
            d.append(Data(count: 48))
            #expect(throws: FormatError.self) { try NPY.decode(d, path: "lie.npy") }
        }
    }
}
