import Foundation
import TestSupport
import Testing

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

    @Test(
        arguments: [
            // An integer option given as a fraction, as 1e300, or beyond Int: refused by the schema.
            (["segmentation-metrics", "--set", "classes=3.5"], "option 'classes' of 'segmentation-metrics' must be integer; '3.5' is not"),
            (["segmentation-metrics", "--set", "classes=1e300"], "option 'classes' of 'segmentation-metrics' must be integer; '1e300' is not"),
            (["segmentation-metrics", "--set", "classes=99999999999999999999"], "option 'classes' of 'segmentation-metrics'"),
            (["anet-proposals", "--set", "max_proposals=nan"], "option 'max_proposals' of 'anet-proposals' must be number; 'nan' is not"),
            (["anet-detection", "--set", "tiou_thresholds=0.5,2"], "option 'tiou_thresholds[1]' of 'anet-detection' = 2 is out of range"),
            (["mnist-idx", "batch", "--set", "root=/tmp", "--set", "epoch=-1"], "option 'epoch' of 'mnist-idx' = -1 is out of range"),
            (
                ["image-folder", "batch", "--set", "root=/tmp", "--set", "val_fraction=1e300"],
                "option 'val_fraction' of 'image-folder' = 1e+300 is out of range"
            ),
        ] as [([String], String)])
    func badOptionNumbersAreUsageErrors(_ arguments: [String], _ expected: String) throws {
        let r = try run(arguments)
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains(expected), "\(r.stderr)")
    }

    /// Training options that divided (`size % patch`, `width % heads`) before being checked.
    @Test(
        arguments: [
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

    /// A FIFO named config.json no longer blocks the loader forever. (The limit catches a hang, not
    /// slowness: the CLI's first run scans every plugin with a cold cache, which took over a minute
    /// once with the whole suite and two builds sharing two cores.)
    @Test(.timeLimit(.minutes(5))) func fifoConfigIsRefusedWithoutHanging() throws {
        let folder = dir.sub("fifo")
        try FileManager.default.copyItem(atPath: TestPaths.fixtures + "/vit-cam-tiny/model.safetensors", toPath: folder + "/model.safetensors")
        try #require(mkfifo(folder + "/config.json", 0o600) == 0)
        let r = try run(["vit-classifier", "--set", "classifier=\(folder)"])
        #expect(r.status == 2, "\(r.output)")
        #expect(r.stderr.contains("FIFO"), "\(r.stderr)")
    }

    /// A plugin's response is outside input too: a tensor whose shape overflows the address space
    /// (2^62 × 8 elements of i64) is refused by the host, which lives on; it trapped in
    /// `shape.reduce(1, *) * dtype.size`.
    @Test func hostileResponseShapeIsRefused() throws {
        let source = dir.path + "/hostile.c"
        try #"""
        #include "menagerie.h"
        #include <stdlib.h>
        #include <string.h>
        static const char METADATA[] =
            "{\"name\":\"hostile-probe\",\"version\":\"1.0.0\",\"summary\":\"returns a hostile tensor\",\"license\":\"MIT\","
            "\"authors\":[\"tests\"],\"paper\":null,\"components\":[{\"id\":\"hostile-probe\",\"kind\":\"generator\","
            "\"summary\":\"hostile shapes\",\"operations\":[{\"name\":\"run\",\"summary\":\"hostile\",\"inputs\":[],\"outputs\":[]}],"
            "\"options\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{}}}]}";
        static int64_t shape[2] = {(int64_t)1 << 62, 8};
        static int64_t value = 7;
        static mng_tensor tensors[1];
        static int32_t init(const mng_host_services *s, void **state, const char **error) { (void)s; (void)error; *state = NULL; return MNG_OK; }
        static int32_t invoke(void *state, const char *component, const char *operation, const mng_request *req, mng_response *r) {
            (void)state; (void)component; (void)operation; (void)req;
            tensors[0] = (mng_tensor){"huge", MNG_I64, 2, shape, &value, 8};
            r->status = MNG_OK;
            r->result_json = "{}";
            r->tensors = tensors;
            r->tensor_count = 1;
            r->owner = NULL;
            return MNG_OK;
        }
        static void free_response(void *state, mng_response *r) { (void)state; (void)r; }
        static void shutdown(void *state) { (void)state; }
        static const mng_plugin_descriptor DESCRIPTOR = {
            MENAGERIE_ABI_MAJOR, MENAGERIE_ABI_MINOR, sizeof(mng_plugin_descriptor), 0, MENAGERIE_TOOLCHAIN_NONE, METADATA,
            init, invoke, free_response, shutdown,
        };
        const mng_plugin_descriptor *menagerie_plugin_v1(void) { return &DESCRIPTOR; }
        """#.write(toFile: source, atomically: true, encoding: .utf8)
        let plugins = dir.sub("plugins")
        try buildCPlugin(named: "libhostile.so", in: plugins, source: source)
        let hostile = CLI(pluginPath: [plugins])
        let r = try hostile.run("run", "hostile-probe", "run", "--out", dir.path + "/hostile-out")
        #expect(r.status != 0 && r.status < 128, "exit \(r.status): \(r.output)")
        #expect(r.stderr.contains("tensor 'huge'") && r.stderr.contains("than can be addressed"), "\(r.stderr)")
    }
}
