import Foundation

/// Images in rows and columns with a title, column headers, row headers, optional captions under
/// each tile and an optional colour bar (e.g. the JET scale of CAM overlays). Tiles keep their
/// aspect ratio and are drawn pixel-exact (nearest neighbour) at `tileSize`.
public struct ImageGrid: Sendable {
    public var title: String
    public var columnHeaders: [String]
    public var rowHeaders: [String]
    /// rows × columns; nil leaves a cell empty.
    public var tiles: [[Image?]]
    public var captions: [[String]]?
    /// The longer side of a tile in figure units.
    public var tileSize: Double
    public var colorBar: (range: ClosedRange<Double>, label: String, colormap: @Sendable (Double) -> Color)?

    public init(title: String, columnHeaders: [String] = [], rowHeaders: [String] = [], tiles: [[Image?]], tileSize: Double = 96) {
        self.title = title
        self.columnHeaders = columnHeaders
        self.rowHeaders = rowHeaders
        self.tiles = tiles
        self.tileSize = tileSize
    }

    /// A grid filled row by row from a flat list, `columns` wide.
    public init(title: String, images: [Image], columns: Int, captions: [String]? = nil, tileSize: Double = 96) {
        let c = max(columns, 1)
        let rows = stride(from: 0, to: images.count, by: c).map { Array(images[$0..<min($0 + c, images.count)]).map { Optional($0) } }
        self.init(title: title, tiles: rows, tileSize: tileSize)
        if let captions { self.captions = stride(from: 0, to: captions.count, by: c).map { Array(captions[$0..<min($0 + c, captions.count)]) } }
    }

    public func figure() -> Figure {
        let columns = max(tiles.map(\.count).max() ?? 0, columnHeaders.count, 1), rows = max(tiles.count, 1)
        let cell = tileSize, gap = 6.0, headerSize = 11.5
        let rowHeaderWidth = rowHeaders.isEmpty ? 0 : (rowHeaders.map { Figure.textWidth($0, size: headerSize, bold: true) }.max() ?? 0) + 12
        let headerHeight = columnHeaders.isEmpty ? 0.0 : 20
        let captionHeight = captions == nil ? 0.0 : 16
        let barWidth = colorBar == nil ? 0.0 : 70
        let titleHeight = 34.0
        let width = max(12 + rowHeaderWidth + Double(columns) * (cell + gap) + barWidth + 6, Figure.textWidth(title, size: 15, bold: true) + 24)
        let height = titleHeight + headerHeight + Double(rows) * (cell + gap + captionHeight) + 8
        var f = Figure(width: width, height: height, kind: .grid)
        f.title(title)
        let x0 = 12 + rowHeaderWidth, y0 = titleHeight + headerHeight
        for (c, header) in columnHeaders.enumerated() {
            f.text(
                fitted(header, to: cell + gap - 2, size: headerSize), at: Point(x0 + Double(c) * (cell + gap) + cell / 2, y0 - 7),
                size: headerSize, bold: true, anchor: .middle, role: "header")
        }
        for (r, row) in tiles.enumerated() {
            let top = y0 + Double(r) * (cell + gap + captionHeight)
            if r < rowHeaders.count {
                f.text(rowHeaders[r], at: Point(x0 - 8, top + cell / 2 + 4), size: headerSize, bold: true, anchor: .end, role: "row-header")
            }
            for (c, tile) in row.enumerated() {
                guard let tile, tile.width > 0, tile.height > 0 else { continue }
                let scale = cell / Double(max(tile.width, tile.height))
                let w = Double(tile.width) * scale, h = Double(tile.height) * scale
                let left = x0 + Double(c) * (cell + gap)
                f.image(tile, in: Rect(x: left + (cell - w) / 2, y: top + (cell - h) / 2, width: w, height: h))
                if let caption = captions?[safe: r]?[safe: c] {
                    f.text(
                        fitted(caption, to: cell + gap - 2, size: 10), at: Point(left + cell / 2, top + cell + 12), size: 10, color: .axis, anchor: .middle,
                        role: "caption")
                }
            }
        }
        if let colorBar {
            f.colorBar(
                in: Rect(x: width - barWidth + 6, y: y0, width: barWidth - 12, height: min(Double(rows) * (cell + gap) - gap, 240)),
                range: colorBar.range, label: colorBar.label, colormap: colorBar.colormap)
        }
        return f
    }

    public func write(to path: String) throws { try figure().write(to: path) }

    /// `s` cut with an ellipsis to fit `width`.
    private func fitted(_ s: String, to width: Double, size: Double) -> String {
        guard Figure.textWidth(s, size: size, bold: true) > width else { return s }
        var t = s
        while !t.isEmpty, Figure.textWidth(t + "…", size: size, bold: true) > width { t.removeLast() }
        return t + "…"
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}
