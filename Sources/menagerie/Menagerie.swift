import ArgumentParser
import CLaunch
import COpenBLAS
import Foundation
import Logging
import MenagerieHost
import MenagerieKit

/// `menagerie`: list, inspect and run the research methods installed as plugins.
@main
struct Menagerie: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "menagerie",
        abstract: "Run machine-learning research methods loaded as plugins.",
        discussion: """
            Plugins are found in the built-in folder, $MENAGERIE_PLUGIN_PATH and ~/.local/share/menagerie/plugins.
            Exit codes: 0 ok, 1 failed, 2 usage.
            """,
        version: "0.1.0 (plugin ABI \(abiVersion.major).\(abiVersion.minor), \(swiftToolchain))",
        subcommands: [
            ListCommand.self, PluginsCommand.self, InfoCommand.self, RunCommand.self, NewCommand.self,
            ValidateCommand.self, DoctorCommand.self, CallCommand.self, TourCommand.self, BenchCommand.self, InspectCommand.self, ConvertCommand.self,
            MergeCommand.self, SlurmCommand.self,
            ProbeCommand.self, ValidateChildCommand.self, IsolateChildCommand.self,
        ])

    /// Parses, runs, and maps every error to exit code 1 (failure) or 2 (usage), with the message on stderr.
    static func main() {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = ProcessInfo.processInfo.environment["MENAGERIE_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
            return h
        }
        // One OpenBLAS per process, shared by the host and every plugin: its idle threads spin
        // briefly (Sources/CLaunch/launch.c), and its threads are set once.
        _ = mng_shorten_openblas_spin(16)
        if let t = ProcessInfo.processInfo.environment["MENAGERIE_THREADS"], let n = Int32(t), n > 0 {
            GEMM.setThreads(Int(n))
        }
        let args = Array(CommandLine.arguments.dropFirst())
        // bash and zsh need a few changes to ArgumentParser's scripts for KEY=VALUE options (CompletionScripts).
        if args == ["--generate-completion-script", "bash"] || args == ["--generate-completion-script=bash"] {
            print(BashCompletion.script())
            Foundation.exit(0)
        }
        if args == ["--generate-completion-script", "zsh"] || args == ["--generate-completion-script=zsh"], let script = ZshCompletion.script() {
            print(script)
            Foundation.exit(0)
        }
        // `menagerie run COMPONENT --help`: the component's own operations and options, then the flags.
        if args.first == "run", args.contains(where: { $0 == "--help" || $0 == "-h" }),
            let component = args.dropFirst().first(where: { !$0.hasPrefix("-") })
        {
            do {
                let info = try InfoCommand.parse([component] + args.filter { ["--safe-mode", "--rescan"].contains($0) })
                try info.run()
                print("\n" + RunCommand.helpMessage(columns: terminalColumns()))
                Foundation.exit(0)
            } catch {
                // Not a component: fall through to the generic help (which also names the mistake).
            }
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let e as HostError {
            FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
            Foundation.exit(e.kind == .usage || e.kind == .notFound ? 2 : 1)
        } catch let e as MenagerieError {
            FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
            Foundation.exit(e.status == .invalidArgument || e.status == .notFound ? 2 : 1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            var message = fullMessage(for: error)
            // One error style across the CLI: "error: …" (ArgumentParser says "Error: …").
            if message.hasPrefix("Error: ") { message = "error: " + message.dropFirst("Error: ".count) }
            message = betterFlagSuggestion(message, arguments: args)
            if !message.isEmpty { FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8)) }
            Foundation.exit(code == .validationFailure ? 2 : (error is ExitCode ? code.rawValue : 1))
        }
    }
}

/// Options every command that reads the registry accepts.
struct GlobalOptions: ParsableArguments {
    @Flag(name: .long, help: "Load built-in plugins only (also MENAGERIE_SAFE_MODE=1).")
    var safeMode = false

    @Option(
        name: .long, help: "A lock file pinning the SHA-256 of allowed plugins (default: $MENAGERIE_LOCK_FILE or ~/.config/menagerie/plugins.lock if present).")
    var lock: String?

    @Flag(name: .long, help: "Ignore the registry cache and scan every plugin again.")
    var rescan = false

    var isSafeMode: Bool {
        safeMode || ["1", "true", "yes"].contains(ProcessInfo.processInfo.environment["MENAGERIE_SAFE_MODE"]?.lowercased() ?? "")
    }

    /// The lock file in force, if any.
    func lockFile() throws -> (file: LockFile, path: String)? {
        if let lock { return (try LockFile.load(path: lock), lock) }
        let path = LockFile.defaultPath()
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return (try LockFile.load(path: path), path)
    }

    func registry() throws -> Registry {
        Registry(searchPath: SearchPath(safeMode: isSafeMode), rescan: rescan, lock: try lockFile())
    }
}

/// Prints `value` as JSON on stdout.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Pads `rows` into aligned columns (the last column is not padded).
func table(_ rows: [[String]]) -> String {
    guard let width = rows.map(\.count).max(), width > 0 else { return "" }
    var widths = [Int](repeating: 0, count: width)
    for r in rows { for (i, c) in r.enumerated() where i < width - 1 { widths[i] = max(widths[i], c.count) } }
    return rows.map { r in
        r.enumerated().map { i, c in i < width - 1 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0) : c }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}

/// ArgumentParser suggests the first close flag it finds; suggest the closest of the subcommand's
/// flags by edit distance and common prefix instead ('--ouput' → '--out').
func betterFlagSuggestion(_ message: String, arguments: [String]) -> String {
    guard let range = message.range(of: #"Unknown option '--[^']+'\. Did you mean '--[^']+'\?"#, options: .regularExpression) else { return message }
    let text = String(message[range])
    let parts = text.split(separator: "'")
    guard parts.count >= 4 else { return message }
    let typed = String(parts[1].dropFirst(2))
    let sub = Menagerie.configuration.subcommands.first { $0.configuration.commandName == arguments.first }
    let help = (sub ?? Menagerie.self).helpMessage(includeHidden: false, columns: 200)
    let flags = Set(help.matches(of: #/--([a-z][a-z0-9-]*)/#).map { String($0.1) }).sorted()
    guard let best = closestNames(to: typed, in: flags, limit: 1).first else { return message }
    return message.replacingCharacters(in: range, with: "Unknown option '--\(typed)'. Did you mean '--\(best)'?")
}

/// The terminal's width (COLUMNS, then the tty), 100 when neither says.
func terminalColumns() -> Int {
    if let c = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), c >= 40 { return c }
    var w = winsize()
    if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &w) == 0, w.ws_col >= 40 { return Int(w.ws_col) }
    return 100
}

/// Wraps `text` to `width` columns (words kept whole; a word longer than the width stands alone).
func wrap(_ text: String, width: Int) -> [String] {
    guard width > 10, text.count > width else { return [text] }
    var lines: [String] = [], line = ""
    for word in text.split(separator: " ", omittingEmptySubsequences: false) {
        if !line.isEmpty, line.count + 1 + word.count > width {
            lines.append(line)
            line = String(word)
        } else {
            line += (line.isEmpty ? "" : " ") + word
        }
    }
    if !line.isEmpty { lines.append(line) }
    return lines
}

func writeError(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
