import DatasetAdapters
import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

/// Each adapter reads a tiny dataset the test writes in the original format, returns its exact
/// pixels and labels, and refuses (or with skip_bad, skips and counts) the bad inputs by name.
@Suite struct DatasetAdaptersTests {
    let dir = TempDir("adapters")

    // MARK: image folders

    /// root/<class>/<n>.png|jpg|tif with known pixel values: 3 classes × 3 images of 8×8.
    func writeImageFolder(_ root: String, splits: Bool = false) throws {
        for (c, name) in ["gull", "heron", "wren"].enumerated() {
            for k in 0..<3 {
                let folder = splits ? "\(root)/\(["train", "train", "test"][k])/\(name)" : "\(root)/\(name)"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                let value = UInt8(40 * c + 10 * k)
                let img = Image(width: 8, height: 8, channels: 3, pixels: [UInt8](repeating: value, count: 192))
                if k == 2 {
                    try TIFF.write(Tensor([UInt8](repeating: value, count: 192), shape: [8, 8, 3]), to: "\(folder)/\(k).tif")
                } else if k == 1 {
                    try JPEG.write(img, to: "\(folder)/\(k).jpg", quality: 95) // a flat colour: within 1 of the value
                } else {
                    try PNG.write(img, to: "\(folder)/\(k).png")
                }
            }
        }
        try "not an image".write(toFile: "\(root)/README.txt", atomically: true, encoding: .utf8)
    }

    @Test func imageFolderReadsPixelsLabelsAndTaxonomy() throws {
        let root = dir.sub("folder")
        try writeImageFolder(root)
        let csv = """
            label,kingdom,phylum,class,order,family,genus,species,common_name
            gull,Animalia,Chordata,Aves,Charadriiformes,Laridae,Larus,Larus argentatus,"Herring gull, European"
            heron,Animalia,Chordata,Aves,Pelecaniformes,Ardeidae,Ardea,Ardea cinerea,Grey heron
            wren,Animalia,Chordata,Aves,Passeriformes,Troglodytidae,Troglodytes,Troglodytes troglodytes,Wren
            """
        try csv.write(toFile: dir.path + "/tax.csv", atomically: true, encoding: .utf8)
        let s = try ImageFolderSource(
            root: root, size: 8, squash: false, taxonomyPath: dir.path + "/tax.csv", valFraction: 0, testFraction: 1.0 / 3,
            seed: 0, skipBad: false)
        #expect(s.classNames == ["gull", "heron", "wren"])
        #expect(s.count(split: 0) == 6 && s.count(split: 2) == 3)
        for i in 0..<s.count(split: 0) {
            let item = try s.item(split: 0, index: i)
            // Every pixel of image k of class c is 40c + 10k.
            let v = item.pixels[0] * 255
            #expect(item.pixels.allSatisfy { abs($0 * 255 - v) < 1e-3 })
            #expect(abs(v - (v / 10).rounded() * 10) <= 1, "pixel \(v) is not 40c + 10k (±1 for the JPEG)")
            #expect(Int((v / 40).rounded(.down)) == item.label)
        }
        #expect(s.commonNames?[0] == "Herring gull, European")
        // Ranks shared up to the class, distinct from the order down.
        let ranks = s.rankLabels!
        #expect(ranks[0][..<3] == ranks[1][..<3] && ranks[0][3] != ranks[1][3] && Set(ranks.map { $0[6] }).count == 3)
    }

    @Test func imageFolderSplitFoldersAndBadInputs() throws {
        let root = dir.sub("splits")
        try writeImageFolder(root, splits: true)
        let s = try ImageFolderSource(root: root, size: 4, squash: true, taxonomyPath: nil, valFraction: 0.1, testFraction: 0.2, seed: 0, skipBad: false)
        #expect(s.count(split: 0) == 6 && s.count(split: 1) == 0 && s.count(split: 2) == 3 && s.rankLabels == nil)
        #expect(try s.item(split: 2, index: 0).pixels.count == 3 * 16)

        func message(_ body: () throws -> Void) -> String {
            do {
                try body()
                return ""
            } catch { return "\(error)" }
        }
        func open(_ root: String, taxonomy: String? = nil, skipBad: Bool = false) throws -> ImageFolderSource {
            try ImageFolderSource(root: root, size: 8, squash: false, taxonomyPath: taxonomy, valFraction: 0, testFraction: 0, seed: 0, skipBad: skipBad)
        }
        #expect(message { _ = try open(dir.path + "/nowhere") }.contains("no such folder"))
        // An empty class: refused by name, or dropped and counted.
        let empty = dir.sub("empty")
        try writeImageFolder(empty)
        try FileManager.default.createDirectory(atPath: empty + "/owl", withIntermediateDirectories: true)
        #expect(message { _ = try open(empty) }.contains("owl"))
        let skipping = try open(empty, skipBad: true)
        #expect(skipping.classNames.count == 3 && skipping.skipped.count == 1)
        // An unreadable image fails when read, naming the file.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: root + "/train/gull/9.png"))
        let withBad = try ImageFolderSource(root: root, size: 8, squash: false, taxonomyPath: nil, valFraction: 0, testFraction: 0, seed: 0, skipBad: false)
        let badIndex = (0..<withBad.count(split: 0)).first { (try? withBad.item(split: 0, index: $0)) == nil }
        #expect(badIndex != nil && message { _ = try withBad.item(split: 0, index: badIndex!) }.contains("9.png"))
        // Taxonomy rows: a missing file, a wrong field count, an empty rank, a class without a row.
        let folder = dir.sub("folder2")
        try writeImageFolder(folder)
        let header = "file,kingdom,phylum,class,order,family,genus,species\n"
        let good = "A,B,C,D,E,F,G"
        let cases: [(String, String)] = [
            (header + "gull/0.png,\(good)\ngull/7.png,\(good)\n", "row 3 names 'gull/7.png'"),
            (header + "gull/0.png,A,B,C\n", "row 2 has 4 fields"),
            (header + "gull/0.png,A,B,C,D,E,,G\n", "rank 'genus' is empty"),
            (header + "gull/0.png,\(good)\n", "class 'heron' has no row"),
            ("name,kingdom\n", "first column must be 'file' or 'label'"),
        ]
        for (text, expected) in cases {
            try text.write(toFile: dir.path + "/t.csv", atomically: true, encoding: .utf8)
            let m = message { _ = try open(folder, taxonomy: dir.path + "/t.csv") }
            #expect(m.contains(expected) && m.contains("t.csv"), "\(m)")
        }
    }

    // MARK: MNIST IDX

    func writeIDX(_ path: String, magic: UInt32, dims: [UInt32], bytes: [UInt8]) throws {
        var d = Data()
        for v in [magic] + dims { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
        d.append(contentsOf: bytes)
        try d.write(to: URL(fileURLWithPath: path))
    }

    func writeMNIST(_ root: String, train: Int = 5, test: Int = 3) throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for (prefix, n) in [("train", train), ("t10k", test)] {
            var pixels = [UInt8](repeating: 0, count: n * 784)
            for i in pixels.indices {
                let image: Int = i / 784, offset: Int = i % 784
                pixels[i] = UInt8((image * 37 + offset) % 256)
            }
            try writeIDX("\(root)/\(prefix)-images-idx3-ubyte", magic: 0x803, dims: [UInt32(n), 28, 28], bytes: pixels)
            let labels: [UInt8] = (0..<n).map { (i: Int) in UInt8((i * 3) % 10) }
            try writeIDX("\(root)/\(prefix)-labels-idx1-ubyte", magic: 0x801, dims: [UInt32(n)], bytes: labels)
        }
    }

    /// Issue 20: the distillation datasets on real MNIST files. mnist-idx takes the `size` a
    /// distiller asks for (resampled; the native side is bit-exact), so cmnist-dd with `root=` and a
    /// distiller on mnist-idx run.
    @Test func mnistAtAnySizeForCMNISTAndDistillers() throws {
        let dir = TempDir("mnist-size")
        let root = dir.path + "/mnist"
        try writeMNIST(root, train: 40, test: 20)
        let cli = CLI()
        let native = try cli.run("run", "mnist-idx", "batch", "--set", "root=\(root)", "--set", "count=4", "--set", "shuffle=false", "--out", dir.path + "/n")
        #expect(native.status == 0, "\(native.stderr)")
        let same = try cli.run(
            "run", "mnist-idx", "batch", "--set", "root=\(root)", "--set", "count=4", "--set", "shuffle=false", "--set", "size=28", "--out", dir.path + "/s")
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/n/images.npy")) == Data(contentsOf: URL(fileURLWithPath: dir.path + "/s/images.npy")))
        let big = try cli.run("run", "mnist-idx", "batch", "--set", "root=\(root)", "--set", "count=4", "--set", "size=32", "--out", dir.path + "/b", "--json")
        #expect(big.status == 0, "\(big.stderr)")
        let images = try NPY.read(path: dir.path + "/b/images.npy")
        #expect(images.shape == [4, 1, 32, 32])
        let v = try images.scalars(as: Float.self)
        #expect(v.allSatisfy { $0 >= 0 && $0 <= 1 } && Set(v).count > 10)
        let bad = try cli.run("run", "mnist-idx", "batch", "--set", "root=\(root)", "--set", "size=4")
        #expect(bad.status == 2 && bad.stderr.contains("size"))
        // cmnist-dd on the real files (it passes size to mnist-idx), and a distiller on mnist-idx.
        let cmnist = try cli.run("run", "cmnist-dd", "batch", "--set", "root=\(root)", "--set", "count=8", "--out", dir.path + "/c")
        #expect(cmnist.status == 0, "\(cmnist.stderr)")
        #expect(try NPY.read(path: dir.path + "/c/images.npy").shape == [8, 3, 28, 28])
        let dm = try cli.run(
            "run", "random-selection", "--set", "dataset=mnist-idx", "--set", "dataset_options=[\"root=\(root)\"]",
            "--set", "ipc=1", "--set", "size=32", "--out", dir.path + "/dm")
        #expect(dm.status == 0, "\(dm.stderr)")
    }

    @Test func mnistRoundTripAndTruncation() throws {
        let root = dir.sub("mnist")
        try writeMNIST(root)
        let s = try MNISTSource(root: root, valCount: 1)
        #expect(s.count(split: 0) == 4 && s.count(split: 1) == 1 && s.count(split: 2) == 3 && s.size == 28)
        let item = try s.item(split: 1, index: 0) // training image 4
        #expect(item.label == 2 && item.pixels[5] == Float((4 * 37 + 5) % 256) / 255)
        #expect(try s.item(split: 2, index: 2).label == 6)
        // Truncated images, a wrong magic, a label count that disagrees, a missing file.
        let images = root + "/train-images-idx3-ubyte"
        let full = try Data(contentsOf: URL(fileURLWithPath: images))
        try full.prefix(full.count - 10).write(to: URL(fileURLWithPath: images))
        #expect(throws: FormatError.self) { _ = try MNISTSource(root: root, valCount: 0) }
        do { _ = try MNISTSource(root: root, valCount: 0) } catch {
            #expect("\(error)".contains("truncated") && "\(error)".contains("train-images-idx3-ubyte"))
        }
        try writeMNIST(root, train: 5)
        try writeIDX(root + "/train-labels-idx1-ubyte", magic: 0x801, dims: [4], bytes: [1, 2, 3, 4])
        do { _ = try MNISTSource(root: root, valCount: 0) } catch { #expect("\(error)".contains("holds 4 labels")) }
        try writeIDX(root + "/train-labels-idx1-ubyte", magic: 0x803, dims: [5], bytes: [1, 2, 3, 4, 5])
        do { _ = try MNISTSource(root: root, valCount: 0) } catch { #expect("\(error)".contains("magic")) }
        try writeMNIST(root)
        try FileManager.default.removeItem(atPath: root + "/t10k-labels-idx1-ubyte")
        do { _ = try MNISTSource(root: root, valCount: 0) } catch { #expect("\(error)".contains("t10k-labels-idx1-ubyte") && "\(error)".contains("not found")) }
    }

    // MARK: CIFAR-10 binary

    func writeCIFAR(_ root: String, perBatch: Int = 2) throws {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        for (b, name) in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"].enumerated() {
            var d = Data()
            for r in 0..<perBatch {
                d.append(UInt8((b + r) % 10))
                let pixels: [UInt8] = (0..<3072).map { (i: Int) in UInt8((i + b * 7 + r) % 256) }
                d.append(contentsOf: pixels)
            }
            try d.write(to: URL(fileURLWithPath: "\(root)/\(name).bin"))
        }
        try "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n".write(
            toFile: root + "/batches.meta.txt", atomically: true, encoding: .utf8)
    }

    @Test func cifarRoundTripTruncationAndSkip() throws {
        let root = dir.sub("cifar")
        try writeCIFAR(root)
        let s = try CIFAR10Source(root: root, valCount: 2, skipBad: false)
        #expect(s.count(split: 0) == 8 && s.count(split: 1) == 2 && s.count(split: 2) == 2 && s.classNames[9] == "truck")
        let item = try s.item(split: 0, index: 3) // batch 2 (b = 1), record 1
        #expect(item.label == 2 && item.pixels[0] == Float(8) / 255 && item.pixels[1024] == Float((1024 + 8) % 256) / 255)
        let val = try s.item(split: 1, index: 1) // the last record of batch 5 (b = 4, r = 1)
        #expect(val.label == 5)
        // A truncated batch file: refused by name, or skipped and counted.
        let path = root + "/data_batch_3.bin"
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        try full.prefix(full.count - 1).write(to: URL(fileURLWithPath: path))
        do {
            _ = try CIFAR10Source(root: root, valCount: 0, skipBad: false)
            Issue.record("accepted a truncated file")
        } catch {
            #expect("\(error)".contains("data_batch_3.bin") && "\(error)".contains("truncated"))
        }
        let skipping = try CIFAR10Source(root: root, valCount: 0, skipBad: true)
        #expect(skipping.count(split: 0) == 8 && skipping.skipped.count == 1)
    }

    /// Through the CLI: the batch contract (images, labels, index) and skip_bad in result.json.
    @Test func throughTheCLI() throws {
        let root = dir.sub("cli-folder")
        try writeImageFolder(root)
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: root + "/gull/5.png"))
        let cli = CLI()
        let out = dir.sub("out")
        let bad = try cli.run(
            "run", "image-folder", "batch", "--set", "root=\(root)", "--set", "size=8", "--set", "count=20",
            "--set", "test_fraction=0")
        #expect(bad.status == 2 && bad.stderr.contains("5.png") && bad.stderr.contains("skip_bad"))
        let ok = try cli.run(
            "run", "image-folder", "batch", "--set", "root=\(root)", "--set", "size=8", "--set", "count=20",
            "--set", "test_fraction=0", "--set", "skip_bad=true", "--out", out)
        #expect(ok.status == 0, "\(ok.stderr)")
        let result = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/result.json"))) as? [String: Any]
        let r = result?["result"] as? [String: Any]
        #expect(r?["skipped"] as? Int == 1 && r?["count"] as? Int == 9)
        let images = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: out + "/images.npy")))
        #expect(images.shape == [9, 3, 8, 8])
        let mnist = dir.sub("cli-mnist")
        try writeMNIST(mnist)
        let m = try cli.run("run", "mnist-idx", "batch", "--set", "root=\(mnist)", "--set", "split=test", "--set", "shuffle=false", "--out", dir.sub("m"))
        #expect(m.status == 0, "\(m.stderr)")
        let labels = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("m") + "/labels.npy")))
        #expect(try labels.integers() == [0, 3, 6])
        // An image over the pixel limit (a decompression-bomb guard) is refused by name.
        let limited = CLI()
        limited.extra["MENAGERIE_MAX_PIXELS"] = "16"
        let bomb = try limited.run("run", "image-folder", "batch", "--set", "root=\(root)", "--set", "size=8", "--set", "test_fraction=0")
        #expect(bomb.status == 2 && bomb.stderr.contains("exceed") && bomb.stderr.contains(root))
        let missing = try cli.run("run", "cifar10-binary", "describe")
        #expect(missing.status == 2 && missing.stderr.contains("root=PATH"))
    }
}

/// Issue 19: an IDX header's dimensions are checked against the file's size before anything is
/// read or allocated (0xFFFFFFFF × 3 overflowed `dims.reduce(1, *)`: SIGILL).
@Suite struct IDXHeaderLimitsTests {
    let dir = TempDir("idx-limits")

    func writeIDX(_ path: String, magic: UInt32, dims: [UInt32], bytes: [UInt8]) throws {
        var d = Data()
        for v in [magic] + dims { withUnsafeBytes(of: v.bigEndian) { d.append(contentsOf: $0) } }
        d.append(contentsOf: bytes)
        try d.write(to: URL(fileURLWithPath: path))
    }

    func message(_ root: String) -> String {
        do {
            _ = try MNISTSource(root: root, valCount: 0)
            return ""
        } catch { return String(describing: error) }
    }

    func mnist(images: [UInt32], bytes: [UInt8] = [1, 2, 3, 4]) throws -> String {
        let root = dir.sub("m\(images.map(String.init).joined(separator: "-"))")
        try writeIDX(root + "/train-images-idx3-ubyte", magic: 0x803, dims: images, bytes: bytes)
        try writeIDX(root + "/train-labels-idx1-ubyte", magic: 0x801, dims: [1], bytes: [0])
        try writeIDX(root + "/t10k-images-idx3-ubyte", magic: 0x803, dims: [1, 2, 2], bytes: [1, 2, 3, 4])
        try writeIDX(root + "/t10k-labels-idx1-ubyte", magic: 0x801, dims: [1], bytes: [0])
        return root
    }

    @Test func dimensionsWhoseProductOverflowAreRefused() throws {
        let root = try mnist(images: [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF])
        let m = message(root)
        #expect(m.contains("train-images-idx3-ubyte"), "\(m)")
        #expect(m.contains("[4294967295, 4294967295, 4294967295]") && m.contains("more bytes than can be addressed"), "\(m)")
    }

    @Test func dimensionsBeyondTheFileAreTruncation() throws {
        let root = try mnist(images: [0xFFFF_FFFF, 2, 2])
        let m = message(root)
        #expect(m.contains("truncated") && m.contains("[4294967295, 2, 2]") && m.contains("17179869196"), "\(m)")
    }

    @Test func emptyImagesAreRefused() throws {
        let root = try mnist(images: [1, 0, 0], bytes: [])
        let m = message(root)
        #expect(m.contains("empty") && m.contains("train-images-idx3-ubyte"), "\(m)")
    }

    @Test func aSmallValidFileStillLoads() throws {
        let root = try mnist(images: [1, 2, 2])
        let s = try MNISTSource(root: root, valCount: 0)
        #expect(s.size == 2 && s.count(split: 0) == 1)
    }
}
