import Foundation
import TestSupport
import Testing

/// Every command of README.md runs as written, in order, in an empty folder, against the built
/// executable: the commands of its ```sh, ```bash and ```console blocks (in a console block, the
/// lines after `$ `). The README's conventions, which this test reads:
/// - `# needs: …` — the command needs what a test cannot have (your checkpoint, minutes of build);
///   skipped, and the README says what;
/// - `# exits N` — the command is an example of a failure and must end with status N;
/// - `make …` lines build what the test runs, and are not run by it.
/// The folder stands for a checkout (its `Tests/` is linked in, for the fixtures the README uses);
/// HOME is a fresh folder, so `~/src` is too.
@Suite struct ReadmeTests {
    struct Command: CustomStringConvertible {
        let text: String
        let line: Int
        /// Which code block it is in: a block's commands share a shell (a `cd` carries on).
        let block: Int
        let expectedStatus: Int32
        var description: String { "README.md:\(line): \(text)" }
    }

    /// The README's commands in order, with the ones marked `# needs:` and `make` left out.
    static func commands(in readme: String) -> (run: [Command], skipped: [Command]) {
        var run: [Command] = [], skipped: [Command] = []
        var fence: String?
        var block = 0
        for (i, raw) in readme.components(separatedBy: "\n").enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("```") {
                fence = fence == nil ? String(line.dropFirst(3)) : nil
                block += 1
                continue
            }
            guard let kind = fence, ["sh", "bash", "console"].contains(kind) else { continue }
            var text: String
            if kind == "console" {
                guard line.hasPrefix("$ ") else { continue }
                text = String(line.dropFirst(2))
            } else {
                guard !line.isEmpty, !line.hasPrefix("#") else { continue }
                text = line
            }
            var status: Int32 = 0
            if let m = text.firstMatch(of: #/#\s*exits\s+(\d+)/#) { status = Int32(m.1) ?? 0 }
            let command = Command(text: text, line: i + 1, block: block, expectedStatus: status)
            if text.contains("# needs:") || text.hasPrefix("make ") { skipped.append(command) } else { run.append(command) }
        }
        return (run, skipped)
    }

    @Test func everyExampleRunsAsWritten() throws {
        let readme = try String(contentsOfFile: TestPaths.sourceRoot + "/README.md", encoding: .utf8)
        let (commands, skipped) = Self.commands(in: readme)
        #expect(commands.count >= 20, "the README's examples were found: \(commands.count)")
        #expect(skipped.count <= 8, "only a few examples may need what a test cannot have: \(skipped)")
        #expect(commands.contains { $0.text.hasPrefix("menagerie run") })

        let work = TempDir("readme")
        let folder = work.sub("checkout")
        try FileManager.default.createSymbolicLink(atPath: folder + "/Tests", withDestinationPath: TestPaths.sourceRoot + "/Tests")
        // One bash runs them all in order; each block starts in the folder, its commands share the
        // shell. A step that ends with another status than expected stops the script and names itself.
        var script = "export PATH=\(TestPaths.products):$PATH\n"
        var block = -1
        for (i, c) in commands.enumerated() {
            if c.block != block { script += "cd \(folder)\n" }
            block = c.block
            script += "echo \"README-STEP \(i)\" >&2\n" + c.text + "\n"
            script += "status=$?; if [ $status -ne \(c.expectedStatus) ]; then echo \"README-FAILED \(i) $status\" >&2; exit 1; fi\n"
        }
        let cli = CLI()
        var environment = cli.environment
        environment["MENAGERIE_PLUGIN_PATH"] = ""
        environment["MENAGERIE_PROGRESS_INTERVAL"] = "600"
        let started = Date()
        let r = try runProcess("/bin/bash", ["-c", script], environment: environment, directory: folder)
        let seconds = Date().timeIntervalSince(started)
        if r.status != 0 {
            let failed = r.stderr.firstMatch(of: #/README-FAILED (\d+) (\d+)/#)
            let step = failed.flatMap { Int($0.1) }.map { commands[$0].description } ?? "?"
            Issue.record("\(step) ended with status \(failed.map { String($0.2) } ?? "?"):\n\(r.stderr.suffix(3000))")
        }
        #expect(seconds < 90, "the README's examples took \(Int(seconds)) s")
    }

    /// The markers are read as documented: a `# needs:` line is skipped, `# exits 2` expects 2.
    @Test func conventionsAreRead() {
        let text = """
            ```console
            $ menagerie list
            COMPONENT  KIND
            $ menagerie run x --set model=~/hf/y --out z   # needs: your checkpoint
            $ menagerie run x --input targte=a.npy   # exits 2
            ```
            ```sh
            make demo    # build
            menagerie info x
            # a comment
            ```
            ```swift
            let menagerie = 1
            ```
            """
        let (run, skipped) = Self.commands(in: text)
        #expect(run.map(\.text) == ["menagerie list", "menagerie run x --input targte=a.npy   # exits 2", "menagerie info x"])
        #expect(run.map(\.expectedStatus) == [0, 2, 0])
        #expect(skipped.count == 2)
    }
}
