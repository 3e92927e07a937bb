// swift-tools-version: 6.0
// libFuzzer driver for Menagerie's file parsers (`make fuzz`, Docs/reliability.md). Built only with
// `-sanitize=fuzzer,address`; the targets themselves live in the main package (Sources/FuzzTargets)
// so that `make test` replays the committed corpora (Fuzz/Corpus/<target>/) without a sanitizer.
import PackageDescription

let package = Package(
    name: "MenagerieFuzz",
    dependencies: [.package(name: "Menagerie", path: "..")],
    targets: [
        .target(name: "CFuzzer", path: "Sources/CFuzzer"),
        .executableTarget(
            name: "menagerie-fuzz", dependencies: ["CFuzzer", .product(name: "FuzzTargets", package: "Menagerie")],
            path: "Sources/menagerie-fuzz",
            // No Swift top-level main: `menagerie_fuzz_main` (what SwiftPM makes main on
            // Linux) runs libFuzzer's driver.
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
)
