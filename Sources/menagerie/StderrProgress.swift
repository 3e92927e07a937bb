import Foundation
import MenagerieHost

/// Progress on stderr: a bar redrawn in place when stderr is a terminal; otherwise (a log file, a
/// pipe, CI) one plain line every `MENAGERIE_PROGRESS_INTERVAL` seconds (default 30) so a long run
/// in the background shows where it is. `MENAGERIE_PROGRESS=off` silences both.
///
/// A component that runs in parts (`phase`: net 3 of 5) gets one overall bar and an ETA for the
/// whole run: `distilled-eval [######    ] part 3/5 · net 3 · training · 40% 120/300 · 12 s elapsed · 10.0/s · ETA 30 s`.
/// Recorded metrics (`record`) are printed as lines of their own above the bar, so they stay in the
/// scrollback, and kept in `log` for log.csv (always, even with the bar off).
// @unchecked: the `let`s are immutable; every `var` is read and written only while `lock` is held.
final class StderrProgress: ProgressSink, @unchecked Sendable {
    /// Where text a plugin streams (`emit_text`) goes: stdout in text mode; stderr with `--json`,
    /// so that stdout stays one JSON document.
    let textToStderr: Bool
    init(textToStderr: Bool = false) { self.textToStderr = textToStderr }

    let terminal = isatty(STDERR_FILENO) != 0
    let enabled = ProcessInfo.processInfo.environment["MENAGERIE_PROGRESS"] != "off"
    /// Nanoseconds between plain lines when stderr is not a terminal.
    let interval: UInt64 = {
        let seconds = ProcessInfo.processInfo.environment["MENAGERIE_PROGRESS_INTERVAL"].flatMap(Double.init) ?? 30
        return UInt64(max(seconds, 0.1) * 1e9)
    }()
    let started = DispatchTime.now().uptimeNanoseconds
    let log = MetricsLog()
    /// Plugins may report from any thread.
    private let lock = NSLock()
    private var last: UInt64 = DispatchTime.now().uptimeNanoseconds
    /// The bar last drawn (terminal), redrawn below a metrics line.
    private var drawnLine: String?

    /// When the current bar (component + label) started, for its rate and ETA.
    private var barKey = ""
    private var barStarted: UInt64 = DispatchTime.now().uptimeNanoseconds

    /// A component's current part; `firstStarted` is when its first part began (the overall ETA's origin).
    struct Part {
        let component: String
        var index: Int64, count: Int64
        var name: String
        let firstStarted: UInt64
    }
    private var parts: [Part] = []

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    func phase(component: String, index: Int64, count: Int64, name: String) {
        lock.lock()
        defer { lock.unlock() }
        if let i = parts.firstIndex(where: { $0.component == component }) {
            parts[i].index = index
            parts[i].count = count
            parts[i].name = name
        } else {
            parts.append(Part(component: component, index: index, count: count, name: name, firstStarted: Self.now()))
        }
        guard enabled else { return }
        if !terminal {
            write("[\(component)] " + partText(parts.last!) + " after " + Self.duration(Double(Self.now() - started) / 1e9) + "\n")
        } else if drawnLine != nil {
            // The bar of the previous step is over; the part's own comes with its first progress.
            write("\r\u{1B}[K")
            drawnLine = nil
        }
    }

    func ended(component: String) {
        lock.lock()
        parts.removeAll { $0.component == component }
        lock.unlock()
    }

    func record(component: String, row: MetricsRow) {
        lock.lock()
        defer { lock.unlock() }
        let part = parts.last { $0.component == component } ?? parts.last
        let seconds = Double(Self.now() - started) / 1e9
        log.append(component: component, part: part.map { (Int($0.index), $0.name) }, row: row, elapsed: seconds)
        guard enabled else { return }
        var line = "[\(component)]" + (part.map { " " + partText($0) + " ·" } ?? "") + " \(row.unit) \(row.step)"
        for (name, value) in row.metrics { line += " · \(name) " + MetricsLog.format(value, digits: 5) }
        line += " · " + Self.duration(seconds)
        if terminal, let bar = drawnLine {
            write("\r\u{1B}[K" + line + "\n" + bar + "\u{1B}[K")
        } else {
            write(line + "\n")
        }
    }

    func progress(component: String, done: Int64, total: Int64, label: String) {
        guard enabled else { return }
        lock.lock()
        defer { lock.unlock() }
        let now = Self.now()
        let key = component + "\u{0}" + label
        if key != barKey || done == 0 {
            barKey = key
            barStarted = now
        }
        if terminal {
            guard now - last > 100_000_000 || done == total else { return }
        } else {
            guard now - last >= interval else { return }
        }
        last = now
        let fraction = total > 0 ? min(1, max(0, Double(done) / Double(total))) : nil
        // The part this report belongs to: the component's own, else the one it runs inside.
        let part = parts.last { $0.component == component } ?? parts.last
        var fields: [String] = []
        if let part { fields.append(partText(part)) }
        if !label.isEmpty { fields.append(label) }
        if let fraction { fields.append(String(format: "%.0f%%", fraction * 100) + " \(done)/\(total)") } else { fields.append("\(done)") }
        fields.append(Self.duration(Double(now - started) / 1e9) + " elapsed")
        let seconds = Double(now - barStarted) / 1e9
        if seconds > 0.5, done > 0 {
            let rate = Double(done) / seconds
            fields.append(rate >= 1 ? String(format: "%.1f/s", rate) : String(format: "%.1f s each", 1 / rate))
        }
        // The ETA of the whole run when it is in parts, else of this bar.
        var overall = fraction
        if let part, part.count > 0 {
            let within = part.component == component ? (fraction ?? 0) : 0
            let f = (Double(part.index - 1) + within) / Double(part.count)
            overall = min(1, max(0, f))
            let spent = Double(now - part.firstStarted) / 1e9
            if f > 0.001, spent > 0.5 { fields.append("ETA " + Self.duration(spent / f * (1 - f))) }
        } else if seconds > 0.5, done > 0, total > done {
            fields.append("ETA " + Self.duration(Double(total - done) / (Double(done) / seconds)))
        }
        if !terminal {
            // A log line: "[c] part 2/5 · net 2 · label 40% (20/50) after 12 s elapsed · 3.1/s · ETA 30 s".
            var line = "[\(component)]" + (part.map { " " + partText($0) + " ·" } ?? "") + (label.isEmpty ? "" : " " + label)
            line += fraction.map { String(format: " %.0f%% (%lld/%lld)", $0 * 100, done, total) } ?? " \(done)"
            let timing = fields.drop { !$0.hasSuffix(" elapsed") }
            write(line + " after " + timing.joined(separator: " · ") + "\n")
            return
        }
        var line = "\r\(component) "
        if let overall {
            let width = 30, filled = Int(overall * Double(width))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "] "
        }
        line += fields.joined(separator: " · ")
        drawnLine = line
        write(line + "\u{1B}[K")
    }

    /// "part 2/5 · net 2" (the name left out when empty).
    private func partText(_ p: Part) -> String {
        "part \(p.index)/\(p.count)" + (p.name.isEmpty ? "" : " · " + p.name)
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds)
        return s >= 3600 ? "\(s / 3600) h \(s % 3600 / 60) min" : s >= 60 ? "\(s / 60) min \(s % 60) s" : "\(s) s"
    }

    private func write(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }

    /// Streamed text, written as given, after the bar (if drawn) is cleared so the two do not mix.
    func text(component: String, _ text: String) {
        lock.lock()
        defer { lock.unlock() }
        if terminal, drawnLine != nil {
            write("\r\u{1B}[K")
            drawnLine = nil
        }
        (textToStderr ? FileHandle.standardError : FileHandle.standardOutput).write(Data(text.utf8))
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if drawnLine != nil { write("\r\u{1B}[K") }
        drawnLine = nil
    }
}
