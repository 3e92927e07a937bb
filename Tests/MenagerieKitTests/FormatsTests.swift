import Foundation
import Formats
import Imaging
import Tensors
import Testing
import TestSupport

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
        let r = try runProcess("/usr/bin/env", ["python3", "-c",
            "import numpy as np; a = np.load('\(dir.path)/w.npy'); assert a.dtype == np.float32 and a.shape == (3, 2) and a.ravel().tolist() == [1.5, -2, 3.25, 0, 7, 8], a"])
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
