import CTIFF
import Formats
import Foundation
import Synchronization
import Tensors

/// TIFF files through libtiff: 8/16-bit unsigned and 32-bit float samples, 1–4 channels, strips or
/// tiles, exactly; any other photometric or depth as 8-bit RGB(A) through libtiff's RGBA path; the
/// first page of multi-page files. libtiff's messages become the errors'
/// text (its handlers are replaced: nothing is printed on stderr).
public enum TIFF {
    /// What a TIFF holds: samples as a tensor [H, W] or [H, W, C] of u8, f32 (16-bit samples are
    /// read as i32 to stay exact) and the sample format.
    public struct Page: Sendable {
        public let width: Int
        public let height: Int
        public let channels: Int
        public let bitsPerSample: Int
        public let pixels: Tensor
    }

    /// The largest width × height read (a guard against decompression bombs); `MENAGERIE_MAX_PIXELS`.
    public static var maxPixels: Int {
        Limits.maxImagePixels
    }

    /// Reads the first page. Plain contiguous MinIsBlack (1–2 samples) and RGB(A) (3–4 samples)
    /// images of 8/16-bit unsigned or 32-bit float samples are read exactly, at their own depth;
    /// every other kind (palette, CMYK, MinIsWhite, YCbCr — subsampled or JPEG-compressed —, 1/2/4-bit,
    /// planar) goes through libtiff's RGBA conversion and comes as 8-bit RGB, or RGBA when the file
    /// has an extra (alpha) sample; libtiff premultiplies unassociated alpha on that path.
    ///
    /// Sizes are checked before anything is allocated: width × height against `Limits.imageSize`
    /// (Pillow's `MAX_IMAGE_PIXELS`), tile sizes against the image and `Limits.allocation`, and
    /// libtiff's own buffers are capped at `Limits.allocationLimit`. FIFOs and devices are refused.
    public static func read(path: String) throws -> Page {
        installHandlers()
        clearMessage()
        let (fd, _) = try RegularFile.open(path)
        guard let tif = mng_tiff_open_fd(fd, path, Limits.allocationLimit) else {
            throw FormatError(path: path, "not a readable TIFF (\(lastMessage() ?? "open failed"))")
        }
        defer { TIFFClose(tif) }
        var w: UInt32 = 0, h: UInt32 = 0, bits: UInt16 = 0, spp: UInt16 = 0, format: UInt16 = 0, planar: UInt16 = 0
        guard mng_tiff_get_u32(tif, UInt32(TIFFTAG_IMAGEWIDTH), &w) == 1, mng_tiff_get_u32(tif, UInt32(TIFFTAG_IMAGELENGTH), &h) == 1 else {
            throw FormatError(path: path, "TIFF without image width/length tags")
        }
        _ = mng_tiff_get_u16_default(tif, UInt32(TIFFTAG_BITSPERSAMPLE), &bits)
        _ = mng_tiff_get_u16_default(tif, UInt32(TIFFTAG_SAMPLESPERPIXEL), &spp)
        _ = mng_tiff_get_u16_default(tif, UInt32(TIFFTAG_SAMPLEFORMAT), &format)
        _ = mng_tiff_get_u16_default(tif, UInt32(TIFFTAG_PLANARCONFIG), &planar)
        let width = Int(w), height = Int(h), channels = Int(spp)
        try Limits.imageSize(width: width, height: height, source: path)
        var photometric: UInt16 = 0
        if mng_tiff_get_u16(tif, UInt32(TIFFTAG_PHOTOMETRIC), &photometric) != 1 {
            photometric = UInt16(channels >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK)
        }
        let isFloat = format == UInt16(SAMPLEFORMAT_IEEEFP)
        let exactSamples = (bits == 8 || bits == 16) && format == UInt16(SAMPLEFORMAT_UINT) || (bits == 32 && isFloat)
        let exact =
            planar == UInt16(PLANARCONFIG_CONTIG) && exactSamples
            && (photometric == UInt16(PHOTOMETRIC_MINISBLACK) && (1...2).contains(channels)
                || photometric == UInt16(PHOTOMETRIC_RGB) && (3...4).contains(channels))
        var tile: (width: Int, height: Int)?
        if TIFFIsTiled(tif) != 0 { tile = try checkTiles(tif, width: width, height: height, path: path) }
        guard exact else { return try readRGBA(tif, width: width, height: height, path: path) }

        let bytesPerSample = Int(bits) / 8
        let rowBytes = width * channels * bytesPerSample
        try Limits.allocation(count: width * height * channels, elementSize: bytesPerSample, what: "the TIFF image", source: path)
        var raw = [UInt8](repeating: 0, count: width * height * channels * bytesPerSample)
        try raw.withUnsafeMutableBytes { out in
            if let (tw, th) = tile {
                let tileRow = tw * channels * bytesPerSample
                let tileBytes = Int(TIFFTileSize64(tif))
                // libtiff fills tileBytes; every row copied below must lie inside them.
                guard tileBytes >= tileRow * th else {
                    throw FormatError(path: path, "TIFF tile size \(tileBytes) bytes is smaller than \(tw)×\(th) pixels of \(channels)×\(bits) bits")
                }
                var buffer = [UInt8](repeating: 0, count: tileBytes)
                try buffer.withUnsafeMutableBytes { tileBuffer in
                    for ty in stride(from: 0, to: height, by: th) {
                        for tx in stride(from: 0, to: width, by: tw) {
                            guard TIFFReadTile(tif, tileBuffer.baseAddress, UInt32(tx), UInt32(ty), 0, 0) >= 0 else {
                                throw FormatError(path: path, "corrupt tile at (\(tx), \(ty)): \(lastMessage() ?? "read failed")")
                            }
                            let n = min(tw, width - tx) * channels * bytesPerSample
                            for r in 0..<min(th, height - ty) {
                                let dst = (ty + r) * rowBytes + tx * channels * bytesPerSample
                                (out.baseAddress! + dst).copyMemory(from: tileBuffer.baseAddress! + r * tileRow, byteCount: n)
                            }
                        }
                    }
                }
            } else {
                guard Int(TIFFScanlineSize64(tif)) == rowBytes else { throw FormatError(path: path, "unexpected scanline size") }
                for y in 0..<height {
                    guard TIFFReadScanline(tif, out.baseAddress! + y * rowBytes, UInt32(y), 0) >= 0 else {
                        throw FormatError(path: path, "corrupt data at row \(y): \(lastMessage() ?? "read failed")")
                    }
                }
            }
        }
        let shape = channels == 1 ? [height, width] : [height, width, channels]
        let pixels: Tensor
        switch bits {
        case 8: pixels = try Tensor(raw, shape: shape)
        case 16: pixels = try Tensor(stride(from: 0, to: raw.count, by: 2).map { Int32(UInt16(raw[$0]) | UInt16(raw[$0 + 1]) << 8) }, shape: shape)
        default: pixels = try Tensor(raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }, shape: shape)
        }
        return Page(width: width, height: height, channels: channels, bitsPerSample: Int(bits), pixels: pixels)
    }

    /// The largest tile side accepted beyond the image's own size (rounded up to 16): writers use
    /// 256×256 or 512×512 tiles on images smaller than that.
    static let maxTilePadding = 1024

    /// Tile width and length: positive, not beyond the image (rounded up to a multiple of 16, or
    /// `maxTilePadding`), and libtiff's tile buffer within `Limits.allocation`.
    static func checkTiles(_ tif: OpaquePointer, width: Int, height: Int, path: String) throws -> (width: Int, height: Int) {
        var tw: UInt32 = 0, th: UInt32 = 0
        guard mng_tiff_get_u32(tif, UInt32(TIFFTAG_TILEWIDTH), &tw) == 1, mng_tiff_get_u32(tif, UInt32(TIFFTAG_TILELENGTH), &th) == 1 else {
            throw FormatError(path: path, "tiled TIFF without tile width/length tags")
        }
        func bound(_ side: Int) -> Int { max((side + 15) / 16 * 16, maxTilePadding) }
        guard tw > 0, th > 0, Int(tw) <= bound(width), Int(th) <= bound(height) else {
            throw FormatError(
                path: path,
                "TIFF tile \(tw)×\(th) does not fit a \(width)×\(height) image "
                    + "(tiles must be positive and at most the image's size rounded up to 16, or \(maxTilePadding))")
        }
        let tileBytes = TIFFTileSize64(tif)
        guard tileBytes > 0, tileBytes <= UInt64(Int.max) else {
            throw FormatError(path: path, "TIFF tile size cannot be computed (\(lastMessage() ?? "invalid tile geometry"))")
        }
        try Limits.allocation(count: Int(tileBytes), elementSize: 1, what: "a TIFF tile", source: path)
        return (Int(tw), Int(th))
    }

    /// libtiff's RGBA conversion (TIFFReadRGBAImageOriented, top-left origin, stopping at the first
    /// error): 8-bit RGB, or RGBA when the file has extra samples.
    static func readRGBA(_ tif: OpaquePointer, width: Int, height: Int, path: String) throws -> Page {
        var reason = [CChar](repeating: 0, count: 1024)
        guard TIFFRGBAImageOK(tif, &reason) != 0 else {
            throw FormatError(path: path, "TIFF of a kind that cannot be read: \(cText(reason))")
        }
        try Limits.allocation(count: width * height, elementSize: 4, what: "the TIFF image (RGBA)", source: path)
        var raster = [UInt32](repeating: 0, count: width * height)
        let ok = raster.withUnsafeMutableBufferPointer {
            TIFFReadRGBAImageOriented(tif, UInt32(width), UInt32(height), $0.baseAddress, Int32(ORIENTATION_TOPLEFT), 1)
        }
        guard ok == 1 else { throw FormatError(path: path, "corrupt TIFF data (\(lastMessage() ?? "RGBA conversion failed"))") }
        let channels = mng_tiff_extra_samples(tif) > 0 ? 4 : 3
        var bytes = [UInt8](repeating: 0, count: width * height * channels)
        bytes.withUnsafeMutableBufferPointer { out in
            for i in 0..<(width * height) {
                let p = raster[i]
                out[i * channels] = UInt8(truncatingIfNeeded: p)
                out[i * channels + 1] = UInt8(truncatingIfNeeded: p >> 8)
                out[i * channels + 2] = UInt8(truncatingIfNeeded: p >> 16)
                if channels == 4 { out[i * channels + 3] = UInt8(truncatingIfNeeded: p >> 24) }
            }
        }
        return Page(
            width: width, height: height, channels: channels, bitsPerSample: 8,
            pixels: try Tensor(bytes, shape: [height, width, channels]))
    }

    /// Writes u8 (8-bit), i32 with values in 0…65535 (16-bit) or f32 (32-bit float) samples,
    /// shape [H, W] or [H, W, C], deflate-compressed, in strips or (with `tile`, a multiple of 16)
    /// in tiles, atomically (temp file + rename).
    public static func write(_ pixels: Tensor, to path: String, tile: Int? = nil) throws {
        if let tile, tile <= 0 || tile % 16 != 0 { throw FormatError(path: path, "TIFF tile size must be a positive multiple of 16, got \(tile)") }
        installHandlers()
        clearMessage()
        guard pixels.rank == 2 || (pixels.rank == 3 && (1...4).contains(pixels.shape[2])) else {
            throw FormatError(path: path, "a TIFF image tensor is [H, W] or [H, W, C≤4], got \(pixels.shape)")
        }
        let height = pixels.shape[0], width = pixels.shape[1], channels = pixels.rank == 3 ? pixels.shape[2] : 1
        let bits: UInt16, format: UInt16
        var bytes: [UInt8]
        switch pixels.dtype {
        case .uint8: (bits, format, bytes) = (8, UInt16(SAMPLEFORMAT_UINT), try pixels.scalars())
        case .int32, .int64:
            let v = try pixels.integers()
            guard v.allSatisfy({ (0...65535).contains($0) }) else { throw FormatError(path: path, "16-bit TIFF samples must lie in 0…65535") }
            (bits, format) = (16, UInt16(SAMPLEFORMAT_UINT))
            bytes = v.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
        case .float32:
            (bits, format) = (32, UInt16(SAMPLEFORMAT_IEEEFP))
            bytes = pixels.withUnsafeBytes { Array($0) }
        default: throw FormatError(path: path, "TIFF samples must be u8, i32/i64 (16-bit) or f32, got \(pixels.dtype.name)")
        }
        let tmp = (path as NSString).deletingLastPathComponent + "/." + (path as NSString).lastPathComponent + ".tmp-\(getpid())"
        guard let tif = TIFFOpen(tmp, "w") else { throw FormatError(path: path, "cannot create (\(lastMessage() ?? "open failed"))") }
        var ok = true
        ok = ok && mng_tiff_set_u32(tif, UInt32(TIFFTAG_IMAGEWIDTH), UInt32(width)) == 1
        ok = ok && mng_tiff_set_u32(tif, UInt32(TIFFTAG_IMAGELENGTH), UInt32(height)) == 1
        ok = ok && mng_tiff_set_u16(tif, UInt32(TIFFTAG_SAMPLESPERPIXEL), UInt16(channels)) == 1
        ok = ok && mng_tiff_set_u16(tif, UInt32(TIFFTAG_BITSPERSAMPLE), bits) == 1
        ok = ok && mng_tiff_set_u16(tif, UInt32(TIFFTAG_SAMPLEFORMAT), format) == 1
        ok = ok && mng_tiff_set_u16(tif, UInt32(TIFFTAG_PLANARCONFIG), UInt16(PLANARCONFIG_CONTIG)) == 1
        ok = ok && mng_tiff_set_u16(tif, UInt32(TIFFTAG_PHOTOMETRIC), UInt16(channels >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK)) == 1
        ok = ok && mng_tiff_set_u16(tif, UInt32(TIFFTAG_COMPRESSION), UInt16(COMPRESSION_ADOBE_DEFLATE)) == 1
        if let tile {
            ok = ok && mng_tiff_set_u32(tif, UInt32(TIFFTAG_TILEWIDTH), UInt32(tile)) == 1
            ok = ok && mng_tiff_set_u32(tif, UInt32(TIFFTAG_TILELENGTH), UInt32(tile)) == 1
        } else {
            ok = ok && mng_tiff_set_u32(tif, UInt32(TIFFTAG_ROWSPERSTRIP), UInt32(max(1, 65536 / max(1, width * channels * Int(bits) / 8)))) == 1
        }
        if channels == 2 || channels == 4 {
            var extra = UInt16(EXTRASAMPLE_UNASSALPHA)
            ok = ok && TIFFSetField_extrasamples(tif, &extra) == 1
        }
        let rowBytes = width * channels * Int(bits) / 8
        if let tile {
            // Each tile is tile×tile pixels, zero-padded past the image's edges.
            let pixelBytes = channels * Int(bits) / 8
            var buffer = [UInt8](repeating: 0, count: tile * tile * pixelBytes)
            for ty in stride(from: 0, to: height, by: tile) where ok {
                for tx in stride(from: 0, to: width, by: tile) where ok {
                    for i in buffer.indices { buffer[i] = 0 }
                    for r in 0..<min(tile, height - ty) {
                        let n = min(tile, width - tx) * pixelBytes
                        let src = (ty + r) * rowBytes + tx * pixelBytes
                        for k in 0..<n { buffer[r * tile * pixelBytes + k] = bytes[src + k] }
                    }
                    ok = TIFFWriteTile(tif, &buffer, UInt32(tx), UInt32(ty), 0, 0) >= 0
                }
            }
        } else {
            for y in 0..<height where ok {
                ok = bytes.withUnsafeMutableBytes { TIFFWriteScanline(tif, $0.baseAddress! + y * rowBytes, UInt32(y), 0) } == 1
            }
        }
        TIFFClose(tif)
        guard ok else {
            unlink(tmp)
            throw FormatError(path: path, "libtiff could not write the image (\(lastMessage() ?? "write failed"))")
        }
        guard rename(tmp, path) == 0 else {
            unlink(tmp)
            throw FormatError(path: path, "cannot move the finished file into place")
        }
    }

    // MARK: libtiff messages

    /// libtiff's last error message (its handlers are process-wide).
    private static let message = Mutex<String?>(nil)
    private static let installed: Void = {
        _ = TIFFSetErrorHandler { module, fmt, args in if let args { TIFF.record(module, fmt, args) } }
        _ = TIFFSetWarningHandler { _, _, _ in }
    }()

    static func installHandlers() { _ = installed }

    static func record(_ module: UnsafePointer<CChar>?, _ fmt: UnsafePointer<CChar>?, _ args: CVaListPointer) {
        var buffer = [CChar](repeating: 0, count: 512)
        if let fmt { _ = vsnprintf(&buffer, buffer.count, fmt, args) }
        let text = cText(buffer)
        let full = (module.map { String(cString: $0) + ": " } ?? "") + text
        message.withLock { $0 = full }
    }

    static func clearMessage() {
        message.withLock { $0 = nil }
    }

    static func lastMessage() -> String? {
        message.withLock { $0 }
    }
}
