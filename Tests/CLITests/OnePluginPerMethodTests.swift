import Foundation
import TestSupport
import Testing

/// Issue 31: every method is its own `.so`, and methods compose only through the host. Take one
/// method's library out of a copy of the build's plugin folder: every other method still lists and
/// runs, and what needs the missing one says which plugin is missing.
@Suite(.serialized) struct OnePluginPerMethodTests {
    /// A copy of the build folder (hard links: the executable, every plugin but `removed`; symbolic
    /// links: the resource folders), so that the copy's executable sees it as its built-in folder.
    static func buildFolder(without removed: [String]) throws -> TempDir {
        let dir = TempDir("one-plugin-per-method")
        let bin = (TestPaths.menagerie as NSString).deletingLastPathComponent
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: bin) where !removed.contains(name) {
            let from = bin + "/" + name, to = dir.path + "/" + name
            if name == "menagerie" || name.hasSuffix(".so") {
                do { try fm.linkItem(atPath: from, toPath: to) } catch { try fm.copyItem(atPath: from, toPath: to) }
            } else if name.hasSuffix(".resources") {
                try fm.createSymbolicLink(atPath: to, withDestinationPath: from)
            }
        }
        return dir
    }

    static func run(_ dir: TempDir, _ cli: CLI, _ arguments: [String]) throws -> CommandResult {
        try runProcess(dir.path + "/menagerie", arguments, environment: cli.environment, directory: dir.path)
    }

    @Test func theBuildShipsOnePluginPerMethod() throws {
        let cli = CLI()
        let r = try cli.run("plugins", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let plugins = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] ?? []
        var owner: [String: String] = [:]
        for p in plugins {
            for id in p["components"] as? [String] ?? [] { owner[id] = p["name"] as? String }
        }
        // The diffusion methods each in their own plugin, their backbone in another.
        #expect(owner["d3hr"] == "d3hr")
        #expect(owner["concord"] == "concord")
        #expect(owner["latent-diffusion"] == "latent-diffusion")
        #expect(owner["diffusion-dd"] == "latent-diffusion")
        #expect(owner["dm"] == "dataset-distillation")
        // The explainers: the base CAMs, Finer-CAM, Prompt-CAM and the classifiers apart.
        #expect(owner["grad-cam"] == "cam" && owner["score-cam"] == "cam")
        #expect(owner["finer-cam"] == "finer-cam")
        #expect(owner["prompt-cam"] == "prompt-cam")
        #expect(owner["vit-classifier"] == "classifiers" && owner["linear-probe"] == "classifiers")
        #expect(Set(["d3hr", "concord", "latent-diffusion", "dataset-distillation"]).isSubset(of: Set(plugins.compactMap { $0["name"] as? String })))
    }

    @Test func withoutD3HRTheOtherMethodsRunAndWhatNeedsItSaysSo() throws {
        let dir = try Self.buildFolder(without: ["libD3HR.so"])
        let cli = CLI()
        let list = try Self.run(dir, cli, ["list", "--json"])
        #expect(list.status == 0, "\(list.stderr)")
        let ids = Set((try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
        #expect(!ids.contains("d3hr"))
        for id in ["concord", "diffusion-dd", "latent-diffusion", "dm", "distilled-eval", "bioclip2", "synthetic-tol"] {
            #expect(ids.contains(id), "\(id) should still be listed")
        }
        let small = ["--set", "classes=[0,8]", "--set", "ipc=1", "--set", "steps=5"]
        // The methods that do not need d3hr run.
        for id in ["diffusion-dd", "concord"] {
            let r = try Self.run(dir, cli, ["run", id] + small + ["--out", dir.path + "/out-" + id])
            #expect(r.status == 0, "\(id): \(r.stderr)")
            #expect(FileManager.default.fileExists(atPath: dir.path + "/out-\(id)/distilled.safetensors"))
        }
        let dm = try Self.run(
            dir, cli,
            [
                "run", "dm", "--set", "dataset_options=[\"per_class=20\",\"test_per_class=5\"]", "--set", "ipc=1", "--set", "iterations=2", "--out",
                dir.path + "/out-dm",
            ])
        #expect(dm.status == 0, "dm: \(dm.stderr)")
        // What needs d3hr names it and its plugin, and writes nothing.
        let concord = try Self.run(dir, cli, ["run", "concord"] + small + ["--set", "base=d3hr", "--out", dir.path + "/out-concord-d3hr"])
        #expect(concord.status != 0)
        #expect(concord.stderr.contains("concord with base=d3hr needs component 'd3hr' (plugin d3hr)"), "\(concord.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/out-concord-d3hr/distilled.safetensors"))
        let study = try Self.run(dir, cli, ["run", "distilled-eval", "diffusion-study", "--out", dir.path + "/out-study"])
        #expect(study.status != 0)
        #expect(study.stderr.contains("the diffusion study needs 'd3hr' (plugin d3hr)"), "\(study.stderr)")
    }

    @Test func withoutTheDiffusionBackboneItsDistillersNameIt() throws {
        let dir = try Self.buildFolder(without: ["libLatentDiffusion.so"])
        let r = try Self.run(dir, CLI(), ["run", "d3hr", "--set", "ipc=1", "--out", dir.path + "/out"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("d3hr needs component 'latent-diffusion' (plugin latent-diffusion)"), "\(r.stderr)")
    }

    @Test func withoutTheBaseCAMsFinerCAMNamesThePluginAndPromptCAMStillRuns() throws {
        let dir = try Self.buildFolder(without: ["libCAM.so"])
        let cli = CLI()
        let fixture = TestPaths.fixtures + "/vit-cam-tiny"
        let finer = try Self.run(
            dir, cli, ["run", "finer-cam", "explain", "--set", "classifier=" + fixture, "--input", "images=\(fixture)/image.png", "--out", dir.path + "/finer"])
        #expect(finer.status != 0)
        #expect(finer.stderr.contains("finer-cam's base 'grad-cam' is not installed") && finer.stderr.contains("'cam' plugin"), "\(finer.stderr)")
        let list = try Self.run(dir, cli, ["list", "--json"])
        let ids = Set((try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [[String: Any]] ?? []).compactMap { $0["id"] as? String })
        #expect(!ids.contains("grad-cam") && ids.isSuperset(of: ["finer-cam", "prompt-cam", "vit-classifier", "d3hr"]))
        // A method that does not need the base CAMs runs.
        let prompt = try Self.run(dir, cli, ["run", "prompt-cam", "tour", "--out", dir.path + "/prompt"])
        #expect(prompt.status == 0, "\(prompt.stderr)")
    }
}
