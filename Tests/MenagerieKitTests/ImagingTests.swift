import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

@Suite struct ImagingTests {
    let dir = TempDir("img")

    @Test func tiffRoundTripsEverySupportedKind() throws {
        var rng = SeededGenerator(seed: 5)
        let cases: [Tensor] = [
            try Tensor((0..<(7 * 5)).map { _ in UInt8(rng.next() % 256) }, shape: [7, 5]),
            try Tensor((0..<(4 * 6 * 3)).map { _ in UInt8(rng.next() % 256) }, shape: [4, 6, 3]),
            try Tensor((0..<(3 * 3 * 4)).map { _ in UInt8(rng.next() % 256) }, shape: [3, 3, 4]),
            try Tensor((0..<(5 * 4)).map { _ in Int32(rng.next() % 65536) }, shape: [5, 4]),
            try Tensor((0..<(2 * 3 * 3)).map { _ in Float(rng.nextNormal()) }, shape: [2, 3, 3]),
        ]
        for (k, t) in cases.enumerated() {
            let path = dir.path + "/\(k).tif"
            try TIFF.write(t, to: path)
            let page = try TIFF.read(path: path)
            #expect(page.pixels.shape == t.shape, "case \(k)")
            #expect(page.pixels.withUnsafeBytes { Array($0) } == t.withUnsafeBytes { Array($0) }, "case \(k)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }.isEmpty)
    }

    /// Tiles (edge tiles partly outside the image) are read back into the right places.
    @Test func tiledTIFFsRoundTrip() throws {
        var rng = SeededGenerator(seed: 8)
        for t in [
            try Tensor((0..<(37 * 50 * 3)).map { _ in UInt8(rng.next() % 256) }, shape: [37, 50, 3]),
            try Tensor((0..<(20 * 33)).map { _ in Float(rng.nextNormal()) }, shape: [20, 33]),
        ] {
            let path = dir.path + "/tiled.tif"
            try TIFF.write(t, to: path, tile: 16)
            let page = try TIFF.read(path: path)
            #expect(page.pixels.shape == t.shape)
            #expect(page.pixels.withUnsafeBytes { Array($0) } == t.withUnsafeBytes { Array($0) })
        }
        #expect(throws: FormatError.self) { try TIFF.write(try Tensor([UInt8(1)], shape: [1, 1]), to: self.dir.path + "/x.tif", tile: 10) }
    }

    @Test func corruptTIFFsAreRefusedWithLibtiffsReason() throws {
        let path = dir.path + "/ok.tif"
        try TIFF.write(try Tensor([UInt8](repeating: 7, count: 64 * 64), shape: [64, 64]), to: path)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        var badMagic = good
        badMagic[2] = 0x99
        let cases: [(String, Data)] = [
            ("empty", Data()), ("text", Data("hello, not a tiff".utf8)), ("bad magic", badMagic),
            ("header only", good.prefix(8)), ("truncated", good.prefix(good.count / 2)),
        ]
        for (label, bytes) in cases {
            let p = dir.path + "/bad.tif"
            try bytes.write(to: URL(fileURLWithPath: p))
            do {
                _ = try TIFF.read(path: p)
                Issue.record("\(label): accepted")
            } catch let e as FormatError {
                #expect(e.description.hasPrefix(p), "\(label): \(e)")
            }
        }
        #expect(throws: FormatError.self) { try TIFF.write(try Tensor([Int32(70000)], shape: [1, 1]), to: self.dir.path + "/x.tif") }
    }

    @Test func jetRunsBlueToRedAndOverlaysFollowGradCAM() throws {
        #expect(Overlay.jet(0) == (0, 0, 128) && Overlay.jet(1) == (128, 0, 0) && Overlay.jet(0.5) == (128, 255, 128))
        let image = Image(width: 2, height: 1, channels: 3, pixels: [255, 255, 255, 0, 0, 0])
        let out = try Overlay.heatmap(on: image, map: [1, 0], imageWeight: 0.5)
        // Pixel 0: 0.5·(128,0,0)/255 + 0.5·1 ; the maximum (its red) becomes 255.
        #expect(out.pixels[0] == 255)
        #expect(throws: OverlayError.self) { try Overlay.heatmap(on: image, map: [1], imageWeight: 0.5) }
        let masked = try Overlay.labels(on: image, mask: [0, 1], alpha: 1)
        #expect(Array(masked.pixels[0..<3]) == [255, 255, 255])
        let c = Overlay.labelColour(1)
        #expect(Array(masked.pixels[3..<6]) == [c.0, c.1, c.2])
        let grid = try Overlay.grid([image, image, image], columns: 2, padding: 1)
        #expect(grid.width == 2 * 2 + 3 && grid.height == 2 * 1 + 3)
    }
}

/// Resizing matches Pillow bit for bit (the fixtures were written by Pillow 13.0.0).
@Suite struct ResizeTests {
    let folder = TestPaths.fixtures + "/resize/"

    func image(_ name: String) throws -> Image { try Image(tensor: NPY.read(path: folder + name + ".npy")) }

    @Test(arguments: Resample.allCases)
    func matchesPillow(_ filter: Resample) throws {
        for kind in ["rgb", "gray"] {
            let source = try image("source_\(kind)")
            for (w, h) in [(16, 16), (64, 50), (37, 12), (224, 224), (20, 40)] {
                let ours = source.resized(width: w, height: h, filter: filter)
                let pillow = try image("\(filter.rawValue)_\(kind)_\(w)x\(h)")
                let worst = zip(ours.pixels, pillow.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
                #expect(ours.width == w && ours.height == h && worst == 0, "\(filter) \(kind) \(w)×\(h): max difference \(worst)")
            }
        }
    }

    @Test func centerCropFollowsTorchvision() throws {
        let source = try image("source_rgb") // 37×29
        let crop = source.centerCropped(width: 20, height: 20)
        // torchvision: top = round(4.5) = 4, left = round(8.5) = 8 (Python rounds halves to even).
        let top = 4, left = 8
        #expect(Array(crop.pixels[0..<3]) == Array(source.pixels[((top * 37) + left) * 3..<((top * 37) + left) * 3 + 3]))
        let square = source.resizedShorterSideAndCropped(to: 16)
        #expect(square.width == 16 && square.height == 16)
    }
}
