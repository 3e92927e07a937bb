import CPNG
import Foundation
import Formats

/// PNG files through libpng's simplified API (no setjmp/longjmp crosses Swift frames).
public enum PNG {
    /// Reads any PNG (palette, 16-bit and interlaced included) into 8-bit gray, RGB or RGBA,
    /// keeping the file's colour type where possible.
    public static func read(path: String) throws -> Image {
        var image = png_image()
        image.version = MNG_PNG_IMAGE_VERSION
        guard png_image_begin_read_from_file(&image, path) != 0 else {
            throw FormatError(path: path, "not a readable PNG (\(message(&image)))")
        }
        defer { png_image_free(&image) }
        guard Int(image.width) * Int(image.height) <= TIFF.maxPixels else {
            throw FormatError(path: path, "\(image.width)×\(image.height) pixels exceed the limit of \(TIFF.maxPixels) (set MENAGERIE_MAX_PIXELS to raise it)")
        }
        let hasColor = image.format & UInt32(PNG_FORMAT_FLAG_COLOR) != 0
        let hasAlpha = image.format & UInt32(PNG_FORMAT_FLAG_ALPHA) != 0
        let (format, channels): (png_uint_32, Int) =
            hasAlpha ? (MNG_PNG_FORMAT_RGBA, 4) : hasColor ? (MNG_PNG_FORMAT_RGB, 3) : (MNG_PNG_FORMAT_GRAY, 1)
        image.format = format
        let width = Int(image.width), height = Int(image.height)
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

    private static func message(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }
}
