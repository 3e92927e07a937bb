// swift-tools-version: 6.0
// Menagerie: a host runtime that loads machine-learning research methods as `.so` plugins
// across a versioned C ABI (Sources/CMenagerie/include/menagerie.h).
//
// Layers (nothing imports upward, no plugin imports another plugin or the host):
//   menagerie (CLI) → MenagerieHost → MenagerieKit (SDK) → Formats → Tensors → C shims; the CLI imports no
//   model layer (NN, Imaging, Text): benchmarks live in the plugins that own their workloads
//   plugins (one per method) → MenagerieKit + the layers they use (NN · Imaging · Text · Formats · Tensors,
//   and DistillationKit, shared by the distillation plugins); each target
//   declares exactly the modules it imports (Tests/CLITests/PackageDependencyTests.swift checks it)
import PackageDescription

/// Every method is one dynamic library built from `Plugins/<Name>`; add new methods here. Files a
/// plugin ships (weights of an embedded model) go in its `Resources/` folder and are copied next to
/// the libraries as `Menagerie_<Name>.resources/`.
/// `uses`: the layers a plugin imports besides MenagerieKit (Package.swift declares exactly what each
/// target imports; `PackageDependencyTests` checks it).
let swiftPlugins: [(product: String, path: String, resources: [String], uses: [String])] = [
    ("ClassificationMetrics", "Plugins/ClassificationMetrics", [], ["Imaging", "Tensors"]),
    ("SyntheticTreeOfLife", "Plugins/SyntheticTreeOfLife", [], ["Imaging", "Tensors"]),
    ("DatasetAdapters", "Plugins/DatasetAdapters", [], ["Formats", "Imaging", "Tensors"]),
    // The explainers: base CAMs, Finer-CAM and Prompt-CAM (each calls the others only through the
    // host), and the classifiers they explain (the embedded one ships here); shared code is `Vision`.
    ("CAM", "Plugins/CAM", [], ["Formats", "Imaging", "NN", "Tensors", "Vision"]),
    ("FinerCAM", "Plugins/FinerCAM", [], ["Formats", "Imaging", "NN", "Tensors", "Vision"]),
    ("PromptCAM", "Plugins/PromptCAM", [], ["Formats", "Imaging", "NN", "Tensors", "Vision"]),
    ("Classifiers", "Plugins/Classifiers", ["Resources/vit-tol"], ["Formats", "Imaging", "NN", "Tensors", "Vision"]),
    (
        "BioCLIP2", "Plugins/BioCLIP2", ["Resources/bpe_simple_vocab_16e6.txt.gz", "Resources/bioclip2-tol-tiny"],
        ["Formats", "Imaging", "NN", "Tensors", "Text"]
    ),
    (
        "CoreInfer", "Plugins/CoreInfer", ["Resources/corpus.json", "Resources/tiny-llama", "Resources/tasks", "Resources/spm-tokenizer"],
        ["Formats", "Imaging", "NN", "Tensors", "Text"]
    ),
    ("FasterTAD", "Plugins/FasterTAD", ["Resources/faster-tad-synthetic"], ["Formats", "Imaging", "NN", "Tensors"]),
    ("LatentDiffusion", "Plugins/LatentDiffusion", ["Resources/ldm-tol"], ["DistillationKit", "Formats", "Imaging", "NN", "Tensors"]),
    ("D3HR", "Plugins/D3HR", [], ["DistillationKit", "Formats", "Imaging", "NN", "Tensors"]),
    (
        "Concord", "Plugins/Concord", ["Resources/concepts-synthetic-tol.json", "Resources/concepts-cmnist-dd.json"],
        ["DistillationKit", "Formats", "NN", "Tensors"]
    ),
    ("DatasetDistillation", "Plugins/DatasetDistillation", [], ["DistillationKit", "Formats", "Imaging", "NN", "Tensors"]),
    ("SAM2", "Plugins/SAM2", ["Resources/sam2-tiny"], ["Formats", "Imaging", "NN", "Tensors"]),
    ("SST", "Plugins/SST", [], ["Formats", "Imaging", "NN", "Tensors"]),
]

let package = Package(
    name: "Menagerie",
    products: [
        .executable(name: "menagerie", targets: ["menagerie"]),
        // The SDK a plugin links statically (each plugin keeps its own copy), and the layers a plugin
        // may use besides it: depend on the products of the modules you import.
        .library(name: "MenagerieKit", targets: ["MenagerieKit"]),
        .library(name: "NN", targets: ["NN"]),
        .library(name: "Imaging", targets: ["Imaging"]),
        .library(name: "Text", targets: ["Text"]),
        // What the distillation plugins share: real data through the host, the distilled-set file, the
        // client of a diffusion backbone on the host.
        .library(name: "DistillationKit", targets: ["DistillationKit"]),
        .library(name: "Vision", targets: ["Vision"]),
        // The C plugin: proof that the header alone is enough.
        .library(name: "SegmentationMetrics", type: .dynamic, targets: ["SegmentationMetrics"]),
        // The file parsers as fuzz targets, for the libFuzzer driver in Fuzz/ (`make fuzz`).
        .library(name: "FuzzTargets", targets: ["FuzzTargets"]),
    ] + swiftPlugins.map { .library(name: $0.product, type: .dynamic, targets: [$0.product + "Entry"]) },
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // C: the ABI header and the system libraries.
        .target(name: "CMenagerie", path: "Sources/CMenagerie"),
        // The host's fd passing and shared memory (isolated invocations).
        .target(name: "CHostSupport", path: "Sources/CHostSupport"),
        // Linked into the `menagerie` executable only: settings applied before its libraries start.
        .target(name: "CLaunch", path: "Sources/CLaunch"),
        // oneDNN's matmul, loaded with dlopen at run time (never linked): builds and runs without it.
        .target(name: "CDNNL", path: "Sources/CDNNL"),
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]),
        .systemLibrary(
            name: "CTIFF", path: "Sources/CTIFF", pkgConfig: "libtiff-4",
            providers: [.apt(["libtiff-dev"])]),
        .systemLibrary(
            name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(
            name: "CFFI", path: "Sources/CFFI", pkgConfig: "libffi",
            providers: [.apt(["libffi-dev"])]),
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(
            name: "CFreeType", path: "Sources/CFreeType", pkgConfig: "freetype2",
            providers: [.apt(["libfreetype-dev", "libfontconfig-dev", "fonts-dejavu-core"])]),
        .systemLibrary(
            name: "CCrypto", path: "Sources/CCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),

        // Numerical and file layers.
        .target(name: "Tensors", dependencies: ["CMenagerie", "COpenBLAS", "CDNNL"]),
        .target(name: "Formats", dependencies: ["Tensors", "CZlib"]),
        .target(name: "Imaging", dependencies: ["Tensors", "Formats", "CPNG", "CTIFF", "CJPEG", "CFreeType"]),
        .target(name: "NN", dependencies: ["Tensors", "Formats"]),
        .target(name: "Text", dependencies: ["Formats", "CZlib"]),
        // Shared by the distillation plugins (each links its own copy, as of MenagerieKit).
        .target(name: "DistillationKit", dependencies: ["MenagerieKit", "Formats", "Imaging", "NN", "Tensors"]),
        // What the explainer plugins share: timm ViT and ConvNet classifiers with their preprocessing,
        // the CAM classifier protocol, map scaling, overlays and the saliency metrics.
        .target(name: "Vision", dependencies: ["MenagerieKit", "NN", "Imaging", "Formats", "Tensors"]),

        // The SDK and the host.
        .target(name: "MenagerieKit", dependencies: ["CMenagerie", "Tensors", "Formats", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "MenagerieHost",
            dependencies: [
                "MenagerieKit", "CMenagerie", "CHostSupport", "CCrypto", "CFFI", "Formats", "Imaging", "Tensors",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "menagerie",
            dependencies: [
                "MenagerieHost", "MenagerieKit", "Formats", "Tensors", "COpenBLAS", "CLaunch",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // Built-in plugins.
        .target(
            name: "SegmentationMetrics", dependencies: ["CMenagerie"], path: "Plugins/SegmentationMetrics",
            linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("m")]),

        // The parsers of outside files as fuzz targets (a test tool: Fuzz/ drives it with libFuzzer,
        // FuzzReplayTests replays the committed corpora).
        .target(name: "FuzzTargets", dependencies: ["Formats", "Imaging", "Text", "NN", "MenagerieKit", "DatasetAdapters", "FasterTAD"]),

        // Tests.
        .target(name: "TestSupport", dependencies: [], path: "Tests/TestSupport"),
        .testTarget(name: "MenagerieKitTests", dependencies: ["MenagerieKit", "Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "FuzzReplayTests", dependencies: ["FuzzTargets", "TestSupport"]),
        .testTarget(name: "CheckpointTests", dependencies: ["Formats", "NN", "Tensors", "Imaging", "CCrypto", "TestSupport"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "Imaging", "Formats", "Text", "Tensors", "TestSupport"]),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors"]),
        .testTarget(name: "TextTests", dependencies: ["Text", "TestSupport"]),
        .testTarget(name: "MenagerieHostTests", dependencies: ["MenagerieHost", "MenagerieKit", "Formats", "Tensors", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport"]),
        .testTarget(name: "ClassificationMetricsTests", dependencies: ["ClassificationMetrics", "TestSupport"]),
        .testTarget(name: "SegmentationMetricsTests", dependencies: ["TestSupport"]),
        .testTarget(name: "SyntheticTreeOfLifeTests", dependencies: ["SyntheticTreeOfLife", "Formats", "Imaging", "TestSupport"]),
        .testTarget(name: "DatasetAdaptersTests", dependencies: ["DatasetAdapters", "Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "CAMTests", dependencies: ["CAM", "Vision", "NN", "Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "FinerCAMTests", dependencies: ["CAM", "FinerCAM", "Vision", "Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "PromptCAMTests", dependencies: ["PromptCAM", "Vision", "NN", "Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "ClassifiersTests", dependencies: ["Vision", "Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "CoreInferTests", dependencies: ["CoreInfer", "NN", "Text", "Formats", "Tensors", "TestSupport"]),
        .testTarget(name: "BioCLIP2Tests", dependencies: ["BioCLIP2", "NN", "Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "FasterTADTests", dependencies: ["FasterTAD", "Formats", "TestSupport"]),
        .testTarget(name: "SAM2Tests", dependencies: ["Formats", "Imaging", "Tensors", "TestSupport"]),
        .testTarget(name: "SSTTests", dependencies: ["SST", "Formats", "Imaging", "NN", "Tensors", "TestSupport"]),
        .testTarget(
            name: "DistillationTests",
            dependencies: [
                "DatasetDistillation", "LatentDiffusion", "D3HR", "Concord", "DistillationKit", "NN", "Tensors", "Formats", "Imaging", "MenagerieKit",
                "TestSupport",
            ]),
    ]
        + swiftPlugins.flatMap { plugin -> [Target] in
            [
                // The method itself (tests link it), and the entry symbol alone (the .so links both).
                .target(
                    name: plugin.product, dependencies: ["MenagerieKit"] + plugin.uses.map { .target(name: $0) }, path: plugin.path, exclude: ["Entry"],
                    resources: plugin.resources.map { .copy($0) }),
                .target(name: plugin.product + "Entry", dependencies: ["MenagerieKit", .target(name: plugin.product)], path: plugin.path + "/Entry"),
            ]
        }
)
