import Foundation
import TestSupport
import Testing

/// Package.swift tells the truth: every Swift target declares exactly the modules its files import
/// (no module compiled in only through another target's unused dependency, and no dependency left
/// unused). Read from `swift package dump-package` and the import headers of the sources.
@Suite struct PackageDependencyTests {
    /// Toolchain modules a target may import without declaring them.
    static let toolchain: Set<String> = [
        "Foundation", "FoundationEssentials", "FoundationXML", "Glibc", "Musl", "Darwin", "Dispatch",
        "Synchronization", "Testing", "XCTest", "_Concurrency",
    ]

    struct Target {
        var name: String
        var path: String
        var dependencies: Set<String>
        var exclude: [String]
    }

    func targets() throws -> [Target] {
        // Its own scratch folder: `swift test` holds the lock of .build while this runs.
        let scratch = TempDir("dump-package")
        let r = try runProcess("/usr/bin/env", ["swift", "package", "--scratch-path", scratch.path, "dump-package"], directory: TestPaths.sourceRoot)
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        return (json["targets"] as? [[String: Any]] ?? []).compactMap { t in
            guard let name = t["name"] as? String, let type = t["type"] as? String, type != "system" else { return nil }
            let deps = (t["dependencies"] as? [[String: Any]] ?? []).compactMap { d in (d.values.first as? [Any])?.first as? String }
            let path = t["path"] as? String ?? (type == "test" ? "Tests/" : "Sources/") + name
            return Target(name: name, path: path, dependencies: Set(deps), exclude: t["exclude"] as? [String] ?? [])
        }
    }

    /// The modules named by the import header of a Swift file (the imports before the first
    /// declaration: an `import` inside a string literal further down is not one).
    static func imports(_ source: String) -> Set<String> {
        var out: Set<String> = []
        for raw in source.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("//") || line.hasPrefix("#if") || line.hasPrefix("#else") || line.hasPrefix("#endif") { continue }
            guard
                let m = line.firstMatch(
                    of:
                        #/^(?:@\w+(?:\([^)]*\))?\s+)*(?:public\s+|internal\s+|package\s+)?import\s+(?:(?:struct|class|enum|func|protocol|typealias|var|let)\s+)?(\w+)/#
                )
            else { break }
            out.insert(String(m.1))
        }
        return out
    }

    @Test func everyTargetDeclaresExactlyWhatItImports() throws {
        let all = try targets()
        let nested = Set(all.map(\.path))
        var problems: [String] = []
        for t in all {
            let root = TestPaths.sourceRoot + "/" + t.path
            guard let files = FileManager.default.enumerator(atPath: root)?.allObjects as? [String] else { continue }
            let swiftFiles = files.filter { f in
                f.hasSuffix(".swift") && !t.exclude.contains { f == $0 || f.hasPrefix($0 + "/") }
                    && !nested.contains { $0 != t.path && (t.path + "/" + f).hasPrefix($0 + "/") }
            }
            guard !swiftFiles.isEmpty else { continue } // a C target
            var imported: Set<String> = []
            for f in swiftFiles { imported.formUnion(Self.imports(try String(contentsOfFile: root + "/" + f, encoding: .utf8))) }
            imported.subtract(Self.toolchain)
            let missing = imported.subtracting(t.dependencies), unused = t.dependencies.subtracting(imported)
            if !missing.isEmpty { problems.append("\(t.name) imports \(missing.sorted()) without declaring them") }
            if !unused.isEmpty { problems.append("\(t.name) declares \(unused.sorted()) but imports none of them") }
        }
        #expect(problems.isEmpty, "Package.swift: \(problems.joined(separator: "; "))")
    }

    /// The host knows no model (ARCHITECTURE.md): the CLI neither declares nor imports the model
    /// layers; benchmarks of models live in the plugins that own them.
    @Test func theCLIDependsOnNoModelLayer() throws {
        let cli = try #require(try targets().first { $0.name == "menagerie" })
        #expect(cli.dependencies.isDisjoint(with: ["NN", "Imaging", "Text"]), "menagerie depends on \(cli.dependencies.sorted())")
        let root = TestPaths.sourceRoot + "/" + cli.path
        for f in (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []) where f.hasSuffix(".swift") {
            let imported = Self.imports(try String(contentsOfFile: root + "/" + f, encoding: .utf8))
            #expect(imported.isDisjoint(with: ["NN", "Imaging", "Text"]), "\(cli.path)/\(f) imports \(imported.sorted())")
        }
    }

    @Test func theImportHeaderStopsAtTheFirstDeclaration() {
        let source =
            "// c\nimport Foundation\n@testable import NN\n#if canImport(FoundationXML)\nimport FoundationXML\n#endif\n\nlet s = \"\"\"\nimport json\n\"\"\"\nimport Late\n"
        #expect(Self.imports(source) == ["Foundation", "NN", "FoundationXML"])
    }
}
