import Foundation
import MenagerieKit

/// The benchmarks plugins declare in their metadata (`"benchmarks"` of a component), and the
/// checks on what a plugin reports for them. `menagerie bench` runs them through the reserved
/// operation `benchmark` (Docs/ABI.md, Docs/benchmarks.md).
public enum PluginBenchmarks {
    public struct Declared: Sendable {
        public let plugin: RegistryEntry
        public let component: String
        public let spec: BenchmarkSpec
    }

    /// Every declared benchmark of the usable plugins, in registry order; a name declared again by a
    /// later plugin is left out (the first on the search path wins, as for component ids).
    public static func declared(in registry: Registry) -> (benchmarks: [Declared], shadowed: [Declared]) {
        var seen = Set<String>()
        var out: [Declared] = [], shadowed: [Declared] = []
        for (entry, component) in registry.components {
            for spec in component.benchmarks ?? [] {
                let d = Declared(plugin: entry, component: component.id, spec: spec)
                if seen.insert(spec.name).inserted { out.append(d) } else { shadowed.append(d) }
            }
        }
        return (out, shadowed)
    }

    /// The options of one `benchmark` call.
    public static func request(names: [String], repeats: Int) -> JSONValue {
        ["names": .array(names.map { .string($0) }), "repeats": .number(Double(repeats))]
    }

    /// Reads the result of a `benchmark` call of `component` (plugin `plugin`) that asked for
    /// `asked`: `{"records": [{"name", "unit", "samples", "target"?, "ratio_target"?, "reference"?}],
    /// "notes"?: [String]}`, or, for one benchmark asked, `{"samples": [...], "unit"?: …}`. Every
    /// sample must be a finite number ≥ 0; a record must be of a name asked for. A name asked for and
    /// not reported is returned in `missing` (a workload the plugin could not run here). A bad record
    /// is left out and described in `errors` (naming the plugin); the good ones are kept.
    public static func parse(_ result: JSONValue, asked: [Declared], component: String, plugin: String) throws
        -> (records: [BenchmarkRecord], notes: [String], missing: [String], errors: [String])
    {
        func bad(_ what: String) -> HostError {
            HostError(.failed, "plugin '\(plugin)', component '\(component)': bad benchmark result: \(what)")
        }
        guard case .object(let top) = result else { throw bad("not a JSON object") }
        var items: [JSONValue]
        if let list = top["records"] {
            guard let a = list.arrayValue else { throw bad("\"records\" is not an array") }
            items = a
        } else if top["samples"] != nil, asked.count == 1 {
            var o = top
            o["name"] = .string(asked[0].spec.name)
            items = [.object(o)]
        } else {
            throw bad("no \"records\" array (nor \"samples\" for the one benchmark asked)")
        }
        var records: [BenchmarkRecord] = [], errors: [String] = [], seen = Set<String>()
        for item in items {
            do {
                guard let name = item["name"]?.stringValue else { throw bad("a record without a \"name\"") }
                guard let spec = asked.first(where: { $0.spec.name == name })?.spec else {
                    throw bad("'\(name)' was not asked for (asked: \(asked.map(\.spec.name).joined(separator: ", ")))")
                }
                guard seen.insert(name).inserted else { throw bad("'\(name)' reported twice") }
                guard let values = item["samples"]?.arrayValue else { throw bad("'\(name)' has no \"samples\" array") }
                guard !values.isEmpty else { throw bad("'\(name)' has no samples") }
                var samples: [Double] = []
                for (i, v) in values.enumerated() {
                    guard let x = v.doubleValue, x.isFinite else {
                        throw bad("sample \(i + 1) of '\(name)' is \(v.compactText), not a finite number (NaN travels as null)")
                    }
                    guard x >= 0 else { throw bad("sample \(i + 1) of '\(name)' is negative (\(x))") }
                    samples.append(x)
                }
                var unit = spec.unit
                if let u = item["unit"] {
                    guard let s = u.stringValue, !s.isEmpty else { throw bad("'\(name)' has a unit that is not a non-empty string") }
                    unit = s
                }
                var r = BenchmarkRecord(name: name, unit: unit, samples: samples, target: item["target"]?.doubleValue ?? spec.target)
                r.ratioTarget = item["ratio_target"]?.doubleValue ?? spec.ratioTarget
                if let ref = item["reference"], ref != .null {
                    guard let tool = ref["tool"]?.stringValue, let m = ref["median"]?.doubleValue, m.isFinite, m > 0 else {
                        throw bad("'\(name)' has a reference that is not {\"tool\": string, \"median\": number > 0}")
                    }
                    r.reference = .init(tool: tool, median: m)
                }
                records.append(r)
            } catch {
                errors.append("\(error)")
            }
        }
        let notes = (top["notes"]?.arrayValue ?? []).compactMap(\.stringValue)
        let missing = asked.map(\.spec.name).filter { n in !seen.contains(n) }
        return (records, notes, missing, errors)
    }
}
