import Foundation

extension Figure {
    /// The figure as a standalone SVG 1.1 document: text as `<text>` (selectable, scalable), rasters
    /// as embedded PNGs, every role as a `class`.
    public func svg() -> String {
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(n(width))" height="\(n(height))" \
            viewBox="0 0 \(n(width)) \(n(height))" data-figure="\(kind.rawValue)" font-family="\(Typeface.cssFamily)">
            <rect width="100%" height="100%" fill="#ffffff"/>

            """
        var depth = 0
        for mark in marks {
            let pad = String(repeating: "  ", count: depth + 1)
            switch mark {
            case let .polyline(points, color, width, dash):
                let d = dash.map { " stroke-dasharray=\"\($0.map(n).joined(separator: " "))\"" } ?? ""
                out +=
                    pad + "<polyline points=\"\(points.map { "\(n($0.x)),\(n($0.y))" }.joined(separator: " "))\" fill=\"none\" "
                    + "stroke=\"\(color.hex)\" stroke-width=\"\(n(width))\" stroke-linejoin=\"round\" stroke-linecap=\"round\"\(d)/>\n"
            case let .polygon(points, color, opacity):
                out +=
                    pad + "<polygon points=\"\(points.map { "\(n($0.x)),\(n($0.y))" }.joined(separator: " "))\" fill=\"\(color.hex)\""
                    + (opacity < 1 ? " fill-opacity=\"\(n(opacity))\"" : "") + "/>\n"
            case let .rect(r, fill, stroke, strokeWidth):
                out +=
                    pad + "<rect x=\"\(n(r.x))\" y=\"\(n(r.y))\" width=\"\(n(r.width))\" height=\"\(n(r.height))\" fill=\"\(fill?.hex ?? "none")\""
                    + (stroke.map { " stroke=\"\($0.hex)\" stroke-width=\"\(n(strokeWidth))\"" } ?? "") + "/>\n"
            case let .circle(c, radius, fill, stroke):
                out +=
                    pad + "<circle cx=\"\(n(c.x))\" cy=\"\(n(c.y))\" r=\"\(n(radius))\" fill=\"\(fill.hex)\""
                    + (stroke.map { " stroke=\"\($0.hex)\" stroke-width=\"1\"" } ?? "") + "/>\n"
            case let .text(s, at, size, bold, color, anchor, vertical, role):
                var attrs = "x=\"\(n(at.x))\" y=\"\(n(at.y))\" font-size=\"\(n(size))\" fill=\"\(color.hex)\""
                if bold { attrs += " font-weight=\"bold\"" }
                if anchor != .start { attrs += " text-anchor=\"\(anchor.rawValue)\"" }
                if vertical { attrs += " transform=\"rotate(-90 \(n(at.x)) \(n(at.y)))\"" }
                if let role { attrs += " class=\"\(role)\"" }
                out += pad + "<text \(attrs)>\(escaped(s))</text>\n"
            case let .image(image, r, smooth):
                let data = (try? PNG.encode(image))?.base64EncodedString() ?? ""
                out +=
                    pad + "<image x=\"\(n(r.x))\" y=\"\(n(r.y))\" width=\"\(n(r.width))\" height=\"\(n(r.height))\" preserveAspectRatio=\"none\""
                    + (smooth ? "" : " style=\"image-rendering:pixelated\"") + " href=\"data:image/png;base64,\(data)\"/>\n"
            case let .begin(role, attributes):
                let extra = attributes.sorted { $0.key < $1.key }.map { " \($0.key)=\"\(escaped($0.value))\"" }.joined()
                out += pad + "<g class=\"\(role)\"\(extra)>\n"
                depth += 1
            case .end:
                depth = max(depth - 1, 0)
                out += String(repeating: "  ", count: depth + 1) + "</g>\n"
            }
        }
        return out + "</svg>\n"
    }

    /// A coordinate with at most two decimals, no trailing zeros.
    private func n(_ v: Double) -> String {
        guard v.isFinite else { return "0" }
        let r = (v * 100).rounded() / 100
        return r == r.rounded() ? String(Int(r)) : String(format: "%.2f", r).replacingOccurrences(of: #"0+$"#, with: "", options: .regularExpression)
    }

    private func escaped(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
