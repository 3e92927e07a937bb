import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit

struct TourCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tour", abstract: "Run every component that has a tour on embedded data and collect the outputs.",
        discussion: "Each component writes into OUT/<component>/ (result.json, CSV, PNG...); OUT/index.html links them all.")

    @Option(name: .long, help: "Output folder.")
    var out = "menagerie-tour"

    @Option(name: .long, help: "Only components whose id matches this glob.")
    var only: String?

    @Option(name: .long, help: "The seed given to every component.")
    var seed: UInt64 = 0

    @Flag(name: .long, help: "Print a JSON summary on stdout.")
    var json = false

    @OptionGroup var global: GlobalOptions

    struct Stop: Codable {
        let component: String
        let plugin: String
        let ok: Bool
        let seconds: Double
        let folder: String
        let files: [String]
        let highlights: [String: JSONValue]
        let error: String?
    }

    func run() throws {
        // The tour owns its folder: a second tour replaces the first one's outputs.
        let root = try RunOutput(directory: out, replace: true).directory
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let registry = try global.registry()
        let stops = registry.components.filter { $0.component.tour == true && (only == nil || fnmatch(only!, $0.component.id, 0) == 0) }
        guard !stops.isEmpty else {
            throw HostError(.notFound, "no component with a tour" + (only.map { " matches '\($0)'" } ?? "") + "; see `menagerie list`")
        }
        let started = Date()
        let results = try withRuntime(registry: registry, seed: seed, global: global, json: json) { runtime, progress in
            stops.enumerated().compactMap { i, stop in
                cancellationFlag.load(ordering: .relaxed) ? nil : visit(stop, index: i, of: stops.count, root: root, runtime: runtime, progress: progress)
            }
        }
        let docs = Self.methodDocs()
        let entries = zip(stops, results).map { stop, result in
            TourReport.Entry(
                stop: result, kind: stop.component.kind, summary: stop.component.summary,
                docs: docs.flatMap { Self.methodPage(in: $0, component: stop.component.id, plugin: stop.plugin.metadata?.name ?? "") })
        }
        let report = TourReport(
            entries: entries, root: root, seed: seed, version: Menagerie.configuration.version,
            totalSeconds: Date().timeIntervalSince(started))
        try Data(report.html().utf8).write(to: URL(fileURLWithPath: root + "/index.html"), options: .atomic)

        if json {
            try printJSON(results)
        } else {
            print(
                table(
                    [["COMPONENT", "STATUS", "SECONDS", "OUTPUTS"]]
                        + results.map {
                            [$0.component, $0.ok ? "ok" : "FAILED", String(format: "%.2f", $0.seconds), $0.ok ? $0.folder : ($0.error ?? "")]
                        }))
            print("open \(root)/index.html")
        }
        if cancellationFlag.load(ordering: .relaxed) { throw HostError(.failed, "cancelled by the user") }
        if results.contains(where: { !$0.ok }) { throw ExitCode(1) }
    }

    /// Runs one component's tour into `root/<component>/` and reports how it went.
    func visit(
        _ stop: (plugin: RegistryEntry, component: ComponentInfo), index: Int, of count: Int, root: String,
        runtime: Runtime, progress: StderrProgress
    ) -> Stop {
        let (plugin, c) = stop
        writeError("[\(index + 1)/\(count)] \(c.id) …")
        // The stop is part i of the tour on the component's progress bar (until the component
        // reports parts of its own).
        progress.phase(component: c.id, index: Int64(index + 1), count: Int64(count), name: "tour")
        defer { progress.ended(component: c.id) }
        let started = Date()
        let folder = root + "/" + c.id
        defer { progress.finish() }
        do {
            let output = try RunOutput(directory: folder, replace: true)
            let r = try runtime.invoke(c.id, operation: "tour")
            progress.finish()
            let seconds = Date().timeIntervalSince(started)
            let manifest = RunOutput.manifest(
                component: c.id, operation: "tour", plugin: plugin, options: .object(OptionSchema(c.options).defaults),
                seed: seed, inputs: [:], result: r, seconds: seconds, version: Menagerie.configuration.version)
            let final = try output.commit(manifest: manifest, tensors: r.tensors, artifacts: r.artifacts)
            let files = ["result.json"] + (final["artifacts"]?.arrayValue?.compactMap { $0["file"]?.stringValue } ?? [])
            let highlights = (final["result"]?.objectValue ?? [:]).filter { $0.value.doubleValue != nil || $0.value.stringValue != nil }
            let shown = highlights.keys.sorted().prefix(5).map { "\($0)=\(TourReport.format(highlights[$0]!))" }.joined(separator: " ")
            writeError(String(format: "      ok in %.2f s  %@", seconds, shown))
            return Stop(
                component: c.id, plugin: plugin.metadata?.name ?? "", ok: true, seconds: seconds, folder: folder,
                files: files, highlights: highlights, error: nil)
        } catch {
            writeError("      FAILED: \(error)")
            return Stop(
                component: c.id, plugin: plugin.metadata?.name ?? "", ok: false, seconds: Date().timeIntervalSince(started),
                folder: folder, files: [], highlights: [:], error: "\(error)")
        }
    }

    /// The folder of the method pages: Docs/methods of the source tree this binary was built in, or
    /// share/menagerie/docs/methods of an installation.
    static func methodDocs() -> String? {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        for _ in 0..<6 {
            for candidate in [dir + "/Docs/methods", dir + "/share/menagerie/docs/methods"]
            where FileManager.default.fileExists(atPath: candidate + "/README.md") {
                return candidate
            }
            dir = (dir as NSString).deletingLastPathComponent
        }
        return nil
    }

    /// The method page of a component: its own (`<id>.md`), else its plugin's.
    static func methodPage(in docs: String, component: String, plugin: String) -> String? {
        [component, plugin].map { "\(docs)/\($0).md" }.first { FileManager.default.fileExists(atPath: $0) }
    }
}
