import Foundation
import Imaging
import MenagerieKit
import Tensors

// The tours: each adapter writes a small dataset in its own format into the scratch folder (there
// is no real data to ship), reads it back through the same code a user's files go through, and
// shows what it read as a grid with the labels, plus the files themselves.

/// Reads the first `count` items of `split` and shows them as a grid captioned with their class
/// names, titled with what was read.
func sheet(_ source: ItemSource, split: Int, count: Int, columns: Int, title: String) throws -> ImageGrid {
    var tiles: [Image] = [], captions: [String] = []
    let s = source.size
    for i in 0..<min(count, source.count(split: split)) {
        let item = try source.item(split: split, index: i)
        var px = [UInt8](repeating: 0, count: s * s * 3)
        for p in 0..<(s * s) {
            for c in 0..<3 { px[3 * p + c] = UInt8(min(255, max(0, item.pixels[(source.channels == 1 ? 0 : c) * s * s + p] * 255))) }
        }
        tiles.append(Image(width: s, height: s, channels: 3, pixels: px))
        captions.append(source.classNames[item.label])
    }
    return ImageGrid(title: title, images: tiles, columns: columns, captions: captions, tileSize: 64)
}

/// An 8-bit RGB image of a filled shape: class 0 squares, 1 discs, 2 triangles, in a class colour,
/// at a seeded position and size.
func shapeImage(kind: Int, size s: Int, rng: inout SeededGenerator) -> [UInt8] {
    let colours: [(Double, Double, Double)] = [(220, 60, 50), (50, 150, 230), (60, 190, 90)]
    var px = [UInt8](repeating: 0, count: s * s * 3)
    let cx = Double(s) * (0.35 + 0.3 * rng.nextUniform()), cy = Double(s) * (0.35 + 0.3 * rng.nextUniform())
    let r = Double(s) * (0.18 + 0.12 * rng.nextUniform())
    for y in 0..<s {
        for x in 0..<s {
            let dx = Double(x) + 0.5 - cx, dy = Double(y) + 0.5 - cy
            let inside: Bool
            switch kind {
            case 0: inside = abs(dx) < r && abs(dy) < r
            case 1: inside = dx * dx + dy * dy < r * r
            default: inside = dy > -r && dy < r && abs(dx) < (dy + r) / 2
            }
            let c = inside ? colours[kind] : (235, 230, 220)
            let i = 3 * (y * s + x)
            (px[i], px[i + 1], px[i + 2]) = (UInt8(c.0), UInt8(c.1), UInt8(c.2))
        }
    }
    return px
}

extension ImageFolderComponent {
    static var inTour: Bool { true }

    func tour(_ request: Request<Options>) throws -> Response {
        let dir = request.host.scratchDirectory
        let root = dir + "/shapes"
        var rng = SeededGenerator(seed: request.host.seed)
        var csv = "label,kingdom,phylum,class,order,family,genus,species,common_name\n"
        for (k, name) in ["square", "disc", "triangle"].enumerated() {
            try FileManager.default.createDirectory(atPath: "\(root)/\(name)", withIntermediateDirectories: true)
            for i in 0..<6 {
                let px = shapeImage(kind: k, size: 48, rng: &rng)
                try PNG.write(Image(width: 48, height: 48, channels: 3, pixels: px), to: String(format: "%@/%@/%02d.png", root, name, i))
            }
            csv +=
                "\(name),Geometria,Planaria,Polygonia,Formiformes,\(k == 1 ? "Curvidae" : "Angulidae"),\(name.capitalized)us,\(name.capitalized)us vulgaris,common \(name)\n"
        }
        try AtomicFile.write(csv, to: root + "/taxonomy.csv")
        let source = try ImageFolderSource(
            root: root, size: 32, squash: false, taxonomyPath: root + "/taxonomy.csv",
            valFraction: 0, testFraction: 0.34, seed: 0, skipBad: false)
        try sheet(source, split: 0, count: 12, columns: 6, title: "image-folder: the first training items as read back (32 px)").write(
            to: dir + "/image_folder_batch.png")
        let files = try FileManager.default.subpathsOfDirectory(atPath: root).filter { $0.hasSuffix(".png") || $0.hasSuffix(".csv") }.sorted()
        return Response(
            result: [
                "classes": .array(source.classNames.map { .string($0) }),
                "train": .number(Double(source.count(split: 0))), "test": .number(Double(source.count(split: 2))),
                "rank_nodes_family": .number(Double(Set(source.rankLabels!.map { $0[4] }).count)),
            ],
            artifacts: Figure.files("image_folder_batch.png") + files.map { "shapes/" + $0 })
    }
}

extension MNISTFormat {
    /// Digits drawn with the 5×7 font at ×3 with a seeded offset, written as IDX files.
    static func tour(scratch dir: String, seed: UInt64) throws -> Response {
        var rng = SeededGenerator(seed: seed)
        func idx(_ magic: UInt32, _ dims: [UInt32], _ bytes: [UInt8]) -> Data {
            var d = Data()
            for v in [magic] + dims { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
            d.append(contentsOf: bytes)
            return d
        }
        for (prefix, n) in [("train", 30), ("t10k", 10)] {
            var pixels: [UInt8] = [], labels: [UInt8] = []
            for i in 0..<n {
                var c = Canvas(width: 28, height: 28, background: (0, 0, 0))
                c.text(String(i % 10), x: 6 + Int(rng.next() % 5), y: 3 + Int(rng.next() % 4), scale: 3, (255, 255, 255))
                pixels += stride(from: 0, to: c.image.pixels.count, by: 3).map { c.image.pixels[$0] }
                labels.append(UInt8(i % 10))
            }
            try AtomicFile.write(idx(0x803, [UInt32(n), 28, 28], pixels), to: "\(dir)/\(prefix)-images-idx3-ubyte")
            try AtomicFile.write(idx(0x801, [UInt32(n)], labels), to: "\(dir)/\(prefix)-labels-idx1-ubyte")
        }
        let source = try MNISTSource(root: dir, valCount: 5)
        try sheet(source, split: 2, count: 10, columns: 10, title: "mnist-idx: the test split as read back from the IDX files").write(
            to: dir + "/mnist_test_batch.png")
        return Response(
            result: [
                "train": .number(Double(source.count(split: 0))), "val": .number(Double(source.count(split: 1))),
                "test": .number(Double(source.count(split: 2))),
            ],
            artifacts: Figure.files("mnist_test_batch.png") + [
                "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
            ])
    }
}

extension CIFAR10Format {
    /// Shapes as three CIFAR-10 "classes" (airplane, automobile, bird), written as binary batches.
    static func tour(scratch dir: String, seed: UInt64) throws -> Response {
        var rng = SeededGenerator(seed: seed)
        var names: [String] = []
        for (b, name) in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"].enumerated() {
            var d = Data()
            for r in 0..<4 {
                let label = (b + r) % 3
                let px = shapeImage(kind: label, size: 32, rng: &rng)
                d.append(UInt8(label))
                for c in 0..<3 { d.append(contentsOf: stride(from: c, to: px.count, by: 3).map { px[$0] }) } // planes
            }
            try AtomicFile.write(d, to: "\(dir)/\(name).bin")
            names.append(name + ".bin")
        }
        let source = try CIFAR10Source(root: dir, valCount: 4, skipBad: false)
        try sheet(source, split: 0, count: 16, columns: 8, title: "cifar10-binary: the first training records as read back").write(
            to: dir + "/cifar_train_batch.png")
        return Response(
            result: [
                "train": .number(Double(source.count(split: 0))), "val": .number(Double(source.count(split: 1))),
                "test": .number(Double(source.count(split: 2))),
            ],
            artifacts: Figure.files("cifar_train_batch.png") + names)
    }
}
