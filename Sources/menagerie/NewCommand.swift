import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit

struct NewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new", abstract: "Scaffold a new plugin package from a template.",
        discussion: "Swift: `swift build` in the new folder, then MENAGERIE_PLUGIN_PATH=<folder>/.build/debug. C: `make`, then MENAGERIE_PLUGIN_PATH=<folder>.")

    @Argument(help: "The plugin and component name, e.g. my-metric.")
    var name: String

    @Option(name: .long, help: "The component kind: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var kind: String

    @Option(name: .long, help: "swift or c.")
    var lang = "swift"

    @Option(name: .long, help: "The folder in which to create NAME/.")
    var dir = "."

    func run() throws {
        guard let k = Kind(rawValue: kind) else {
            throw HostError(
                .usage,
                "unknown kind '\(kind)'.\(didYouMean(kind, in: Kind.allCases.map(\.rawValue))) Kinds: \(Kind.allCases.map(\.rawValue).joined(separator: ", "))."
            )
        }
        guard let language = Scaffold.Language(rawValue: lang) else { throw HostError(.usage, "--lang must be swift or c, not '\(lang)'") }
        // This file is Sources/menagerie/NewCommand.swift: three levels below the source root.
        let sourceRoot =
            ((((#filePath as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent as NSString)
                .deletingLastPathComponent)
        let (templates, sdk) = Scaffold.locate(sourceRoot: sourceRoot)
        let scaffold = try Scaffold(name: name, kind: k, language: language, templates: templates, sdk: sdk)
        let (path, files) = try scaffold.write(into: dir)
        print("created \(path):")
        for f in files { print("  \(f)") }
        switch language {
        case .swift:
            print("\nnext:\n  cd \(path) && swift build && swift test\n  MENAGERIE_PLUGIN_PATH=\(path)/.build/debug menagerie info \(name)")
        case .c:
            print("\nnext:\n  cd \(path) && make && make test\n  MENAGERIE_PLUGIN_PATH=\(path) menagerie info \(name)")
        }
    }
}
