// swift-tools-version: 6.0
// The Menagerie SDK as installed by `make install` into PREFIX/share/menagerie/sdk: the layers a
// plugin links (MenagerieKit and below), without the host, the CLI or the built-in plugins.
import PackageDescription

let package = Package(
    name: "MenagerieSDK",
    // MenagerieKit (which re-exports Tensors and Formats), and the layers a plugin may also import:
    // depend on the product of every module your plugin imports.
    products: [.library(name: "MenagerieKit", targets: ["MenagerieKit"]), .library(name: "NN", targets: ["NN"]),
               .library(name: "Imaging", targets: ["Imaging"]), .library(name: "Text", targets: ["Text"])],
    dependencies: [.package(url: "https://github.com/apple/swift-log", from: "1.6.0")],
    targets: [
        .target(name: "CMenagerie", path: "Sources/CMenagerie"),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas"),
        // oneDNN, loaded with dlopen at run time (builds without it).
        .target(name: "CDNNL", path: "Sources/CDNNL"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng"),
        .systemLibrary(name: "CTIFF", path: "Sources/CTIFF", pkgConfig: "libtiff-4"),
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libjpeg"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib"),
        .systemLibrary(name: "CFreeType", path: "Sources/CFreeType", pkgConfig: "freetype2"),
        .target(name: "Tensors", dependencies: ["CMenagerie", "COpenBLAS", "CDNNL"]),
        .target(name: "Formats", dependencies: ["Tensors", "CZlib"]),
        .target(name: "Imaging", dependencies: ["Tensors", "Formats", "CPNG", "CTIFF", "CJPEG", "CFreeType"]),
        .target(name: "NN", dependencies: ["Tensors", "Formats"]),
        .target(name: "Text", dependencies: ["Formats", "CZlib"]),
        .target(name: "MenagerieKit", dependencies: ["CMenagerie", "Tensors", "Formats", .product(name: "Logging", package: "swift-log")]),
    ]
)
