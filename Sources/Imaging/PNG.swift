import CPNG
import Formats
import Foundation
import Tensors

/// PNG files through libpng's simplified API (no setjmp/longjmp crosses Swift frames).
public enum PNG {
    /// Reads any PNG (palette, 16-bit and interlaced included) into 8-bit gray, RGB or RGBA,
    /// keeping the file's colour type where possible.
    public static func read(path: String) throws -> Image {
        let (fd, _) = try RegularFile.open(path)
        guard let file = fdopen(fd, "rb") else {
            close(fd)
            throw FormatError(path: path, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var image = png_image()
        image.version = MNG_PNG_IMAGE_VERSION
        guard png_image_begin_read_from_stdio(&image, file) != 0 else {
            throw FormatError(path: path, "not a readable PNG (\(message(&image)))")
        }
        defer { png_image_free(&image) }
        let width = Int(image.width), height = Int(image.height)
        try Limits.imageSize(width: width, height: height, source: path)
        let hasColor = image.format & UInt32(PNG_FORMAT_FLAG_COLOR) != 0
        let hasAlpha = image.format & UInt32(PNG_FORMAT_FLAG_ALPHA) != 0
        let (format, channels): (png_uint_32, Int) =
            hasAlpha ? (MNG_PNG_FORMAT_RGBA, 4) : hasColor ? (MNG_PNG_FORMAT_RGB, 3) : (MNG_PNG_FORMAT_GRAY, 1)
        image.format = format
        // The row stride is a C int.
        guard width * channels <= Int(Int32.max) else {
            throw FormatError(path: path, "rows of \(width)×\(channels) bytes are too wide to decode")
        }
        try Limits.allocation(count: width * height * channels, elementSize: 1, what: "the PNG image", source: path)
        var pixels = [UInt8](repeating: 0, count: width * height * channels)
        let ok = pixels.withUnsafeMutableBytes { buf in
            png_image_finish_read(&image, nil, buf.baseAddress, Int32(width * channels), nil)
        }
        guard ok != 0 else { throw FormatError(path: path, "corrupt PNG data (\(message(&image)))") }
        return Image(width: width, height: height, channels: channels, pixels: pixels)
    }

    /// Encodes an image as PNG bytes.
    public static func encode(_ img: Image) throws -> Data {
        var image = png_image()
        image.version = MNG_PNG_IMAGE_VERSION
        image.width = png_uint_32(img.width)
        image.height = png_uint_32(img.height)
        image.format = img.channels == 1 ? MNG_PNG_FORMAT_GRAY : img.channels == 3 ? MNG_PNG_FORMAT_RGB : MNG_PNG_FORMAT_RGBA
        var size: png_alloc_size_t = 0
        // libpng takes 32-bit sizes and a C int stride.
        guard img.width > 0, img.height > 0, img.width <= Int(Int32.max), img.height <= Int(Int32.max),
            img.width.multipliedReportingOverflow(by: img.channels).partialValue <= Int(Int32.max)
        else {
            throw FormatError(path: "<png>", "cannot encode a \(img.width)×\(img.height) image as PNG")
        }
        let stride = Int32(img.width * img.channels)
        guard img.pixels.withUnsafeBytes({ png_image_write_to_memory(&image, nil, &size, 0, $0.baseAddress, stride, nil) }) != 0 else {
            throw FormatError(path: "<png>", "cannot size the PNG (\(message(&image)))")
        }
        var data = Data(count: Int(size))
        let ok = data.withUnsafeMutableBytes { out in
            img.pixels.withUnsafeBytes { png_image_write_to_memory(&image, out.baseAddress, &size, 0, $0.baseAddress, stride, nil) }
        }
        guard ok != 0 else { throw FormatError(path: "<png>", "cannot encode the PNG (\(message(&image)))") }
        return data.prefix(Int(size))
    }

    /// Writes an image atomically (temp file + rename).
    public static func write(_ img: Image, to path: String) throws {
        try AtomicFile.write(try encode(img), to: path)
    }

    /// A PNG's samples at the file's own depth: a tensor [H, W] (gray) or [H, W, C] (C = 3, 4) of
    /// u8 for files of ≤ 8 bits per sample, of i32 (0…65535, exact) for 16-bit files, as TIFF does.
    /// Palettes and transparency chunks are expanded; gray with alpha becomes RGBA.
    public struct Samples: Sendable {
        public let pixels: Tensor
        public let bitDepth: Int
    }

    /// Reads any PNG keeping 16-bit samples exact (`read(path:)` gives 8-bit images).
    public static func readSamples(path: String) throws -> Samples {
        var width: UInt32 = 0, height: UInt32 = 0
        var channels: Int32 = 0, depth: Int32 = 0
        var raw: UnsafeMutablePointer<UInt16>?
        var text = [CChar](repeating: 0, count: 256)
        let (fd, _) = try RegularFile.open(path)
        let status = mng_png_read16_fd(fd, Limits.maxImagePixels, Limits.allocationLimit, &width, &height, &channels, &depth, &raw, &text, text.count)
        switch status {
        case 0: break
        case 2:
            try Limits.imageSize(width: Int(width), height: Int(height), source: path)
            throw FormatError(path: path, "\(width)×\(height) pixels exceed the limit")
        case 3:
            try Limits.allocation(count: Int(width) * Int(height) * Int(channels), elementSize: 2, what: "the PNG image", source: path)
            throw FormatError(path: path, "the image needs more memory than the limit")
        default: throw FormatError(path: path, "not a readable PNG (\(cText(text)))")
        }
        guard let raw else { throw FormatError(path: path, "not a readable PNG (\(cText(text)))") }
        defer { free(raw) }
        let count = Int(width) * Int(height) * Int(channels)
        if depth > 8 { try Limits.allocation(count: count, elementSize: 4, what: "the PNG samples", source: path) }
        let shape = channels == 1 ? [Int(height), Int(width)] : [Int(height), Int(width), Int(channels)]
        let samples = UnsafeBufferPointer(start: raw, count: count)
        // 8-bit files were widened by ×257 (v·257 = v << 8 | v), so the division is exact.
        let pixels =
            depth <= 8
            ? try Tensor(samples.map { UInt8($0 / 257) }, shape: shape)
            : try Tensor(samples.map { Int32($0) }, shape: shape)
        return Samples(pixels: pixels, bitDepth: Int(depth))
    }

    /// Writes u8 samples as an 8-bit PNG, or i32/i64 samples in 0…65535 as a 16-bit PNG (label
    /// masks with many classes, scientific images); shape [H, W] or [H, W, C] with C in 1, 3, 4.
    /// Atomic (temp file + rename).
    public static func writeSamples(_ pixels: Tensor, to path: String) throws {
        let channels = pixels.rank == 3 ? pixels.shape[2] : 1
        guard pixels.rank == 2 || (pixels.rank == 3 && [1, 3, 4].contains(channels)), pixels.count > 0 else {
            throw FormatError(path: path, "a PNG image tensor is [H, W] or [H, W, C] with C in 1, 3, 4; got \(pixels.shape)")
        }
        if pixels.dtype == .uint8 {
            return try write(Image(tensor: pixels.rank == 3 && channels == 1 ? pixels.reshaped([pixels.shape[0], pixels.shape[1]]) : pixels), to: path)
        }
        guard pixels.dtype == .int32 || pixels.dtype == .int64 else {
            throw FormatError(path: path, "PNG samples must be u8 (8-bit) or i32/i64 in 0…65535 (16-bit), got \(pixels.dtype.name)")
        }
        let values = try pixels.integers()
        if let bad = values.first(where: { !(0...65535).contains($0) }) {
            throw FormatError(path: path, "16-bit PNG samples must lie in 0…65535, found \(bad)")
        }
        try encode16(values.map { UInt16($0) }, width: pixels.shape[1], height: pixels.shape[0], channels: channels, path: path)
    }

    private static func encode16(_ samples: [UInt16], width: Int, height: Int, channels: Int, path: String) throws {
        var out: UnsafeMutablePointer<UInt8>?
        var count = 0
        var text = [CChar](repeating: 0, count: 256)
        let status = samples.withUnsafeBufferPointer {
            mng_png_write16($0.baseAddress, UInt32(width), UInt32(height), Int32(channels), &out, &count, &text, text.count)
        }
        guard status == 0, let out else { throw FormatError(path: path, "cannot encode the PNG (\(cText(text)))") }
        defer { free(out) }
        try AtomicFile.write(Data(bytes: out, count: count), to: path)
    }

    private static func message(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }
}
