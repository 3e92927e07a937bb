import Foundation

/// Receives what plugins report while they run (the CLI draws a bar on stderr, prints metric lines
/// and keeps them for log.csv).
public protocol ProgressSink: AnyObject, Sendable {
    func progress(component: String, done: Int64, total: Int64, label: String)
    /// The component is now in part `index` (1-based) of `count` (ABI 1.1 `phase`).
    func phase(component: String, index: Int64, count: Int64, name: String)
    /// One row of metrics (ABI 1.1 `record`), already checked by `MetricsRow.checked`.
    func record(component: String, row: MetricsRow)
    /// The component's call returned: its part, if any, is over.
    func ended(component: String)
    /// Text the component streams for the user (ABI 1.2 `emit_text`), as given.
    func text(component: String, _ text: String)
}

extension ProgressSink {
    public func phase(component: String, index: Int64, count: Int64, name: String) {}
    public func record(component: String, row: MetricsRow) {}
    public func ended(component: String) {}
    public func text(component: String, _ text: String) {}
}

/// One `record` call of a plugin, checked: at most `maxMetrics` metrics, names of at most 64
/// characters made of letters, digits, `_`, `.`, `-` (others become `_`), unique; a step ≥ 0. A
/// value may be NaN or infinite (a diverged loss is worth seeing); log.csv writes it as `nan`/`inf`.
public struct MetricsRow: Sendable, Equatable {
    public let unit: String
    public let step: Int64
    public let metrics: [(name: String, value: Double)]

    public static let maxMetrics = 256

    public static func == (a: MetricsRow, b: MetricsRow) -> Bool {
        a.unit == b.unit && a.step == b.step && a.metrics.map(\.name) == b.metrics.map(\.name)
            && zip(a.metrics, b.metrics).allSatisfy { $0.value == $1.value || ($0.value.isNaN && $1.value.isNaN) }
    }

    /// nil (the row is dropped) when the plugin's numbers cannot make a row.
    public static func checked(unit: String?, step: Int64, names: [String?], values: [Double]) -> MetricsRow? {
        guard step >= 0, !names.isEmpty, names.count == values.count, names.count <= maxMetrics else { return nil }
        var seen = Set<String>()
        var metrics: [(String, Double)] = []
        for (raw, value) in zip(names, values) {
            guard let raw, !raw.isEmpty else { return nil }
            let name = String(
                String(
                    raw.unicodeScalars.map { c -> Character in
                        c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || "_.-".unicodeScalars.contains(c)) ? Character(c) : "_"
                    }
                ).prefix(64))
            guard seen.insert(name).inserted else { return nil }
            metrics.append((name, value))
        }
        let u = unit.map { String($0.unicodeScalars.filter { $0.isASCII && $0.properties.isAlphabetic }.prefix(16).map(Character.init)) } ?? ""
        return MetricsRow(unit: u.isEmpty ? "step" : u, step: step, metrics: metrics)
    }
}
