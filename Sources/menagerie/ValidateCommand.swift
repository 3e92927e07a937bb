import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check one plugin file out of process: ELF, trust, ABI, metadata, init/invoke/shutdown.")

    @Argument(help: "The plugin .so to check.")
    var path: String

    @Flag(name: .long, help: "Print JSON on stdout.")
    var json = false

    struct Check: Codable {
        let name: String
        let ok: Bool
        let detail: String
    }

    func run() throws {
        let abs = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var checks: [Check] = []
        func add(_ name: String, _ problem: String?, ok detail: String) { checks.append(Check(name: name, ok: problem == nil, detail: problem ?? detail)) }
        guard FileManager.default.fileExists(atPath: abs) else { throw HostError(.usage, "\(abs) does not exist") }
        add("trust", Trust.problem(path: abs), ok: "owned by you or root, not writable by others")
        add("elf", ELFCheck.problem(path: abs), ok: "64-bit shared library for this machine")
        if checks.allSatisfy(\.ok) {
            // Both steps run in a child: a crash or hang is reported, not suffered.
            let child = try SpawnedChild(SearchPath.executablePath, ["_validate-child", abs], reportPipe: true)
            let outcome = child.wait(timeout: ChildProbe.defaultTimeout)
            switch outcome.termination {
            case .exit:
                // The report pipe's first line: nothing the plugin prints can stand in for it.
                let line = outcome.reportTruncated ? nil : outcome.report.split(separator: UInt8(ascii: "\n"), maxSplits: 1).first
                let decoded = line.flatMap { try? JSONDecoder().decode([Check].self, from: Data($0)) }
                checks += decoded ?? [Check(name: "load", ok: false, detail: "no report from the check process: \(outcome.stderr.suffix(300))")]
            case .signal(let s): checks.append(Check(name: "load", ok: false, detail: "crashed (signal \(s)) while loading or invoking"))
            case .timedOut: checks.append(Check(name: "load", ok: false, detail: "timed out while loading or invoking"))
            }
        }
        if json {
            try printJSON(checks)
        } else {
            print(table(checks.map { [$0.ok ? "ok" : "FAIL", $0.name, $0.detail] }))
            print(checks.allSatisfy(\.ok) ? "\(abs): valid" : "\(abs): INVALID")
        }
        if !checks.allSatisfy(\.ok) { throw ExitCode(1) }
    }
}

/// The in-child part of `validate`: handshake, then init, an invoke that must fail cleanly, shutdown.
struct ValidateChildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_validate-child", shouldDisplay: false)
    @Argument var path: String

    func run() throws {
        var checks: [ValidateCommand.Check] = []
        defer {
            ProbeReport.emit((try? JSONEncoder().encode(checks)) ?? Data("[]".utf8))
        }
        let report = Handshake.probeReport(path: path)
        guard report.ok, let meta = report.metadata else {
            checks.append(.init(name: "handshake", ok: false, detail: report.reason ?? "failed"))
            return
        }
        checks.append(.init(name: "handshake", ok: true, detail: "ABI \(report.abi ?? "?"), toolchain \(report.toolchain ?? "?")"))
        checks.append(
            .init(
                name: "metadata", ok: true, detail: "\(meta.name) \(meta.version): " + meta.components.map { "\($0.id) (\($0.kind))" }.joined(separator: ", ")))
        for c in meta.components {
            let schemaOK = OptionSchema(c.options).properties.values.allSatisfy { $0["type"] != nil }
            checks.append(
                .init(
                    name: "options of \(c.id)", ok: schemaOK,
                    detail: schemaOK ? "\(OptionSchema(c.options).names.count) typed option(s)" : "every option needs a \"type\""))
        }
        let entry = RegistryEntry(
            path: path, size: 0, mtime: "", origin: "validate", status: .ok, reason: nil,
            abi: report.abi, toolchain: report.toolchain, sha256: nil, metadata: meta)
        let registry = Registry(entries: [entry])
        let runtime = try Runtime(registry: registry)
        runtime.isolation = .never // this process is already the isolated check
        defer { runtime.removeScratch() }
        for c in meta.components {
            do {
                _ = try runtime.invoke(c.id, operation: "menagerie-validate-no-such-operation")
                checks.append(.init(name: "errors of \(c.id)", ok: false, detail: "an unknown operation did not fail"))
            } catch let e as HostError {
                let ok = e.message.count > c.id.count + 40
                checks.append(
                    .init(
                        name: "errors of \(c.id)", ok: ok, detail: ok ? "an unknown operation fails with a message" : "the error message is empty: \(e.message)"
                    ))
            }
        }
        runtime.shutdown()
        checks.append(.init(name: "shutdown", ok: true, detail: "init, invoke, free_response and shutdown ran"))
    }
}
