import Foundation
import TestSupport
import Testing

/// The whole tour, run once: every figure it writes passes the figure check, and its report opens in
/// headless Chromium with no broken image or link.
@Suite struct TourReportTests {
    /// One tour for every test of the suite (the first test to ask runs it; the others wait).
    final class TourRun: Sendable {
        let dir = TempDir("tour-report")
        let result: CommandResult
        var out: String { dir.path + "/tour" }
        init() {
            let cli = CLI()
            result =
                (try? cli.run("tour", "--out", dir.path + "/tour", "--json"))
                ?? CommandResult(status: -1, stdout: "", stderr: "could not start menagerie")
        }
    }
    static let tour = TourRun()

    /// Every file under `dir` (relative paths).
    func files(_ dir: String) -> [String] { (try? FileManager.default.subpathsOfDirectory(atPath: dir)) ?? [] }

    @Test func theTourSucceedsAndPrintsJSON() throws {
        let run = Self.tour
        #expect(run.result.status == 0, "\(run.result.stderr.suffix(2000))")
        let stops = try #require(try JSONSerialization.jsonObject(with: Data(run.result.stdout.utf8)) as? [[String: Any]])
        #expect(stops.count >= 12 && stops.allSatisfy { $0["ok"] as? Bool == true })
    }

    @Test func everyFigureHasTitleAxisLabelsAndLegends() throws {
        let run = Self.tour
        let all = files(run.out)
        let svgs = all.filter { $0.hasSuffix(".svg") }
        #expect(svgs.count >= 25, "figures found: \(svgs)")
        var problems: [String] = []
        for svg in svgs { problems += figureProblems(svgAt: run.out + "/" + svg).map { "\(svg): \($0)" } }
        #expect(problems.isEmpty, "\(problems)")
        // Every figure is a PNG and an SVG; the PNG is the SVG's size at 2×.
        for svg in svgs {
            let png = String(svg.dropLast(4)) + ".png"
            #expect(all.contains(png), "\(svg) has no PNG")
        }
        // Plots a component draws by hand would bypass the check: every top-level PNG of a stop is
        // a figure with its SVG, except these data images (the C metric's label maps, written by
        // libpng from C; image folders hold the other data images).
        let dataImages: Set<String> = ["segmentation-metrics/prediction.png", "segmentation-metrics/target.png", "segmentation-metrics/errors.png"]
        for png in all where png.hasSuffix(".png") && png.split(separator: "/").count == 2 && !dataImages.contains(png) {
            #expect(all.contains(String(png.dropLast(4)) + ".svg"), "\(png) is a figure without its SVG (not drawn with Imaging.Figure)")
        }
    }

    @Test func theReportHasContentsCommandsCaptionsPreviewsAndThumbnails() throws {
        let run = Self.tour
        let html = try String(contentsOfFile: run.out + "/index.html", encoding: .utf8)
        let stops = (try? JSONSerialization.jsonObject(with: Data(run.result.stdout.utf8)) as? [[String: Any]]) ?? []
        let ids = stops.compactMap { $0["component"] as? String }
        #expect(!ids.isEmpty)
        for id in ids {
            #expect(html.contains("<a href=\"#\(id)\">\(id)</a>"), "contents lacks \(id)")
            #expect(html.contains("<section id=\"\(id)\">"), "no section for \(id)")
            #expect(html.contains("menagerie run \(id) tour --seed 0"), "no reproduce command for \(id)")
        }
        let figures = files(run.out).filter { $0.hasSuffix(".svg") && $0.split(separator: "/").count == 2 }.count
        #expect(html.components(separatedBy: "<figcaption>Figure ").count - 1 >= figures)
        #expect(html.contains("<table class=csv>"))
        #expect(html.contains("<div class=thumbs>"))
        #expect(html.contains("Docs/methods") || html.contains("docs/methods"), "no link to the method pages")
        // Captions come from the figures' own titles.
        #expect(html.contains("Reliability diagram (ECE"))
    }

    @Test func everyLinkAndImageOfTheReportResolves() throws {
        let run = Self.tour
        let html = try String(contentsOfFile: run.out + "/index.html", encoding: .utf8)
        var broken: [String] = []
        for match in html.matches(of: #/(?:href|src)="([^"#][^"]*)"/#) {
            let target = String(match.1)
            let path = target.hasPrefix("file://") ? URL(string: target)!.path : run.out + "/" + (target.removingPercentEncoding ?? target)
            if !FileManager.default.fileExists(atPath: path) { broken.append(target) }
        }
        #expect(broken.isEmpty, "broken links: \(broken.prefix(20))")
    }

    @Test func chromiumRendersTheReportWithEveryImage() throws {
        let run = Self.tour
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let browser = try #require(chromium, "headless Chromium is needed for this test: `scripts/bootstrap --test` installs Debian's chromium")
        // A page that opens the report in a frame and lists the images that did not decode.
        let check = run.dir.path + "/check.html"
        try """
        <!doctype html><pre id=result>pending</pre><iframe id=f src="tour/index.html" width=1280 height=900></iframe>
        <script>
        document.getElementById('f').addEventListener('load', () => {
          const d = document.getElementById('f').contentDocument;
          const broken = [...d.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
          document.getElementById('result').textContent = 'RESULT ' + JSON.stringify({images: d.images.length, broken}) + ' END';
        });
        </script>
        """.write(toFile: check, atomically: true, encoding: .utf8)
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--virtual-time-budget=30000"]
        let dom = try runProcess(browser, flags + ["--dump-dom", "file://" + check])
        let text = try #require(dom.stdout.firstMatch(of: #/RESULT (.*) END/#).map { String($0.1) }, "chromium printed no result: \(dom.stderr.suffix(800))")
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect((parsed["images"] as? Int ?? 0) >= 30)
        #expect((parsed["broken"] as? [String])?.isEmpty == true, "images that did not load: \(parsed["broken"] ?? "")")
        // A screenshot of the top of the page: it exists and is not blank.
        let shot = run.dir.path + "/report.png"
        _ = try runProcess(browser, flags + ["--window-size=1280,2400", "--screenshot=" + shot, "file://" + run.out + "/index.html"])
        let png = try #require(FileManager.default.contents(atPath: shot))
        #expect(png.count > 50_000, "the screenshot is \(png.count) bytes: a blank page?")
    }
}
