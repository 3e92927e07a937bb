import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// What a figure written by `Imaging.Figure` must show, read back from its SVG: a title; in every
/// axes an x label, a y label and ticks on both axes, and a legend when it holds several series;
/// in an image grid, headers or captions. Returns the problems (empty: the figure passes).
public func figureProblems(svgAt path: String) -> [String] {
    guard let data = FileManager.default.contents(atPath: path) else { return ["\(path): cannot read"] }
    let reader = FigureReader()
    let parser = XMLParser(data: data)
    parser.delegate = reader
    guard parser.parse() else { return ["\(path): not well-formed XML (\(parser.parserError.map { "\($0)" } ?? "?"))"] }
    var problems: [String] = []
    let name = (path as NSString).lastPathComponent
    if reader.kind == nil { problems.append("\(name): no data-figure on <svg>") }
    if !reader.texts.contains(where: { $0.role == "title" && !$0.text.isEmpty }) { problems.append("\(name): no title") }
    for axes in reader.axes {
        let roles = axes.texts.map(\.role)
        for needed in ["xlabel", "ylabel"] where !roles.contains(needed) { problems.append("\(name): an axes without \(needed)") }
        if roles.filter({ $0 == "xtick" }).count < 2 { problems.append("\(name): an axes with fewer than 2 x ticks") }
        if roles.filter({ $0 == "ytick" }).count < 2 { problems.append("\(name): an axes with fewer than 2 y ticks") }
        if axes.series > 1, roles.filter({ $0 == "legend" }).count < 2 {
            problems.append("\(name): \(axes.series) series but no legend naming them")
        }
    }
    if reader.kind == "chart", reader.axes.isEmpty { problems.append("\(name): a chart without axes") }
    if reader.kind == "grid", reader.images > 1, !reader.texts.contains(where: { ["header", "row-header", "caption"].contains($0.role) }) {
        problems.append("\(name): an image grid without headers or captions")
    }
    return problems
}

private final class FigureReader: NSObject, XMLParserDelegate {
    struct Text {
        var role: String
        var text: String
    }
    struct AxesGroup {
        var series: Int
        var texts: [Text] = []
    }
    var kind: String?
    var texts: [Text] = []
    var axes: [AxesGroup] = []
    var images = 0
    private var stack: [String] = []
    private var openAxes: [Int] = []
    private var current: Text?

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String]) {
        stack.append(name)
        switch name {
        case "svg": kind = attributes["data-figure"]
        case "g" where attributes["class"] == "axes":
            axes.append(AxesGroup(series: Int(attributes["data-series"] ?? "1") ?? 1))
            openAxes.append(axes.count - 1)
        case "g": openAxes.append(-1)
        case "text": current = Text(role: attributes["class"] ?? "", text: "")
        case "image": images += 1
        default: break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { current?.text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        stack.removeLast()
        if name == "text", let t = current {
            let text = Text(role: t.role, text: t.text.trimmingCharacters(in: .whitespaces))
            texts.append(text)
            if let i = openAxes.last(where: { $0 >= 0 }) { axes[i].texts.append(text) }
            current = nil
        }
        if name == "g" { openAxes.removeLast() }
    }
}
