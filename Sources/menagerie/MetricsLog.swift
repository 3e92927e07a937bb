import Foundation
import MenagerieHost
import Synchronization

/// The metric rows a run recorded (`host.record`), written as log.csv in `--out`:
/// `part,part_name,component,<unit>,<metric>…,elapsed_s`, one row per record, metric columns in the
/// order first seen (a cell is empty when that row did not record the metric). `part` is the
/// 1-based part (`host.phase`) or empty; `<unit>` is the rows' unit (`epoch`, `step`, `iteration`),
/// or two columns `unit,step` when the rows use several.
final class MetricsLog: Sendable {
    struct Row: Sendable {
        let component: String
        let part: (index: Int, name: String)?
        let row: MetricsRow
        let elapsed: Double
    }
    private let recorded = Mutex<[Row]>([])

    var isEmpty: Bool { recorded.withLock { $0.isEmpty } }

    func append(component: String, part: (Int, String)?, row: MetricsRow, elapsed: Double) {
        let r = Row(component: component, part: part, row: row, elapsed: elapsed)
        recorded.withLock { $0.append(r) }
    }

    /// The CSV text.
    func csv() -> String {
        let rows = recorded.withLock { $0 }
        var names: [String] = []
        for r in rows { for m in r.row.metrics.map(\.name) where !names.contains(m) { names.append(m) } }
        // One unit for every row names the step column ("epoch"); mixed units get a column of their own.
        let units = Set(rows.map(\.row.unit))
        let stepColumns = units.count == 1 ? [units.first!] : ["unit", "step"]
        var text = (["part", "part_name", "component"] + stepColumns + names + ["elapsed_s"]).joined(separator: ",") + "\n"
        for r in rows {
            var cells = [r.part.map { String($0.index) } ?? "", Self.quoted(r.part?.name ?? ""), r.component]
            cells += (units.count == 1 ? [] : [r.row.unit]) + [String(r.row.step)]
            let values = Dictionary(r.row.metrics.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
            cells += names.map { values[$0].map { Self.format($0, digits: 9) } ?? "" }
            cells.append(String(format: "%.3f", r.elapsed))
            text += cells.joined(separator: ",") + "\n"
        }
        return text
    }

    /// A number for a person or a CSV: `%g` with `digits` significant digits; `nan`, `inf`, `-inf`.
    static func format(_ v: Double, digits: Int) -> String {
        if v.isNaN { return "nan" }
        if v.isInfinite { return v > 0 ? "inf" : "-inf" }
        return String(format: "%.\(digits)g", v)
    }

    /// A CSV field, quoted when it holds a comma, quote or line break.
    static func quoted(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0.isNewline }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
