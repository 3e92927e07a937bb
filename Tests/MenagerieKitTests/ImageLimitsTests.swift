import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

/// TIFFs read through libtiff's RGBA path (palette, CMYK, MinIsWhite, bilevel, JPEG-compressed
/// YCbCr in tiles and strips) against Pillow's decoding, and decompression bombs in every reader
/// refused before anything is allocated (fixtures: Tests/Fixtures/images/make_tiff.py).
@Suite struct ImageLimitsTests {
    let dir = TempDir("imglimits")
    let images = TestPaths.fixtures + "/images"

    static let rgbaKinds: [(name: String, tolerance: Int)] = [
        ("tiff_palette", 1), ("tiff_cmyk", 1), ("tiff_miniswhite", 0), ("tiff_bilevel", 0),
        ("tiff_ycbcr_tiled", 1), ("tiff_ycbcr_strips", 1),
    ]

    @Test(arguments: rgbaKinds)
    func tiffKindsMatchPillow(_ kind: (name: String, tolerance: Int)) throws {
        let page = try TIFF.read(path: images + "/\(kind.name).tif")
        let expected = try NPY.read(path: images + "/\(kind.name).npy")
        #expect(page.pixels.dtype == .uint8)
        #expect(page.pixels.shape == expected.shape, "\(kind.name): \(page.pixels.shape) vs Pillow's \(expected.shape)")
        #expect(page.channels == 3 && page.bitsPerSample == 8)
        let ours: [UInt8] = try page.pixels.scalars(), theirs: [UInt8] = try expected.scalars()
        guard ours.count == theirs.count else { return }
        let worst = zip(ours, theirs).map { abs(Int($0) - Int($1)) }.max() ?? 0
        #expect(worst <= kind.tolerance, "\(kind.name): differs from Pillow by up to \(worst)")
        // Not the raw samples: the image has colour or the right polarity somewhere.
        #expect(Set(ours).count > 1)
    }

    /// The issue's 135-byte TIFF declaring one 65536×65536 tile (17 GB): refused, naming the tile.
    @Test func tiffTileBombIsRefusedBeforeAllocating() throws {
        let path = images + "/tiff_bomb_tile.tif"
        do {
            _ = try TIFF.read(path: path)
            Issue.record("accepted")
        } catch let e as FormatError {
            #expect(e.description.contains("tile 65536×65536 does not fit a 64×64 image"), "\(e)")
        }
    }

    /// Tiles larger than the image (writers use 256×256 on small images) still read.
    @Test func tilesLargerThanTheImageStillRead() throws {
        let path = dir.path + "/small.tif"
        let t = try Tensor((0..<(10 * 7)).map { UInt8($0) }, shape: [7, 10])
        try TIFF.write(t, to: path, tile: 256)
        #expect(try TIFF.read(path: path).pixels.scalars(as: UInt8.self) == t.scalars(as: UInt8.self))
    }

    /// A JPEG whose frame header declares 16384×16384 (268 Mpx) on a few hundred bytes: refused by
    /// Pillow's pixel limit before libjpeg allocates.
    @Test func jpegBombIsRefused() throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: images + "/jpeg_gray.jpg")))
        let sof = try #require((0..<(bytes.count - 9)).first { bytes[$0] == 0xFF && (bytes[$0 + 1] == 0xC0 || bytes[$0 + 1] == 0xC2) })
        bytes[sof + 5] = 0x40
        bytes[sof + 6] = 0x00 // height 16384
        bytes[sof + 7] = 0x40
        bytes[sof + 8] = 0x00 // width 16384
        let path = dir.path + "/bomb.jpg"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try JPEG.read(path: path)
            Issue.record("accepted")
        } catch let e as FormatError {
            #expect(e.description.contains("16384×16384 pixels exceed the limit of \(Limits.maxImagePixels)"), "\(e)")
        }
    }

    /// A PNG whose IHDR declares 20000×20000 (CRC fixed): refused by both readers.
    @Test func pngBombIsRefusedByBothReaders() throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: images + "/rgb32.png")))
        // Signature (8) + length (4) + "IHDR" (4): width and height follow, the CRC after 13 bytes.
        let be: (UInt32) -> [UInt8] = { v in [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: v >> $0) } }
        bytes.replaceSubrange(16..<24, with: be(20000) + be(20000))
        bytes.replaceSubrange(29..<33, with: be(crc32(bytes[12..<29])))
        let path = dir.path + "/bomb.png"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        for read in [{ _ = try PNG.read(path: path) }, { _ = try PNG.readSamples(path: path) }] as [() throws -> Void] {
            do {
                try read()
                Issue.record("accepted")
            } catch let e as FormatError {
                #expect(e.description.contains("20000×20000 pixels exceed the limit of \(Limits.maxImagePixels)"), "\(e)")
            }
        }
    }

    /// FIFOs are refused by every image reader instead of blocking in open().
    @Test func fifosAreRefused() throws {
        for ext in ["png", "tif", "jpg"] {
            let path = dir.path + "/fifo.\(ext)"
            #expect(mkfifo(path, 0o600) == 0)
            #expect(throws: FormatError.self) { _ = try ImageFiles.read(path) }
        }
        #expect(throws: FormatError.self) { _ = try PNG.readSamples(path: dir.path + "/fifo.png") }
    }

    func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
