import Formats
import Foundation
import Imaging
import TestSupport
import Testing

@Suite struct FigureTests {
    @Test func ticksAreNiceNumbersInsideTheRange() {
        #expect(Axes.labels(Axes.ticks(0...1)) == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"])
        #expect(Axes.labels(Axes.ticks(3...97)) == ["20", "40", "60", "80"])
        #expect(Axes.labels(Axes.ticks(0.5...0.95)) == ["0.5", "0.6", "0.7", "0.8", "0.9"])
        #expect(Axes.labels(Axes.ticks(-2.5...2.5)) == ["-2", "-1", "0", "1", "2"])
        #expect(Axes.labels(Axes.ticks(0...250_000)).first == "0.0e+00")
    }

    @Test func aLineChartHasTitleAxisLabelsTicksAndALegendForSeveralSeries() throws {
        let dir = TempDir("figure")
        let one = LinePlot(title: "Loss", xLabel: "step", yLabel: "loss", series: [.init("train", points: [(0, 1), (1, 0.5), (2, 0.25)], color: .series(0))])
        var two = one
        two.series.append(.init("val", points: [(0, 1.2), (1, 0.8), (2, .nan), (3, 0.7)], color: .series(1), dashed: true))
        try one.write(to: dir.path + "/one.png")
        try two.write(to: dir.path + "/two.png")
        #expect(figureProblems(svgAt: dir.path + "/one.svg").isEmpty)
        #expect(figureProblems(svgAt: dir.path + "/two.svg").isEmpty)
        // The same figure with its legend removed fails the check: the checker can fail.
        let svg = try String(contentsOfFile: dir.path + "/two.svg", encoding: .utf8)
        try svg.replacingOccurrences(of: "class=\"legend\"", with: "class=\"x\"").write(toFile: dir.path + "/broken.svg", atomically: true, encoding: .utf8)
        #expect(figureProblems(svgAt: dir.path + "/broken.svg").contains { $0.contains("no legend") })
        let png = try PNG.read(path: dir.path + "/two.png")
        #expect(png.width == 1280 && png.height == 840)
    }

    @Test func rasterDrawsAntialiasedStrokesTextAndVerticalText() throws {
        var f = Figure(width: 100, height: 60)
        f.line([Point(10, 10), Point(90, 10)], .black, width: 2)
        f.text("Wg", at: Point(10, 45), size: 20, role: "title")
        f.text("label", at: Point(95, 55), size: 12, vertical: true)
        let img = f.raster(scale: 2)
        #expect(img.width == 200 && img.height == 120)
        func ink(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int) -> Int {
            var n = 0
            for y in y0..<y1 { for x in x0..<x1 where img.pixels[3 * (y * img.width + x)] < 128 { n += 1 } }
            return n
        }
        #expect(ink(40, 19, 160, 21) == 240) // the 2-unit line covers rows 18…21 at 2×
        #expect(ink(40, 24, 160, 30) == 0)
        #expect(ink(20, 50, 90, 100) > 100) // the glyphs put ink below the line
        // Vertical text: its ink is taller than wide, left of x = 95·2 by at most its height.
        var xs: [Int] = [], ys: [Int] = []
        for y in 0..<120 {
            for x in 170..<200 where img.pixels[3 * (y * 200 + x)] < 128 {
                xs.append(x)
                ys.append(y)
            }
        }
        #expect(!xs.isEmpty && (ys.max()! - ys.min()!) > 2 * (xs.max()! - xs.min()!))
        #expect(ys.max()! <= 111)
    }

    @Test func svgIsWellFormedAndEscapesText() throws {
        let dir = TempDir("figure-svg")
        var f = Figure(width: 80, height: 40, kind: .diagram)
        f.title("a < b & \"c\"")
        f.image(Image(width: 2, height: 2, channels: 3, pixels: [UInt8](repeating: 200, count: 12)), in: Rect(x: 0, y: 20, width: 20, height: 20))
        try f.write(to: dir.path + "/esc.png")
        let svg = try String(contentsOfFile: dir.path + "/esc.svg", encoding: .utf8)
        #expect(svg.contains("a &lt; b &amp; &quot;c&quot;"))
        #expect(svg.contains("data:image/png;base64,"))
        #expect(figureProblems(svgAt: dir.path + "/esc.svg").isEmpty)
    }

    @Test func gridsScatterAndBarsPassTheFigureCheck() throws {
        let dir = TempDir("figure-kinds")
        let tile = Image(width: 8, height: 8, channels: 3, pixels: (0..<192).map { UInt8($0) })
        var grid = ImageGrid(title: "Overlays", columnHeaders: ["input", "Grad-CAM"], rowHeaders: ["bird 1"], tiles: [[tile, tile]], tileSize: 48)
        grid.colorBar = (0...1, "relevance", { Color.jet($0) })
        try grid.write(to: dir.path + "/grid.png")
        var scatter = ScatterPlot(title: "Species means", xLabel: "PC1", yLabel: "PC2")
        scatter.valued = ([(0, 0), (1, 2), (2, 1)], [0.1, 0.5, 0.9], "beak length")
        try scatter.write(to: dir.path + "/scatter.png")
        let bars = BarChart(
            title: "Accuracy", xLabel: "method", yLabel: "accuracy", categories: ["random", "DM"],
            series: [("ipc 10", [0.4, 0.6]), ("ipc 50", [0.5, 0.7])])
        try bars.write(to: dir.path + "/bars.png")
        for name in ["grid", "scatter", "bars"] { #expect(figureProblems(svgAt: "\(dir.path)/\(name).svg") == []) }
        // A grid of two tiles without any header fails.
        try ImageGrid(title: "x", images: [tile, tile], columns: 2).write(to: dir.path + "/bare.png")
        #expect(!figureProblems(svgAt: dir.path + "/bare.svg").isEmpty)
    }

    @Test func aFigureTooLargeForThePixelLimitIsRefusedNotDrawn() throws {
        let dir = TempDir("figure-huge")
        let tile = Image(width: 2, height: 2, channels: 3, pixels: [UInt8](repeating: 100, count: 12))
        // 300 × 300 tiles of 96 units: about 30,000 × 30,800 units, 10× the pixel limit at 1×.
        let grid = ImageGrid(title: "huge", images: Array(repeating: tile, count: 90_000), columns: 300)
        #expect(throws: FormatError.self) { try grid.write(to: dir.path + "/huge.png") }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/huge.png"))
    }

    @Test func viridisMatchesMatplotlibAtItsEnds() {
        // matplotlib: viridis(0) = #440154, viridis(0.5) = #21918c, viridis(1) = #fde725.
        func close(_ a: Color, _ b: Color) -> Bool { abs(Int(a.r) - Int(b.r)) <= 5 && abs(Int(a.g) - Int(b.g)) <= 5 && abs(Int(a.b) - Int(b.b)) <= 5 }
        #expect(close(Color.viridis(0), Color(0x44, 0x01, 0x54)))
        #expect(close(Color.viridis(0.5), Color(0x21, 0x91, 0x8c)))
        #expect(close(Color.viridis(1), Color(0xfd, 0xe7, 0x25)))
    }
}
