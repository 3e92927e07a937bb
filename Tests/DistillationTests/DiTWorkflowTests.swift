import Formats
import Foundation
import Imaging
import Tensors
import TestSupport
import Testing

/// The real-image workflow on a diffusers DiT pipeline (Tests/Fixtures/dit-tiny: diffusers 0.42,
/// random weights, num_embeds_ada_norm 10, 8×8 latents of 16 px images): an `image-folder` of
/// class folders written here as PNG → per-class statistics (streamed, checkpointed, resumable) →
/// D^3HR and CONCORD → distilled-eval.
@Suite struct DiTWorkflowTests {
    let pipeline = TestPaths.fixtures + "/dit-tiny"

    /// The fixture's sizes, read from its config files (not assumed): classes and the image side.
    func fixtureSizes() throws -> (classes: Int, side: Int) {
        func json(_ path: String) throws -> JSONValue { try JSONValue.parse(String(contentsOfFile: pipeline + path, encoding: .utf8)) }
        let t = try json("/transformer/config.json"), v = try json("/vae/config.json")
        let classes = t["num_embeds_ada_norm"]?.intValue ?? 0
        let side = (t["sample_size"]?.intValue ?? 0) * (1 << ((v["block_out_channels"]?.arrayValue?.count ?? 1) - 1))
        return (classes, side)
    }

    /// `classes` class folders of `perClass` PNG images each: a class colour with seeded noise.
    func imageFolder(_ root: String, classes: Int, perClass: Int, side: Int) throws {
        var rng = SeededGenerator(seed: 7)
        for k in 0..<classes {
            let folder = root + String(format: "/c%02d", k)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for i in 0..<perClass {
                var image = Image(width: side, height: side, channels: 3)
                for p in 0..<(side * side) {
                    for ch in 0..<3 {
                        let base = Double((k * 37 + ch * 91) % 256)
                        image.pixels[p * 3 + ch] = UInt8(max(0, min(255, base + 40 * rng.nextNormal())))
                    }
                }
                try PNG.write(image, to: folder + "/\(i).png")
            }
        }
    }

    func result(_ stdout: String) throws -> JSONValue? { try JSONValue.parse(stdout)["result"] }

    /// Every tensor and the metadata of a statistics file.
    func contents(_ path: String) throws -> ([Double], [Double], [String: String]) {
        let f = try SafeTensorsFile(path: path)
        return (try f.tensor("mean").scalars(as: Double.self), try f.tensor("variance").scalars(as: Double.self), f.metadata)
    }

    @Test func d3hrAndConcordOnTheDiTPipelineResumeFromTheirStatistics() throws {
        let (k, side) = try fixtureSizes()
        #expect(k == 10 && side == 16)
        let cli = CLI(), dir = TempDir("dit-dd")
        let root = dir.sub("folder")
        try imageFolder(root, classes: k, perClass: 6, side: side)
        let stats = dir.path + "/stats"
        let common = [
            "--set", "model=\(pipeline)", "--set", "dataset=image-folder", "--set", "dataset_options=[\"root=\(root)\"]", "--set", "statistics=\(stats)",
        ]
        let d3hr = ["run", "d3hr"] + common + ["--set", "ipc=2", "--set", "candidates=20"]

        // First run: every class inverted and its statistics file written.
        let first = try cli.run(d3hr + ["--out", dir.sub("a"), "--json"])
        #expect(first.status == 0, "\(first.stderr)")
        let r1 = try result(first.stdout)
        #expect(r1?["statistics_classes_computed"]?.intValue == k && r1?["statistics_classes_read"]?.intValue == 0)
        // image-folder's default split keeps 80 % of each class's 6 images for training: 5 × 10.
        #expect(r1?["images_inverted"]?.intValue == 5 * k, "\(r1?.compactText ?? "")")
        let files = (0..<k).map { stats + String(format: "/class_%05d.safetensors", $0) }
        #expect(files.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        let (_, variance3, meta3) = try contents(files[3])
        #expect(meta3["count"] == "5" && meta3["class_name"] == "c03" && meta3["backbone_class"] == "3" && meta3["statistics_step"] == "600")
        #expect(variance3.count == 4 * 8 * 8 && variance3.allSatisfy { $0 > 0 })
        let set = try SafeTensorsFile(path: dir.sub("a") + "/distilled.safetensors")
        #expect(try set.tensor("images").shape == [2 * k, 3, side, side])
        #expect(try set.tensor("labels").integers() == (0..<k).flatMap { [$0, $0] })
        let images = try set.tensor("images").scalars(as: Float.self)

        // distilled-eval takes the set (its test split is the folder's, read from the set's metadata).
        let eval = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.sub("a"))/distilled.safetensors", "--set", "nets=1", "--set", "epochs=2",
            "--set", "width=16", "--out", dir.sub("ev"))
        #expect(eval.status == 0, "\(eval.stderr)")

        // One class's file deleted: exactly that class is inverted again, to the same numbers, and
        // the set is the same bit for bit; the other files are not rewritten.
        let before = try contents(files[4])
        let stamps = try files.map { try FileManager.default.attributesOfItem(atPath: $0)[.modificationDate] as? Date }
        try FileManager.default.removeItem(atPath: files[4])
        let resumed = try cli.run(d3hr + ["--out", dir.sub("b"), "--json"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let r2 = try result(resumed.stdout)
        #expect(r2?["statistics_classes_computed"]?.intValue == 1 && r2?["statistics_classes_read"]?.intValue == k - 1)
        #expect(r2?["images_inverted"]?.intValue == 5)
        // Its progress record (log.csv): one finished class, class 4, 5 of 5 images.
        let log = try String(contentsOfFile: dir.sub("b") + "/log.csv", encoding: .utf8).split(separator: "\n").map {
            $0.split(separator: ",", omittingEmptySubsequences: false)
        }
        let header = log.first ?? []
        let rows = log.dropFirst().filter { $0.count == header.count }
        func column(_ name: String) -> [String] { header.firstIndex(of: Substring(name)).map { i in rows.map { String($0[i]) } } ?? [] }
        #expect(column("dataset_class") == ["4"] && column("images_inverted") == ["5"] && column("of") == ["5"], "\(log)")
        let after = try contents(files[4])
        #expect(after.0 == before.0 && after.1 == before.1 && after.2 == before.2)
        for (i, file) in files.enumerated() where i != 4 {
            #expect(try FileManager.default.attributesOfItem(atPath: file)[.modificationDate] as? Date == stamps[i], "\(file) was rewritten")
        }
        let again = try SafeTensorsFile(path: dir.sub("b") + "/distilled.safetensors").tensor("images").scalars(as: Float.self)
        #expect(again == images)

        // A file made with other settings is refused, by name and field, not reused.
        let other = try cli.run(d3hr + ["--set", "guidance=3", "--out", dir.sub("c")])
        #expect(other.status != 0 && other.stderr.contains("class_00000.safetensors") && other.stderr.contains("guidance = '4.0'"), "\(other.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.sub("c") + "/distilled.safetensors"))

        // CONCORD on D^3HR reads the same statistics (no inversion) and its set is accepted too.
        let concepts = try cli.run(
            "run", "concord", "concepts", "--set", "dataset=image-folder", "--set", "dataset_options=[\"root=\(root)\"]", "--out", dir.sub("concepts"))
        #expect(concepts.status == 0, "\(concepts.stderr)")
        let concord = try cli.run(
            ["run", "concord"] + common + [
                "--set", "base=d3hr", "--set", "concepts=\(dir.sub("concepts"))/concepts.json", "--set", "ipc=1", "--set", "candidates=20",
                "--out", dir.sub("concord"), "--json",
            ])
        #expect(concord.status == 0, "\(concord.stderr)")
        let r3 = try result(concord.stdout)
        #expect(r3?["statistics_classes_read"]?.intValue == k && r3?["statistics_classes_computed"]?.intValue == 0, "\(r3?.compactText ?? "")")
        #expect(r3?["final_concept_loss"]?.doubleValue?.isFinite == true)
        let concordSet = try SafeTensorsFile(path: dir.sub("concord") + "/distilled.safetensors")
        #expect(try concordSet.tensor("labels").integers() == Array(0..<k))
        let evalConcord = try cli.run(
            "run", "distilled-eval", "--set", "distilled=\(dir.sub("concord"))/distilled.safetensors", "--set", "nets=1", "--set", "epochs=2",
            "--set", "width=16", "--out", dir.sub("ev2"))
        #expect(evalConcord.status == 0, "\(evalConcord.stderr)")

        // The data changed under the statistics: class 0 has two more images (8: 7 for training, 1 for
        // test, where the file counted 5); its file is refused by its count. A file that is not safetensors is named too.
        try FileManager.default.copyItem(atPath: root + "/c00/0.png", toPath: root + "/c00/9.png")
        try FileManager.default.copyItem(atPath: root + "/c00/1.png", toPath: root + "/c00/8.png")
        let grown = try cli.run(d3hr + ["--out", dir.sub("d")])
        #expect(
            grown.status != 0 && grown.stderr.contains("class_00000.safetensors") && grown.stderr.contains("count = '5'")
                && grown.stderr.contains("count = '7'"), "\(grown.stderr)")
        try FileManager.default.removeItem(atPath: root + "/c00/9.png")
        try FileManager.default.removeItem(atPath: root + "/c00/8.png")
        try Data("not a safetensors file".utf8).write(to: URL(fileURLWithPath: files[1]))
        let garbage = try cli.run(d3hr + ["--out", dir.sub("e")])
        #expect(garbage.status != 0 && garbage.stderr.contains("class_00001.safetensors") && garbage.stderr.contains("cannot be read"), "\(garbage.stderr)")
    }

    /// Class counts and ids that disagree with num_embeds_ada_norm are named; class_ids maps a
    /// smaller dataset onto the pipeline's classes and the set keeps the dataset's classes.
    @Test func classCountsAndIdsAreCheckedAgainstThePipeline() throws {
        let (k, side) = try fixtureSizes()
        let cli = CLI(), dir = TempDir("dit-ids")
        let eleven = dir.sub("eleven"), three = dir.sub("three")
        try imageFolder(eleven, classes: k + 1, perClass: 3, side: side)
        try imageFolder(three, classes: 3, perClass: 4, side: side)
        var runs = 0
        func d3hr(_ root: String, _ extra: String...) throws -> CommandResult {
            runs += 1
            return try cli.run(
                [
                    "run", "d3hr", "--set", "model=\(pipeline)", "--set", "dataset=image-folder", "--set", "dataset_options=[\"root=\(root)\"]",
                    "--set", "ipc=1", "--set", "candidates=5",
                ] + extra.flatMap { ["--set", $0] } + ["--out", dir.sub("out\(runs)"), "--json"])
        }
        let tooMany = try d3hr(eleven)
        #expect(tooMany.status != 0 && tooMany.stderr.contains("has \(k + 1) classes") && tooMany.stderr.contains("num_embeds_ada_norm"), "\(tooMany.stderr)")
        let beyond = try d3hr(three, "class_ids=[1,\(k),2]")
        #expect(beyond.status != 0 && beyond.stderr.contains("entry 1 is class \(k)") && beyond.stderr.contains("num_embeds_ada_norm"), "\(beyond.stderr)")
        let count = try d3hr(three, "class_ids=[1,2]")
        #expect(count.status != 0 && count.stderr.contains("has 3 classes") && count.stderr.contains("class_ids"), "\(count.stderr)")
        let chosen = try d3hr(three, "class_ids=[7,2,9]", "classes=[3]")
        #expect(chosen.status != 0 && chosen.stderr.contains("class 3 lies outside 0..<3"), "\(chosen.stderr)")
        let plainBeyond = try cli.run(
            "run", "diffusion-dd", "--set", "model=\(pipeline)", "--set", "classes=[\(k)]", "--set", "ipc=1", "--set", "steps=2")
        #expect(plainBeyond.status != 0 && plainBeyond.stderr.contains("num_embeds_ada_norm"), "\(plainBeyond.stderr)")

        let stats = dir.path + "/stats"
        let mapped = try d3hr(three, "class_ids=[7,2,9]", "statistics=\(stats)")
        #expect(mapped.status == 0, "\(mapped.stderr)")
        let set = try SafeTensorsFile(path: dir.sub("out\(runs)") + "/distilled.safetensors")
        #expect(try set.tensor("labels").integers() == [0, 1, 2])
        #expect(set.metadata["classes"]?.contains("c02") == true, "\(set.metadata)")
        let meta = try SafeTensorsFile(path: stats + "/class_00000.safetensors").metadata
        #expect(meta["backbone_class"] == "7" && meta["class_name"] == "c00")
        // The same statistics folder with another mapping: the stored backbone class is refused.
        let remapped = try d3hr(three, "class_ids=[8,2,9]", "statistics=\(stats)")
        #expect(remapped.status != 0 && remapped.stderr.contains("class_00000.safetensors") && remapped.stderr.contains("backbone_class"), "\(remapped.stderr)")
    }
}
