import Formats
import Tensors

/// An 8-bit image, interleaved channels (1 = gray, 3 = RGB, 4 = RGBA), rows top to bottom.
public struct Image: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public let channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]? = nil) {
        precondition(width > 0 && height > 0 && [1, 3, 4].contains(channels))
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels ?? [UInt8](repeating: 0, count: width * height * channels)
        precondition(self.pixels.count == width * height * channels)
    }

    /// The image as a `[height, width, channels]` u8 tensor (`[height, width]` for gray).
    public var tensor: Tensor {
        Tensor(shape: channels == 1 ? [height, width] : [height, width, channels], scalars: pixels)
    }

    /// An image from a u8 tensor of shape `[H, W]` or `[H, W, C]` with C in 1, 3, 4.
    public init(tensor: Tensor) throws {
        guard tensor.dtype == .uint8 else { throw TensorError("an image tensor must be u8, got \(tensor.dtype.name)") }
        switch tensor.rank {
        case 2: self.init(width: tensor.shape[1], height: tensor.shape[0], channels: 1, pixels: try tensor.scalars())
        case 3 where [1, 3, 4].contains(tensor.shape[2]):
            self.init(width: tensor.shape[1], height: tensor.shape[0], channels: tensor.shape[2], pixels: try tensor.scalars())
        default: throw TensorError("an image tensor has shape [H, W] or [H, W, C] with C in 1, 3, 4; got \(tensor.shape)")
        }
    }
}

extension Image {
    /// Three channels: gray repeated, alpha dropped (PIL's `convert("RGB")` for these modes).
    public func rgb() throws -> Image {
        guard channels != 3 else { return self }
        guard (1...4).contains(channels) else { throw FormatError(path: "image", "has \(channels) channels; expected gray, RGB or RGBA") }
        // Gray (and gray + alpha) repeated; alpha dropped.
        let source: [Int] = channels <= 2 ? [0, 0, 0] : [0, 1, 2]
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for p in 0..<(width * height) {
            for c in 0..<3 { out[p * 3 + c] = pixels[p * channels + source[c]] }
        }
        return Image(width: width, height: height, channels: 3, pixels: out)
    }
}

/// The NUL-terminated text in a C buffer (libpng/libtiff/libjpeg messages).
func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
