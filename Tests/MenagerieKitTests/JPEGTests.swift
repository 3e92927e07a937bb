import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

/// JPEG through libjpeg-turbo against Pillow 13.0's decoding of the same files
/// (`Tests/Fixtures/images/make_jpeg.py`), the writer's round trip and bad files.
@Suite struct JPEGTests {
    let dir = TempDir("jpeg")
    let images = TestPaths.fixtures + "/images"

    /// Baseline 4:4:4, progressive 4:2:0 and grey: every sample within 1 of Pillow's (the same islow
    /// IDCT and fancy upsampling; libjpeg-turbo 2.1 here, 3.2 in Pillow's wheel), shapes equal.
    @Test(arguments: ["jpeg_rgb444", "jpeg_rgb420_progressive", "jpeg_gray"])
    func decodesAsPillow(_ name: String) throws {
        let expected = try NPY.read(path: images + "/\(name).npy")
        let image = try JPEG.read(path: images + "/\(name).jpg")
        let shape = expected.shape
        #expect(image.height == shape[0] && image.width == shape[1] && image.channels == (shape.count == 3 ? shape[2] : 1))
        let reference: [UInt8] = try expected.scalars()
        let differences = zip(image.pixels, reference).map { abs(Int($0) - Int($1)) }
        #expect(differences.count == reference.count)
        #expect(differences.max() ?? 99 <= 1, "\(name): max difference \(differences.max() ?? -1)")
        // Also through the generic reader and a folder listing.
        #expect(try ImageFiles.read(images + "/\(name).jpg").pixels == image.pixels)
    }

    @Test func writesJPEGsThatReadBackCloseAndAtomically() throws {
        var rng = SeededGenerator(seed: 3)
        // A smooth image (JPEG's case) with a little noise.
        let (w, h) = (40, 24)
        var px = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            for x in 0..<w {
                for c in 0..<3 {
                    px[(y * w + x) * 3 + c] = UInt8(max(0, min(255, Double(x * 5 + y * 3 + c * 40) + rng.nextNormal() * 3)))
                }
            }
        }
        let image = Image(width: w, height: h, channels: 3, pixels: px)
        var errors: [Double] = []
        for quality in [95, 50] {
            let path = dir.path + "/q\(quality).jpg"
            try JPEG.write(image, to: path, quality: quality)
            let back = try JPEG.read(path: path)
            #expect(back.width == w && back.height == h && back.channels == 3)
            let mean = Double(zip(back.pixels, px).map { abs(Int($0) - Int($1)) }.reduce(0, +)) / Double(px.count)
            #expect(mean < (quality == 95 ? 3.0 : 6.0), "quality \(quality): mean abs error \(mean)")
            errors.append(mean)
        }
        #expect(errors[0] < errors[1], "quality 95 must be closer than 50: \(errors)")
        #expect(
            try FileManager.default.attributesOfItem(atPath: dir.path + "/q95.jpg")[.size] as! Int
                > (try FileManager.default.attributesOfItem(atPath: dir.path + "/q50.jpg")[.size] as! Int))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }.isEmpty)
        #expect(throws: (any Error).self) { try JPEG.write(image, to: dir.path + "/bad.jpg", quality: 0) }
    }

    @Test func badFilesAreRefusedWithTheReason() throws {
        func message(_ path: String) -> String {
            do {
                _ = try JPEG.read(path: path)
                return "read"
            } catch { return "\(error)" }
        }
        // Cut after 200 bytes: libjpeg alone would pad the image with grey; we refuse it.
        let truncated = message(images + "/truncated.jpg")
        #expect(truncated.contains("truncated.jpg") && truncated.contains("truncated"), "\(truncated)")
        // A PNG named .jpg: libjpeg's own reason.
        try FileManager.default.copyItem(atPath: images + "/rgb32.png", toPath: dir.path + "/png.jpg")
        let png = message(dir.path + "/png.jpg")
        #expect(png.contains("png.jpg") && png.contains("not a readable JPEG") && png.contains("Not a JPEG file"), "\(png)")
        let missing = message(dir.path + "/absent.jpg")
        #expect(missing.contains("absent.jpg") && missing.contains("cannot open: No such file"), "\(missing)")
    }
}
