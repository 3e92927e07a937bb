import Foundation
import Testing
import TestSupport

/// Issue 19 through the real `menagerie` binary and built-in plugins: numbers given on the command
/// line end in a usage error (exit 2) naming the option and the value, never in SIGILL or SIGSEGV.
@Suite struct ValidatedNumbersTests {
    let cli = CLI()
    let dir = TempDir("validated-numbers")

    func run(_ arguments: [String]) throws -> CommandResult {
        try cli.run(["run"] + arguments + ["--out", dir.path + "/out-\(UUID().uuidString)"])
    }

    /// `anet-proposals --set max_proposals=1e300` trapped converting the ratio to Int.
    @Test func maxProposalsOf1e300IsAUsageError() throws {
        let r = try run(["anet-proposals", "--set", "max_proposals=1e300", "--set", "ground_truth=gt.json", "--set", "proposals=p.json"])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("option 'max_proposals' of 'anet-proposals' = 1e+300 is out of range: it must be ≥ 0 and ≤ 1000000000"), "\(r.stderr)")
    }

    @Test(arguments: [
        // An integer option given as a fraction, as 1e300, or beyond Int: refused by the schema.
        (["segmentation-metrics", "--set", "classes=3.5"], "option 'classes' of 'segmentation-metrics' must be integer; '3.5' is not"),
        (["segmentation-metrics", "--set", "classes=1e300"], "option 'classes' of 'segmentation-metrics' must be integer; '1e300' is not"),
        (["segmentation-metrics", "--set", "classes=99999999999999999999"], "option 'classes' of 'segmentation-metrics'"),
        (["anet-proposals", "--set", "max_proposals=nan"], "option 'max_proposals' of 'anet-proposals' must be number; 'nan' is not"),
        (["anet-detection", "--set", "tiou_thresholds=0.5,2"], "option 'tiou_thresholds[1]' of 'anet-detection' = 2 is out of range"),
        (["mnist-idx", "batch", "--set", "root=/tmp", "--set", "epoch=-1"], "option 'epoch' of 'mnist-idx' = -1 is out of range"),
        (["image-folder", "batch", "--set", "root=/tmp", "--set", "valFraction=1e300"], "option 'valFraction' of 'image-folder' = 1e+300 is out of range"),
    ] as [([String], String)])
    func badOptionNumbersAreUsageErrors(_ arguments: [String], _ expected: String) throws {
        let r = try run(arguments)
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains(expected), "\(r.stderr)")
    }

    /// Training options that divided (`size % patch`, `width % heads`) before being checked.
    @Test(arguments: [
        (["vit-classifier", "train", "--set", "patch=0"], "option 'patch' of 'vit-classifier' = 0 is out of range: it must be ≥ 1"),
        (["vit-classifier", "train", "--set", "patch=-8"], "option 'patch' of 'vit-classifier' = -8 is out of range"),
        (["vit-classifier", "train", "--set", "heads=0"], "option 'heads' of 'vit-classifier' = 0 is out of range"),
        (["vit-classifier", "train", "--set", "size=30"], "size (30) must be a multiple of patch (8)"),
        (["convnet-classifier", "train", "--set", "depth=0"], "option 'depth' of 'convnet-classifier' = 0 is out of range"),
        (["bioclip2", "train", "--set", "patch=0"], "option 'patch' of 'bioclip2' = 0 is out of range"),
        (["coreinfer", "train", "--set", "kv_heads=0"], "option 'kv_heads' of 'coreinfer' = 0 is out of range"),
        (["coreinfer", "train", "--set", "heads=0"], "option 'heads' of 'coreinfer' = 0 is out of range"),
        (["coreinfer", "train", "--set", "hidden=100", "--set", "heads=3"], "hidden (100) must be a multiple of heads (3)"),
        (["latent-diffusion", "train", "--set", "dit_heads=0"], "option 'dit_heads' of 'latent-diffusion' = 0 is out of range"),
        (["latent-diffusion", "train", "--set", "patch=0"], "option 'patch' of 'latent-diffusion' = 0 is out of range"),
        (["latent-diffusion", "train", "--set", "dit_width=100", "--set", "dit_heads=3"], "option 'dit_width' = 100 is not divisible by 'dit_heads' = 3"),
        (["faster-tad", "train", "--set", "heads=0"], "option 'heads' of 'faster-tad' = 0 is out of range"),
        (["prompt-cam", "train", "--set", "batch=0"], "option 'batch' of 'prompt-cam' = 0 is out of range"),
        (["sst", "--set", "patch=0"], "option 'patch' of 'sst' = 0 is out of range"),
    ] as [([String], String)])
    func trainingOptionsAreCheckedBeforeAnyDivision(_ arguments: [String], _ expected: String) throws {
        let r = try run(arguments)
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains(expected), "\(r.stderr)")
    }

    /// A model folder whose config.json is corrupt: the error names the file, the key and the value.
    @Test func corruptClassifierConfigNamesFileKeyAndValue() throws {
        let folder = dir.sub("vit")
        try FileManager.default.copyItem(atPath: TestPaths.fixtures + "/vit-cam-tiny/model.safetensors", toPath: folder + "/model.safetensors")
        var config = try String(contentsOfFile: TestPaths.fixtures + "/vit-cam-tiny/config.json", encoding: .utf8)
        config = config.replacingOccurrences(of: "\"num_heads\": 3", with: "\"num_heads\": 0")
        try config.write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
        let r = try run(["vit-classifier", "--set", "classifier=\(folder)"])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains(folder + "/config.json") && r.stderr.contains("'num_heads' = 0 is out of range"), "\(r.stderr)")
    }

    /// A FIFO named config.json no longer blocks the loader forever.
    @Test(.timeLimit(.minutes(1))) func fifoConfigIsRefusedWithoutHanging() throws {
        let folder = dir.sub("fifo")
        try FileManager.default.copyItem(atPath: TestPaths.fixtures + "/vit-cam-tiny/model.safetensors", toPath: folder + "/model.safetensors")
        try #require(mkfifo(folder + "/config.json", 0o600) == 0)
        let r = try run(["vit-classifier", "--set", "classifier=\(folder)"])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("FIFO"), "\(r.stderr)")
    }
}
