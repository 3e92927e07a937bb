/// A small RGB raster for plots written by the tour and methods (bars, lines, points).
/// Coordinates are pixels, origin top-left.
public struct Canvas: Sendable {
    public private(set) var image: Image
    public var width: Int { image.width }
    public var height: Int { image.height }

    public init(width: Int, height: Int, background: (UInt8, UInt8, UInt8) = (255, 255, 255)) {
        var px = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            px[3 * i] = background.0
            px[3 * i + 1] = background.1
            px[3 * i + 2] = background.2
        }
        image = Image(width: width, height: height, channels: 3, pixels: px)
    }

    public mutating func set(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = 3 * (y * width + x)
        image.pixels[i] = c.0
        image.pixels[i + 1] = c.1
        image.pixels[i + 2] = c.2
    }

    /// Fills the rectangle [x0, x1) × [y0, y1), clipped to the canvas.
    public mutating func fill(x0: Int, y0: Int, x1: Int, y1: Int, _ c: (UInt8, UInt8, UInt8)) {
        for y in max(0, min(y0, y1))..<min(height, max(y0, y1)) {
            for x in max(0, min(x0, x1))..<min(width, max(x0, x1)) { set(x, y, c) }
        }
    }

    /// A line from (x0, y0) to (x1, y1) (Bresenham), `thickness` pixels wide.
    public mutating func line(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8), thickness: Int = 1) {
        var x = x0, y = y0
        let dx = abs(x1 - x0), dy = -abs(y1 - y0)
        let sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1
        var err = dx + dy
        let r = thickness / 2
        while true {
            fill(x0: x - r, y0: y - r, x1: x - r + thickness, y1: y - r + thickness, c)
            if x == x1 && y == y1 { break }
            let e2 = 2 * err
            if e2 >= dy {
                err += dy
                x += sx
            }
            if e2 <= dx {
                err += dx
                y += sy
            }
        }
    }

    /// Draws `text` (digits, upper-case letters, space and . , : - % / = ( ) _) with a 5×7 font,
    /// `scale` pixels per font pixel, top-left at (x, y).
    public mutating func text(_ text: String, x: Int, y: Int, scale: Int = 1, _ c: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        var cx = x
        for ch in text.uppercased() {
            if let rows = Font5x7.glyphs[ch] {
                for (ry, row) in rows.enumerated() {
                    for bit in 0..<5 where row & (1 << (4 - bit)) != 0 {
                        fill(x0: cx + bit * scale, y0: y + ry * scale, x1: cx + (bit + 1) * scale, y1: y + (ry + 1) * scale, c)
                    }
                }
            }
            cx += 6 * scale
        }
    }
}

/// A 5×7 bitmap font: each glyph is 7 rows, 5 bits per row (bit 4 = leftmost column).
enum Font5x7 {
    static let glyphs: [Character: [UInt8]] = [
        "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
        "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
        "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
        "9": [14, 17, 17, 15, 1, 2, 12],
        "A": [14, 17, 17, 31, 17, 17, 17], "B": [30, 17, 17, 30, 17, 17, 30], "C": [14, 17, 16, 16, 16, 17, 14],
        "D": [28, 18, 17, 17, 17, 18, 28], "E": [31, 16, 16, 30, 16, 16, 31], "F": [31, 16, 16, 30, 16, 16, 16],
        "G": [14, 17, 16, 23, 17, 17, 15], "H": [17, 17, 17, 31, 17, 17, 17], "I": [14, 4, 4, 4, 4, 4, 14],
        "J": [7, 2, 2, 2, 2, 18, 12], "K": [17, 18, 20, 24, 20, 18, 17], "L": [16, 16, 16, 16, 16, 16, 31],
        "M": [17, 27, 21, 21, 17, 17, 17], "N": [17, 17, 25, 21, 19, 17, 17], "O": [14, 17, 17, 17, 17, 17, 14],
        "P": [30, 17, 17, 30, 16, 16, 16], "Q": [14, 17, 17, 17, 21, 18, 13], "R": [30, 17, 17, 30, 20, 18, 17],
        "S": [15, 16, 16, 14, 1, 1, 30], "T": [31, 4, 4, 4, 4, 4, 4], "U": [17, 17, 17, 17, 17, 17, 14],
        "V": [17, 17, 17, 17, 17, 10, 4], "W": [17, 17, 17, 21, 21, 21, 10], "X": [17, 17, 10, 4, 10, 17, 17],
        "Y": [17, 17, 17, 10, 4, 4, 4], "Z": [31, 1, 2, 4, 8, 16, 31],
        " ": [0, 0, 0, 0, 0, 0, 0], ".": [0, 0, 0, 0, 0, 12, 12], ",": [0, 0, 0, 0, 12, 4, 8],
        ":": [0, 12, 12, 0, 12, 12, 0], "-": [0, 0, 0, 31, 0, 0, 0], "%": [24, 25, 2, 4, 8, 19, 3],
        "/": [0, 1, 2, 4, 8, 16, 0], "=": [0, 0, 31, 0, 31, 0, 0], "(": [2, 4, 8, 8, 8, 4, 2],
        ")": [8, 4, 2, 2, 2, 4, 8], "_": [0, 0, 0, 0, 0, 0, 31],
    ]
}
