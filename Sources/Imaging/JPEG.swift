import CJPEG
import Formats
import Foundation

/// JPEG files through libjpeg(-turbo): baseline and progressive, grey or colour (YCbCr → RGB with
/// libjpeg's default islow IDCT and fancy upsampling, as Pillow). libjpeg's longjmp error handling
/// stays inside the C shim, so no longjmp crosses Swift frames. A truncated file is an error, not
/// an image padded with grey; CMYK JPEGs are refused.
public enum JPEG {
    /// Reads a JPEG into 8-bit grey (1 channel) or RGB (3).
    public static func read(path: String) throws -> Image {
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: Int32 = 0, height: Int32 = 0, channels: Int32 = 0
        var error = [CChar](repeating: 0, count: 512)
        let (fd, _) = try RegularFile.open(path)
        let status = mng_jpeg_decode_fd(fd, &pixels, &width, &height, &channels, Limits.maxImagePixels, Limits.allocationLimit, &error, error.count)
        switch status {
        case 2:
            try Limits.imageSize(width: Int(width), height: Int(height), source: path)
            throw FormatError(path: path, "\(width)×\(height) pixels exceed the limit")
        case 3:
            try Limits.allocation(count: Int(width) * Int(height) * Int(channels), elementSize: 1, what: "the JPEG image", source: path)
            throw FormatError(path: path, "the image needs more memory than the limit")
        default: break
        }
        guard status == 0, let pixels else {
            throw FormatError(path: path, cText(error))
        }
        defer { free(pixels) }
        let count = Int(width) * Int(height) * Int(channels)
        return Image(width: Int(width), height: Int(height), channels: Int(channels), pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
    }

    /// Writes a grey or RGB image (alpha dropped) as a baseline JPEG of `quality` 1…100, atomically.
    public static func write(_ image: Image, to path: String, quality: Int = 90) throws {
        guard (1...100).contains(quality) else { throw FormatError(path: path, "JPEG quality \(quality) must lie in 1…100") }
        // JPEG's sides are 16-bit (at most 65500).
        guard (1...65500).contains(image.width), (1...65500).contains(image.height) else {
            throw FormatError(path: path, "a JPEG is at most 65500×65500 pixels, got \(image.width)×\(image.height)")
        }
        let source = image.channels == 1 || image.channels == 3 ? image : try image.rgb()
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).\(UUID().uuidString).partial"
        var error = [CChar](repeating: 0, count: 512)
        let status = source.pixels.withUnsafeBufferPointer {
            mng_jpeg_encode(temporary, $0.baseAddress, Int32(source.width), Int32(source.height), Int32(source.channels), Int32(quality), &error, error.count)
        }
        guard status == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw FormatError(path: path, cText(error))
        }
        guard rename(temporary, path) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw FormatError(path: path, "cannot be written (\(String(cString: strerror(errno))))")
        }
    }
}
