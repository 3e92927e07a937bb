import Formats
import Foundation
import Tensors
import TestSupport
import Testing

/// `latent-diffusion` on a diffusers DiT pipeline through the CLI, exactly as issue 24's parity
/// commands: the dit-tiny fixture (diffusers 0.42, Tests/Fixtures/dit-tiny). Error measure:
/// max|ours − reference| / max|reference|.
@Suite struct DiTPipelineCLITests {
    let folder = TestPaths.fixtures + "/dit-tiny"
    func expected(_ name: String) throws -> [Float] { try NPY.read(path: folder + "/expected/\(name).npy").converted(to: .float32).scalars() }
    func output(_ dir: String, _ name: String) throws -> [Float] { try NPY.read(path: dir + "/\(name).npy").converted(to: .float32).scalars() }
    func relative(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count else { return .infinity }
        let diff = zip(a, b).map { Double(abs($0 - $1)) }.max() ?? 0
        return diff / max(b.map { Double(abs($0)) }.max() ?? 0, 1e-30)
    }

    @Test func sampleInvertDenoiseAndDecodeMatchDiffusers() throws {
        let cli = CLI(), dir = TempDir("dit-cli"), x = folder + "/expected"
        let s = try cli.run(
            "run", "latent-diffusion", "sample", "--set", "model=\(folder)", "--set", "steps=10", "--set", "guidance=2",
            "--input", "noise=\(x)/noise.npy", "--input", "classes=\(x)/classes.npy", "--set", "decode=false", "--out", dir.sub("s"))
        #expect(s.status == 0, "\(s.stderr)")
        let sample = relative(try output(dir.path + "/s", "latents"), try expected("sample"))
        #expect(sample <= 1e-3, "sample relative error \(sample)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/s/images.npy"))

        let i = try cli.run(
            "run", "latent-diffusion", "invert", "--set", "model=\(folder)", "--input", "latents=\(x)/sample.npy",
            "--input", "classes=\(x)/classes.npy", "--set", "steps=10", "--set", "inverse_steps=7", "--out", dir.sub("i"))
        #expect(i.status == 0, "\(i.stderr)")
        let inverted = relative(try output(dir.path + "/i", "latents"), try expected("inverted"))
        #expect(inverted <= 1e-3, "inverted relative error \(inverted)")

        let d = try cli.run(
            "run", "latent-diffusion", "denoise", "--set", "model=\(folder)", "--input", "latents=\(x)/x_t.npy",
            "--input", "timesteps=\(x)/t.npy", "--input", "classes=\(x)/y.npy", "--out", dir.sub("d"))
        #expect(d.status == 0, "\(d.stderr)")
        let eps = relative(try output(dir.path + "/d", "eps"), try expected("eps"))
        #expect(eps <= 1e-4, "eps relative error \(eps)")

        let v = try cli.run(
            "run", "latent-diffusion", "decode", "--set", "model=\(folder)", "--set", "image_range=signed", "--input", "latents=\(x)/x_t.npy",
            "--out", dir.sub("v"))
        #expect(v.status == 0, "\(v.stderr)")
        let decoded = relative(try output(dir.path + "/v", "images"), try expected("decoded"))
        #expect(decoded <= 1e-4, "decoded relative error \(decoded)")
        // The default unit range: the VAE output / 2 + 0.5, unclamped (DiTPipeline's value before its clamp).
        let u = try cli.run("run", "latent-diffusion", "decode", "--set", "model=\(folder)", "--input", "latents=\(x)/x_t.npy", "--out", dir.sub("u"))
        #expect(u.status == 0, "\(u.stderr)")
        let unit = relative(try output(dir.path + "/u", "images"), try expected("decoded").map { $0 * 0.5 + 0.5 })
        #expect(unit <= 1e-4, "unit-range decoded relative error \(unit)")
    }

    /// The original `.pt` (make_original.py) with its heads and diffusers' numerics gives diffusers'
    /// eps of the tied model; a class beyond num_embeds_ada_norm and a missing part are named.
    @Test func theOriginalCheckpointAndBadInputThroughTheCLI() throws {
        let cli = CLI(), dir = TempDir("dit-pt"), x = folder + "/expected"
        let d = try cli.run(
            "run", "latent-diffusion", "denoise", "--set", "model=\(folder)/original/dit-tiny.pt", "--set", "dit_pt_heads=2",
            "--set", "dit_pt_numerics=diffusers", "--input", "latents=\(x)/x_t.npy", "--input", "timesteps=\(x)/t.npy",
            "--input", "classes=\(x)/y.npy", "--out", dir.sub("d"))
        #expect(d.status == 0, "\(d.stderr)")
        let eps = relative(try output(dir.path + "/d", "eps"), try expected("eps_original"))
        #expect(eps <= 1e-4, "eps relative error \(eps)")
        let noHeads = try cli.run(
            "run", "latent-diffusion", "denoise", "--set", "model=\(folder)/original", "--input", "latents=\(x)/x_t.npy",
            "--input", "classes=\(x)/y.npy", "--out", dir.sub("h"))
        #expect(noHeads.status != 0 && noHeads.stderr.contains("dit_heads"), "\(noHeads.stderr)")

        try NPY.encode(Tensor([Int64(3), 11])).write(to: URL(fileURLWithPath: dir.path + "/bad.npy"))
        let bad = try cli.run(
            "run", "latent-diffusion", "sample", "--set", "model=\(folder)", "--set", "steps=2", "--input", "noise=\(x)/noise.npy",
            "--input", "classes=\(dir.path)/bad.npy", "--out", dir.sub("b"))
        #expect(bad.status != 0 && bad.stderr.contains("class 11 is beyond num_embeds_ada_norm = 10"), "\(bad.stderr)")

        let partial = dir.sub("partial")
        for part in ["model_index.json", "transformer", "vae"] { try FileManager.default.copyItem(atPath: folder + "/" + part, toPath: partial + "/" + part) }
        let missing = try cli.run("run", "latent-diffusion", "config", "--set", "model=\(partial)")
        #expect(missing.status != 0 && missing.stderr.contains("scheduler/ has no scheduler_config.json"), "\(missing.stderr)")

        let c = try cli.run("run", "latent-diffusion", "config", "--set", "model=\(folder)", "--json")
        #expect(c.status == 0, "\(c.stderr)")
        let result = (try JSONSerialization.jsonObject(with: Data(c.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any]
        #expect(result?["classes"] as? Double == 10 && result?["null_class"] as? Double == 10 && result?["image_size"] as? Double == 16)
        #expect((result?["alphas_cumprod"] as? [Double])?.count == 1000 && result?["set_alpha_to_one"] as? Bool == false)
    }

    /// decode with grad_images: the latents' gradient through the VAE decoder, of the latents' shape.
    @Test func decodeBackpropagatesThroughTheVAE() throws {
        let cli = CLI(), dir = TempDir("dit-vjp"), x = folder + "/expected"
        try NPY.encode(Tensor(shape: [2, 3, 16, 16], scalars: [Float](repeating: 1, count: 2 * 3 * 16 * 16)))
            .write(to: URL(fileURLWithPath: dir.path + "/g.npy"))
        let r = try cli.run(
            "run", "latent-diffusion", "decode", "--set", "model=\(folder)", "--input", "latents=\(x)/x_t.npy", "--input", "grad_images=\(dir.path)/g.npy",
            "--out", dir.sub("o"))
        #expect(r.status == 0, "\(r.stderr)")
        let g = try NPY.read(path: dir.path + "/o/grad_latents.npy")
        #expect(g.shape == [2, 4, 8, 8])
        let values: [Float] = try g.scalars()
        #expect(values.allSatisfy(\.isFinite) && values.contains { $0 != 0 })
    }
}
