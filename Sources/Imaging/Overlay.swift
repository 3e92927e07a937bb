import Foundation

/// Visualisations: the JET colormap, CAM heat-map overlays, label-mask overlays, image grids.
public enum Overlay {
    /// JET (MATLAB's `jet`, which OpenCV's COLORMAP_JET samples): for v in [0, 1],
    /// r = clamp(1.5 − |4v − 3|), g = clamp(1.5 − |4v − 2|), b = clamp(1.5 − |4v − 1|).
    public static func jet(_ v: Float) -> (UInt8, UInt8, UInt8) {
        func c(_ x: Float) -> UInt8 { UInt8((min(max(x, 0), 1) * 255).rounded()) }
        let x = min(max(v, 0), 1)
        return (c(1.5 - abs(4 * x - 3)), c(1.5 - abs(4 * x - 2)), c(1.5 - abs(4 * x - 1)))
    }

    /// pytorch-grad-cam's `show_cam_on_image`: heat = JET(map) ; out = (1 − w)·heat + w·image,
    /// divided by its maximum, as 8-bit RGB. `map` is [H·W] in [0, 1] at the image's size.
    public static func heatmap(on image: Image, map: [Float], imageWeight w: Float = 0.5) throws -> Image {
        guard map.count == image.width * image.height else {
            throw OverlayError("the map has \(map.count) values, the image \(image.width)×\(image.height) pixels: resize the map first")
        }
        guard (0...1).contains(w) else { throw OverlayError("imageWeight must lie in [0, 1], got \(w)") }
        var mixed = [Float](repeating: 0, count: map.count * 3)
        for i in 0..<map.count {
            let (r, g, b) = jet(map[i])
            let rgb = [r, g, b]
            for ch in 0..<3 {
                let src = image.channels == 1 ? image.pixels[i] : image.pixels[i * image.channels + ch]
                mixed[i * 3 + ch] = (1 - w) * Float(rgb[ch]) / 255 + w * Float(src) / 255
            }
        }
        let peak = mixed.max() ?? 1
        let pixels = mixed.map { UInt8((255 * $0 / max(peak, 1e-12)).rounded(.down)) }
        return Image(width: image.width, height: image.height, channels: 3, pixels: pixels)
    }

    /// A colour per label (0 is left uncoloured); label 255 is shown white.
    public static func labelColour(_ label: Int) -> (UInt8, UInt8, UInt8) {
        let palette: [(UInt8, UInt8, UInt8)] = [
            (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
        ]
        if label == 255 { return (255, 255, 255) }
        return palette[((label - 1) % (palette.count - 1) + (palette.count - 1)) % (palette.count - 1) + 1]
    }

    /// Blends label colours over the image with opacity `alpha` (background label 0 untouched).
    public static func labels(on image: Image, mask: [Int], alpha: Float = 0.5) throws -> Image {
        guard mask.count == image.width * image.height else {
            throw OverlayError("the mask has \(mask.count) labels, the image \(image.width)×\(image.height) pixels")
        }
        var out = [UInt8](repeating: 0, count: mask.count * 3)
        for i in 0..<mask.count {
            let base = (0..<3).map { image.channels == 1 ? image.pixels[i] : image.pixels[i * image.channels + $0] }
            let (r, g, b) = labelColour(mask[i])
            for (ch, c) in [r, g, b].enumerated() {
                out[i * 3 + ch] = mask[i] == 0 ? base[ch] : UInt8(((1 - alpha) * Float(base[ch]) + alpha * Float(c)).rounded())
            }
        }
        return Image(width: image.width, height: image.height, channels: 3, pixels: out)
    }

    /// Tiles equally sized images into a grid, `columns` wide, with `padding` white pixels between.
    public static func grid(_ images: [Image], columns: Int, padding: Int = 2) throws -> Image {
        guard let first = images.first, columns > 0 else { throw OverlayError("a grid needs images and at least one column") }
        guard images.allSatisfy({ $0.width == first.width && $0.height == first.height }) else {
            throw OverlayError("grid images must share one size")
        }
        let rows = (images.count + columns - 1) / columns
        let w = columns * first.width + (columns + 1) * padding, h = rows * first.height + (rows + 1) * padding
        var canvas = Canvas(width: w, height: h)
        for (k, img) in images.enumerated() {
            let x0 = padding + (k % columns) * (first.width + padding), y0 = padding + (k / columns) * (first.height + padding)
            for y in 0..<img.height {
                for x in 0..<img.width {
                    let i = (y * img.width + x) * img.channels
                    let rgb = img.channels == 1 ? (img.pixels[i], img.pixels[i], img.pixels[i]) : (img.pixels[i], img.pixels[i + 1], img.pixels[i + 2])
                    canvas.set(x0 + x, y0 + y, rgb)
                }
            }
        }
        return canvas.image
    }
}

public struct OverlayError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
