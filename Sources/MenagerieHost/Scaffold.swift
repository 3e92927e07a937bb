import Foundation
import MenagerieKit

/// `menagerie new`: writes a standalone plugin package from `Templates/` that builds with one
/// `swift build` (Swift) or `make` (C) and loads on the first try.
public struct Scaffold: Sendable {
    public enum Language: String, CaseIterable, Sendable { case swift, c }

    public let name: String
    public let kind: Kind
    public let language: Language
    public let templates: String
    public let sdk: String

    /// Every template, its kind's example and what it computes (for the generated page).
    static let examples: [Kind: (summary: String, formula: String, run: String)] = [
        .metric: (
            "mean absolute and root-mean-square error", "MAE = (1/n) Σ|p − t|, RMSE = √((1/n) Σ(p − t)²), skipping targets equal to `ignore_value`.",
            "menagerie run NAME --input prediction=p.npy --input target=t.npy"
        ),
        .dataset: (
            "seeded Gaussian blobs", "`classes` clusters with centres on a circle of radius 3, N(centre, spread²) noise; `describe` and `batch`.",
            "menagerie run NAME batch --set samples=90 --out out"
        ),
        .backbone: (
            "a seeded Gaussian random projection", "e = x·R/√k with R ~ N(0, 1) (Johnson–Lindenstrauss).",
            "menagerie run NAME --input input=x.npy --set dim=8"
        ),
        .objective: (
            "softmax cross-entropy with its gradient", "L = −(1/N) Σ log softmax(z_i)[y_i]; ∂L/∂z = (softmax(z) − onehot(y))/N, with optional label smoothing.",
            "menagerie run NAME --input logits=z.npy --input labels=y.npy"
        ),
        .distiller: (
            "class means as a one-image-per-class distilled set", "x̂_c = mean of the samples of class c.",
            "menagerie run NAME --input data=x.npy --input labels=y.npy --out out"
        ),
        .explainer: (
            "gradient × input saliency of a linear classifier", "S = |W_t ⊙ x| / max, t = the target or predicted class.",
            "menagerie run NAME --input weights=w.npy --input input=x.npy"
        ),
        .segmenter: (
            "Otsu thresholding", "The threshold maximising the between-class variance of the gray-level histogram (Otsu 1979).",
            "menagerie run NAME --input image=gray.png --out out"
        ),
        .detector: (
            "threshold segments of a 1-D score", "Maximal runs with score > threshold, at least `min_length` long, scored by their mean.",
            "menagerie run NAME --input scores=s.npy"
        ),
        .generator: (
            "samples of a diagonal Gaussian", "x ~ N(mean, diag(std²)), seeded by --seed.",
            "menagerie run NAME --set count=4 --seed 1"
        ),
    ]

    public init(name: String, kind: Kind, language: Language, templates: String, sdk: String) throws {
        guard (try? #/^[a-z][a-z0-9-]*$/#.wholeMatch(in: name)) != nil, !name.hasSuffix("-") else {
            throw HostError(.usage, "plugin name '\(name)' must start with a letter and hold lower-case letters, digits and '-' (e.g. my-metric)")
        }
        self.name = name
        self.kind = kind
        self.language = language
        self.templates = templates
        self.sdk = sdk
    }

    /// "my-metric" → "MyMetric".
    public var module: String { name.split(separator: "-").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined() }
    /// "my-metric" → "my_metric".
    public var soName: String { name.replacingOccurrences(of: "-", with: "_") }

    var substitutions: [String: String] {
        let example = Scaffold.examples[kind]!
        return [
            "NAME": name, "MODULE": module, "SONAME": soName, "KIND": kind.rawValue, "OPERATION": kind.primaryOperation,
            "SUMMARY": language == .c ? "Summary statistics (example \(kind.rawValue))" : example.summary.prefix(1).uppercased() + example.summary.dropFirst(),
            "FORMULA": language == .c ? "Mean, population standard deviation, minimum and maximum of `x`, and z = (x − mean)/std." : example.formula,
            "RUN_EXAMPLE": language == .c ? "menagerie run \(name) --input x=x.npy" : example.run.replacingOccurrences(of: "NAME", with: name),
            "AUTHOR": ProcessInfo.processInfo.environment["USER"] ?? "you",
            "SDK_PATH": sdk, "SDK_PACKAGE": (sdk as NSString).lastPathComponent.lowercased(),
            "INCLUDE_DIR": sdk + "/Sources/CMenagerie/include",
        ]
    }

    func render(_ template: String) throws -> String {
        let path = templates + "/" + template
        guard var text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HostError(.failed, "template \(path) is missing: reinstall menagerie or set MENAGERIE_TEMPLATES")
        }
        for (k, v) in substitutions { text = text.replacingOccurrences(of: "{{\(k)}}", with: v) }
        return text
    }

    /// Writes the package into `parent/name` and returns its path and the files written.
    public func write(into parent: String) throws -> (path: String, files: [String]) {
        let root = (parent as NSString).appendingPathComponent(name)
        if let contents = try? FileManager.default.contentsOfDirectory(atPath: root), !contents.isEmpty {
            throw HostError(.usage, "\(root) exists and is not empty: choose another --dir or name")
        }
        let files: [(String, String)]
        switch language {
        case .swift:
            files = [
                ("Package.swift", "swift/Package.swift.tmpl"), (".gitignore", "swift/gitignore.tmpl"),
                ("Sources/\(module)/Plugin.swift", "swift/Plugin.swift.tmpl"),
                ("Sources/\(module)/\(module)Component.swift", "swift/kinds/\(kind.rawValue).swift.tmpl"),
                ("Tests/\(module)Tests/\(module)Tests.swift", "swift/kinds/\(kind.rawValue).test.tmpl"),
                ("Docs/\(name).md", "swift/Doc.md.tmpl"),
            ]
        case .c:
            files = [
                ("\(soName).c", "c/plugin.c.tmpl"), ("test_\(soName).c", "c/test.c.tmpl"), ("Makefile", "c/Makefile.tmpl"),
                ("Docs/\(name).md", "c/Doc.md.tmpl"),
            ]
        }
        let rendered = try files.map { ($0.0, try render($0.1)) }
        for (rel, text) in rendered {
            let path = root + "/" + rel
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        }
        return (root, rendered.map(\.0))
    }

    /// Where templates and the SDK are: `$MENAGERIE_TEMPLATES`/`$MENAGERIE_SDK`, else an installed
    /// `PREFIX/share/menagerie/{templates,sdk}` beside `PREFIX/bin/menagerie`, else the source checkout
    /// this executable was built from.
    public static func locate(executable: String = SearchPath.executablePath, sourceRoot: String) -> (templates: String, sdk: String) {
        let env = ProcessInfo.processInfo.environment
        let share = (((executable as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent("share/menagerie")
        let installed = FileManager.default.fileExists(atPath: share + "/sdk/Package.swift")
        let templates = env["MENAGERIE_TEMPLATES"] ?? (installed ? share + "/templates" : sourceRoot + "/Templates")
        let sdk = env["MENAGERIE_SDK"] ?? (installed ? share + "/sdk" : sourceRoot)
        return (templates, sdk)
    }
}
