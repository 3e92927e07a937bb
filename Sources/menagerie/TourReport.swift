import Foundation
import MenagerieKit

/// The tour's `index.html`: contents, then per component a paragraph (its summary, and the tour's
/// own note when it returns one), the command that reproduces it, a link to its Docs/methods page, its key numbers,
/// its figures with captions (read from each figure's SVG title), previews of its CSV files and
/// thumbnails of its image folders. One self-contained page with relative links only (plus the
/// docs, linked where they are installed); no scripts.
struct TourReport {
    struct Entry {
        var stop: TourCommand.Stop
        var kind: String
        var summary: String
        var docs: String?
    }

    var entries: [Entry]
    var root: String
    var seed: UInt64
    var version: String
    var totalSeconds: Double

    func html() -> String {
        let ok = entries.filter(\.stop.ok).count
        var h = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>Menagerie tour</title>
            <style>\(Self.css)</style></head><body>
            <header><h1>Menagerie tour</h1>
            <p>\(entries.count) components ran on embedded data: \(ok) ok\(ok < entries.count ? ", <b class=bad>\(entries.count - ok) failed</b>" : "") \
            in \(String(format: "%.0f", totalSeconds)) s. Menagerie \(esc(version)), seed \(seed), \(esc(ISO8601DateFormatter().string(from: Date()))).</p>
            <p>Reproduce the whole page: <code>menagerie tour --seed \(seed) --out \(esc((root as NSString).lastPathComponent))</code>. \
            Every figure is a 2× PNG with its SVG beside it; every number below is also in the component's <code>result.json</code>.</p>
            </header>
            <nav id="contents"><h2>Contents</h2><ol>

            """
        for e in entries {
            h +=
                "<li><a href=\"#\(anchor(e.stop.component))\">\(esc(e.stop.component))</a> <span class=\(e.stop.ok ? "ok" : "bad")>"
                + "\(e.stop.ok ? "ok" : "failed") · \(String(format: "%.1f", e.stop.seconds)) s</span> — \(esc(e.summary))</li>\n"
        }
        h += "</ol></nav>\n<main>\n"
        var figureNumber = 0
        for e in entries { h += section(e, figureNumber: &figureNumber) }
        return h + "</main></body></html>\n"
    }

    private func section(_ e: Entry, figureNumber: inout Int) -> String {
        let s = e.stop, id = s.component
        var h =
            "<section id=\"\(anchor(id))\"><h2>\(esc(id)) <small>\(esc(e.kind)) · plugin \(esc(s.plugin)) · \(String(format: "%.1f", s.seconds)) s</small></h2>\n"
        h += "<p>\(esc(e.summary)).</p>\n"
        h += "<p class=cmd>Reproduce: <code>menagerie run \(esc(id)) tour --seed \(seed) --out \(esc(id))</code>"
        if let docs = e.docs {
            h += " · method page: <a href=\"\(URL(fileURLWithPath: docs).absoluteString)\">\(esc((docs as NSString).lastPathComponent))</a>"
        }
        h += "</p>\n"
        if let error = s.error { return h + "<p class=bad>Failed: \(esc(error))</p></section>\n" }
        let numbers = s.highlights.filter { $0.key != "note" }
        if !numbers.isEmpty {
            h +=
                "<table class=numbers><caption>Key numbers (result.json)</caption>"
                + numbers.keys.sorted().map { "<tr><th>\(esc($0))</th><td>\(esc(Self.format(numbers[$0]!)))</td></tr>" }.joined() + "</table>\n"
        }
        if let note = s.highlights["note"]?.stringValue { h += "<p class=note>\(esc(note))</p>\n" }
        let top = s.files.filter { !$0.contains("/") }
        // Figures: PNGs with an SVG beside them, captioned with the SVG's title.
        for png in top where png.hasSuffix(".png") {
            let stem = String(png.dropLast(4)), svg = stem + ".svg"
            let rel = "\(id)/\(png)", hasSVG = top.contains(svg)
            figureNumber += 1
            let title = hasSVG ? figureTitle(root + "/" + id + "/" + svg) : nil
            let width = pngWidth(root + "/" + rel).map { hasSVG ? $0 / 2 : max($0, 256) }
            h +=
                "<figure><a href=\"\(rel)\"><img src=\"\(rel)\" alt=\"\(esc(title ?? png))\"\(width.map { " width=\"\($0)\"" } ?? "")"
                + (hasSVG ? "" : " class=pixels") + "></a><figcaption>Figure \(figureNumber). \(esc(title ?? png))"
                + " — <a href=\"\(rel)\">\(esc(png))</a>\(hasSVG ? " · <a href=\"\(id)/\(svg)\">SVG</a>" : "")</figcaption></figure>\n"
        }
        for csv in top where csv.hasSuffix(".csv") { h += csvPreview(id + "/" + csv) }
        // Folders: a row of thumbnails of their images, and the count.
        var folders: [String: [String]] = [:]
        for f in s.files where f.contains("/") { folders[String(f[..<f.firstIndex(of: "/")!]), default: []].append(f) }
        for (folder, files) in folders.sorted(by: { $0.key < $1.key }) {
            let images = files.filter { $0.hasSuffix(".png") || $0.hasSuffix(".jpg") }.sorted()
            h += "<div class=folder><h3><a href=\"\(id)/\(folder)/\">\(esc(folder))/</a> <small>\(files.count) files</small></h3>"
            if !images.isEmpty {
                h +=
                    "<div class=thumbs>"
                    + images.prefix(10).map { "<a href=\"\(id)/\($0)\"><img src=\"\(id)/\($0)\" alt=\"\(esc($0))\" title=\"\(esc($0))\" class=pixels></a>" }
                    .joined()
                    + (images.count > 10 ? "<span>+\(images.count - 10) more</span>" : "") + "</div>"
            }
            let csvs = files.filter { $0.hasSuffix(".csv") && $0.split(separator: "/").count == 2 }.prefix(2)
            for c in csvs { h += csvPreview(id + "/" + c) }
            h += "</div>\n"
        }
        let others = top.filter { !$0.hasSuffix(".png") && !$0.hasSuffix(".svg") && !$0.hasSuffix(".csv") }
        if !others.isEmpty { h += "<p class=files>Files: " + others.map { "<a href=\"\(id)/\($0)\">\(esc($0))</a>" }.joined(separator: " · ") + "</p>\n" }
        return h + "</section>\n"
    }

    /// The first rows of a CSV as a table, in a collapsible block.
    private func csvPreview(_ rel: String) -> String {
        guard let text = try? String(contentsOfFile: root + "/" + rel, encoding: .utf8) else { return "" }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard let header = lines.first else { return "" }
        let shown = 8
        var h =
            "<details\(lines.count <= 12 ? " open" : "")><summary><a href=\"\(rel)\">\(esc((rel as NSString).lastPathComponent))</a> "
            + "<small>\(lines.count - 1) rows\(lines.count - 1 > shown ? ", first \(shown) shown" : "")</small></summary><div class=scroll><table class=csv><tr>"
        h += Self.fields(String(header)).map { "<th>\(esc($0))</th>" }.joined() + "</tr>"
        for line in lines.dropFirst().prefix(shown) {
            h += "<tr>" + Self.fields(String(line)).map { "<td>\(esc(shorten($0)))</td>" }.joined() + "</tr>"
        }
        return h + "</table></div></details>\n"
    }

    /// RFC 4180 fields of one line (quotes, doubled quotes inside).
    static func fields(_ line: String) -> [String] {
        var out: [String] = [], field = "", quoted = false
        var chars = line.makeIterator()
        var pending: Character? = nil
        while let c = pending ?? chars.next() {
            pending = nil
            if quoted {
                if c == "\"" {
                    if let next = chars.next() {
                        if next == "\"" {
                            field.append("\"")
                        } else {
                            quoted = false
                            pending = next
                        }
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(c)
                }
            } else if c == "\"" {
                quoted = true
            } else if c == "," {
                out.append(field)
                field = ""
            } else if c != "\r" {
                field.append(c)
            }
        }
        out.append(field)
        return out
    }

    /// Long numbers to 4 significant digits, long text cut.
    private func shorten(_ s: String) -> String {
        if let d = Double(s), s.count > 8, d.isFinite, d != d.rounded() { return String(format: "%.4g", d) }
        return s.count > 60 ? String(s.prefix(57)) + "…" : s
    }

    private func figureTitle(_ svgPath: String) -> String? {
        guard let text = try? String(contentsOfFile: svgPath, encoding: .utf8),
            let match = text.firstMatch(of: #/<text [^>]*class="title"[^>]*>([^<]*)</text>/#)
        else { return nil }
        return String(match.1).replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
    }

    /// A PNG's width from its IHDR chunk.
    private func pngWidth(_ path: String) -> Int? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        guard let d = try? h.read(upToCount: 24), d.count == 24, d.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { return nil }
        let w = d[16..<20].reduce(0) { $0 << 8 | Int($1) }
        return w > 0 && w < 100_000 ? w : nil
    }

    /// A number as an integer when it is one, else to 4 significant digits; text as it is.
    static func format(_ v: JSONValue) -> String {
        if let d = v.doubleValue { return d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : String(format: "%.4g", d) }
        return v.stringValue ?? v.compactText
    }

    private func anchor(_ id: String) -> String { id.map { $0.isLetter || $0.isNumber || $0 == "-" ? String($0) : "-" }.joined() }

    private func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static let css = """
        body{font:15px/1.5 'DejaVu Sans',system-ui,sans-serif;color:#222;margin:0 auto;max-width:1180px;padding:0 1.5em 4em}\
        header{border-bottom:1px solid #ddd;margin-bottom:1em}h1{margin:.6em 0 .2em}h2{margin-top:2.2em;border-bottom:1px solid #eee}\
        h2 small,h3 small,summary small{color:#777;font-weight:normal;font-size:.75em}\
        nav ol{columns:2;column-gap:2.5em;padding-left:1.4em}nav li{break-inside:avoid;margin:.15em 0}\
        .ok{color:#2a7a2a}.bad{color:#b00020}code{background:#f4f4f4;padding:.1em .35em;border-radius:3px;font-size:.92em}\
        .cmd{color:#444}.note{color:#555;font-style:italic}\
        figure{margin:1.2em .6em 1.2em 0;display:inline-block;vertical-align:top;width:min-content;max-width:100%}figure img{max-width:100%;height:auto;border:1px solid #e4e4e4}\
        figcaption{font-size:.9em;color:#444;max-width:720px}img.pixels{image-rendering:pixelated}\
        table{border-collapse:collapse;font-size:.88em}th,td{padding:.2em .7em;border-bottom:1px solid #eee;text-align:left}\
        table.numbers{margin:.6em 0}table.numbers caption{text-align:left;color:#777;font-size:.9em}td{font-variant-numeric:tabular-nums}\
        details{margin:.6em 0}.scroll{overflow-x:auto}.folder{margin:1em 0}.thumbs img{width:88px;height:88px;object-fit:contain;\
        margin:2px;border:1px solid #ddd;background:#fafafa}.thumbs span{color:#777;margin-left:.5em}.files{font-size:.9em}
        """
}
