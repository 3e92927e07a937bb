import CFreeType
import Foundation
import Synchronization

/// The typeface of every figure: DejaVu Sans (matplotlib's default), found through fontconfig and
/// drawn by FreeType, regular and bold. The SVG names the same family, so both outputs lay out
/// alike. Without any TrueType font installed, text falls back to the built-in 5×7 bitmap font
/// (legible, not pretty; `scripts/bootstrap` installs `fonts-dejavu-core`). `MENAGERIE_FONT` (a
/// .ttf path) overrides the regular face.
enum Typeface {
    /// The family an SVG asks for: the one fontconfig matched, then the usual sans fallbacks.
    static var cssFamily: String {
        let found = state.withLock { $0.faces[false]?.family }
        return [found, "DejaVu Sans", "Bitstream Vera Sans", "Verdana", "sans-serif"].compactMap { $0 }
            .reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
            .map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: ", ")
    }

    /// The advance width of `text` at `size` px.
    static func width(_ text: String, size: Double, bold: Bool = false) -> Double {
        state.withLock { s in
            guard let face = s.face(bold: bold) else { return Double(text.count) * 6 * size / 9 }
            var units: Double = 0
            for scalar in text.unicodeScalars { units += face.advance(scalar) }
            return units * size / face.unitsPerEM
        }
    }

    /// `text` at `size` px as an alpha mask (1 = ink), with the baseline `ascent` px below its top.
    static func render(_ text: String, size: Double, bold: Bool = false) -> TextMask {
        state.withLock { s in
            guard let face = s.face(bold: bold) else { return bitmapFallback(text, size: size) }
            return face.render(text, size: size)
        }
    }

    /// The 5×7 font at the integer scale nearest to `size`, when no TrueType font is found.
    private static func bitmapFallback(_ text: String, size: Double) -> TextMask {
        let scale = max(1, Int((size / 9).rounded()))
        let width = max(1, text.count * 6 * scale), height = 9 * scale
        var canvas = Canvas(width: width, height: height)
        canvas.text(text, x: 0, y: scale, scale: scale, (0, 0, 0))
        let alpha = canvas.image.pixels.enumerated().filter { $0.offset % 3 == 0 }.map { 1 - Float($0.element) / 255 }
        return TextMask(width: width, height: height, ascent: 8 * scale, alpha: alpha)
    }

    private static let state = Mutex(State())

    private struct State: ~Copyable {
        var library: FT_Library?
        var faces: [Bool: Face] = [:]
        var tried: Set<Bool> = []

        /// The regular or bold face, opened on first use; nil when none can be found.
        mutating func face(bold: Bool) -> Face? {
            if let f = faces[bold] { return f }
            guard !tried.contains(bold) else { return bold ? face(bold: false) : nil }
            tried.insert(bold)
            if library == nil {
                var lib: FT_Library?
                guard FT_Init_FreeType(&lib) == 0 else { return nil }
                library = lib
            }
            for (path, family) in Self.candidates(bold: bold) {
                var handle: FT_Face?
                if FT_New_Face(library, path, 0, &handle) == 0, let handle {
                    faces[bold] = Face(handle: handle, family: family)
                    return faces[bold]
                }
            }
            return bold ? face(bold: false) : nil
        }

        static func candidates(bold: Bool) -> [(String, String)] {
            var list: [(String, String)] = []
            if !bold, let env = ProcessInfo.processInfo.environment["MENAGERIE_FONT"], !env.isEmpty { list.append((env, "DejaVu Sans")) }
            var path = [CChar](repeating: 0, count: 4096), family = [CChar](repeating: 0, count: 256)
            if mng_font_match(bold ? "DejaVu Sans:bold" : "DejaVu Sans:style=Book", &path, path.count, &family, family.count) == 0 {
                let p = String(decoding: path.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let f = String(decoding: family.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                // fontconfig answers with its best match even for a missing family; keep TrueType/OpenType only.
                if p.hasSuffix(".ttf") || p.hasSuffix(".otf") || p.hasSuffix(".ttc") { list.append((p, f)) }
            }
            let name = bold ? "DejaVuSans-Bold.ttf" : "DejaVuSans.ttf"
            for dir in ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu", "/usr/share/fonts/dejavu-sans-fonts"] {
                list.append((dir + "/" + name, "DejaVu Sans"))
            }
            return list
        }
    }

    /// One FreeType face; advances cached per scalar in font units.
    private final class Face {
        let handle: FT_Face
        let family: String
        let unitsPerEM: Double
        var advances: [UInt32: Double] = [:]

        init(handle: FT_Face, family: String) {
            self.handle = handle
            self.family = family
            unitsPerEM = Double(max(handle.pointee.units_per_EM, 1))
        }

        func advance(_ scalar: Unicode.Scalar) -> Double {
            if let a = advances[scalar.value] { return a }
            var a: FT_Fixed = 0
            let index = FT_Get_Char_Index(handle, FT_ULong(scalar.value))
            _ = FT_Get_Advance(handle, index, MNG_FT_LOAD_NO_SCALE, &a)
            advances[scalar.value] = Double(a)
            return Double(a)
        }

        /// Glyphs placed at their unhinted advances (so widths match `width`), each rendered with
        /// FreeType's light hinting and anti-aliasing, composited into one mask.
        func render(_ text: String, size: Double) -> TextMask {
            let px = max(size, 1)
            _ = FT_Set_Char_Size(handle, 0, FT_F26Dot6(px * 64), 72, 72)
            let ascent = Int((Double(handle.pointee.ascender) / unitsPerEM * px).rounded(.up))
            let descent = Int((Double(-handle.pointee.descender) / unitsPerEM * px).rounded(.up))
            var pens: [Double] = [], pen = 0.0
            for scalar in text.unicodeScalars {
                pens.append(pen)
                pen += advance(scalar) * px / unitsPerEM
            }
            let width = max(1, Int(pen.rounded(.up)) + 2), height = max(1, ascent + descent)
            var alpha = [Float](repeating: 0, count: width * height)
            for (scalar, x0) in zip(text.unicodeScalars, pens) {
                let index = FT_Get_Char_Index(handle, FT_ULong(scalar.value))
                guard FT_Load_Glyph(handle, index, MNG_FT_LOAD_RENDER) == 0, let slot = handle.pointee.glyph else { continue }
                let bitmap = slot.pointee.bitmap
                guard let buffer = bitmap.buffer, bitmap.pixel_mode == UInt8(FT_PIXEL_MODE_GRAY.rawValue) else { continue }
                let left = Int(x0.rounded()) + Int(slot.pointee.bitmap_left), top = ascent - Int(slot.pointee.bitmap_top)
                for row in 0..<Int(bitmap.rows) {
                    let y = top + row
                    guard y >= 0, y < height else { continue }
                    for col in 0..<Int(bitmap.width) {
                        let x = left + col
                        guard x >= 0, x < width else { continue }
                        let v = Float(buffer[row * Int(bitmap.pitch) + col]) / 255
                        alpha[y * width + x] = max(alpha[y * width + x], v)
                    }
                }
            }
            return TextMask(width: width, height: height, ascent: ascent, alpha: alpha)
        }
    }
}

/// Rendered text: `alpha` row-major, `width` × `height`, the baseline `ascent` rows from the top.
struct TextMask {
    var width: Int
    var height: Int
    var ascent: Int
    var alpha: [Float]

    /// The mask turned a quarter counter-clockwise (text reading bottom to top), for y-axis labels;
    /// `ascent` becomes the column of the baseline from the left.
    func rotatedCounterClockwise() -> TextMask {
        var out = [Float](repeating: 0, count: width * height)
        // Source (u, v) → destination (x = v, y = width − 1 − u), destination width = height.
        for v in 0..<height {
            for u in 0..<width { out[(width - 1 - u) * height + v] = alpha[v * width + u] }
        }
        return TextMask(width: height, height: width, ascent: ascent, alpha: out)
    }
}
