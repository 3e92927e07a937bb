import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// Parity with diffusers 0.42 on `dit-tiny` (Tests/Fixtures/dit-tiny/make_fixture.py: a random-weight
/// DiTPipeline — DiTTransformer2DModel 2 layers × 2 heads × 16, patch 2 on 8×8×4 latents, 10 classes,
/// learned σ; AutoencoderKL 16/32 channels, 8 groups; DDIMScheduler linear, set_alpha_to_one false).
/// The error measure is max|ours − reference| / max|reference|.
@Suite struct DiTPipelineTests {
    static let folder = TestPaths.fixtures + "/dit-tiny"

    static func npy(_ name: String) throws -> Tensor { try NPY.read(path: folder + "/expected/\(name).npy") }
    static func floats(_ name: String) throws -> [Float] { try npy(name).converted(to: .float32).scalars() }
    static func ints(_ name: String) throws -> [Int] { try npy(name).integers() }

    static func relative(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
        let diff = zip(a, b).map { Double(abs($0 - $1)) }.max() ?? 0
        return diff / max(b.map { Double(abs($0)) }.max() ?? 0, 1e-30)
    }

    static let pipeline = Result(catching: { try DiTPipeline.load(path: folder) })

    @Test func theConfigsAreReadFromTheFolder() throws {
        let p = try Self.pipeline.get()
        let t = p.transformer.config, v = p.vae.config
        #expect(t.heads == 2 && t.headDim == 16 && t.layers == 2 && t.patch == 2 && t.sampleSize == 8 && t.classes == 10)
        #expect(t.inChannels == 4 && t.outChannels == 8 && t.learnsSigma && t.mlpNormEps == 1e-5 && t.frequencyShift == 1)
        #expect(v.blockOutChannels == [16, 32] && v.groups == 8 && v.layersPerBlock == 1 && v.latentChannels == 4 && v.scalingFactor == 0.18215)
        #expect(!p.scheduler.setAlphaToOne && p.scheduler.stepsOffset == 0 && p.scheduler.spacing == .leading && !p.scheduler.clipSample)
    }

    @Test func epsMatchesDiffusersWithin1e4() throws {
        let p = try Self.pipeline.get()
        let out = try p.modelOutput(try Self.floats("x_t"), timesteps: try Self.ints("t"), classes: try Self.ints("y"))
        let error = Self.relative(out, try Self.floats("eps"))
        #expect(error <= 1e-4, "eps relative error \(error)")
    }

    @Test func vaeDecodeMatchesDiffusersWithin1e4() throws {
        let p = try Self.pipeline.get()
        let images = try p.decode(try Self.floats("x_t"), count: 2)
        let error = Self.relative(images, try Self.floats("decoded"))
        #expect(error <= 1e-4, "decoded relative error \(error)")
    }

    /// The DDIM grid diffusers' set_timesteps(10) gives (expected.json: 900, 800, …, 0) and the
    /// 10-step sample with CFG 2.0 on all 4 channels, batch [cond, null].
    @Test func guidedDDIMSampleMatchesDiffusersWithin1e3() throws {
        let p = try Self.pipeline.get()
        let ddim = try DDIM(scheduler: p.scheduler, steps: 10)
        #expect(ddim.timesteps == Array(stride(from: 0, through: 900, by: 100)))
        let z = try ddim.sample(
            try Self.floats("noise"), from: ddim.timesteps.count - 1, classes: try Self.ints("classes"), predict: p.predictor(guidance: 2))
        let error = Self.relative(z, try Self.floats("sample"))
        #expect(error <= 1e-3, "sample relative error \(error)")
    }

    /// guidance_channels=3 (DiT's forward_with_cfg): channels 0–2 are guided exactly as with all
    /// channels, channel 3 is the conditional ε alone (computed in a batch of 2 instead of 4, so equal
    /// to float32 rounding: within 1e-5 of values ≈ 0.3).
    @Test func guidingTheFirstThreeChannelsLeavesTheFourthConditional() throws {
        let p = try Self.pipeline.get()
        let x = try Self.floats("x_t"), y = try Self.ints("y"), plane = 64, d = 4 * plane
        let all = try p.predictor(guidance: 3)(x, 500, y), three = try p.predictor(guidance: 3, channels: .first(3))(x, 500, y)
        let cond = try p.predictor(guidance: 1)(x, 500, y)
        for i in 0..<2 {
            let rows = (i * d)..<(i * d + 3 * plane), fourth = (i * d + 3 * plane)..<((i + 1) * d)
            #expect(Array(three[rows]) == Array(all[rows]))
            #expect(Self.relative(Array(three[fourth]), Array(cond[fourth])) <= 1e-5)
            #expect(Self.relative(Array(all[fourth]), Array(cond[fourth])) > 1e-2)
        }
    }

    /// DDIMInverseScheduler's 7 steps (0, 100, …, 600; the first an identity because ᾱ before 0 is
    /// ᾱ_0 with set_alpha_to_one false), conditional ε, from the fixture's sample.
    @Test func ddimInversionMatchesDiffusersWithin1e3() throws {
        let p = try Self.pipeline.get()
        let ddim = try DDIM(scheduler: p.scheduler, steps: 10)
        #expect(Array(ddim.timesteps.prefix(7)) == (try Self.ints("inverted_timesteps")))
        let z = try ddim.invert(try Self.floats("sample"), to: 6, classes: try Self.ints("classes"), predict: p.predictor(guidance: 1))
        let error = Self.relative(z, try Self.floats("inverted"))
        #expect(error <= 1e-3, "inverted relative error \(error)")
    }

    /// make_original.py's `.pt` (DiT's names, one shared embedding: block 0's). With diffusers'
    /// numerics it matches diffusers on the tied model; with DiT's own (the default for a .pt) it
    /// matches the same model with frequencies over 128 and the MLP norm's eps 1e-6.
    @Test func theOriginalCheckpointLoadsToTheSameEps() throws {
        let pt = Self.folder + "/original/dit-tiny.pt"
        let x = try Self.floats("x_t"), t = try Self.ints("t"), y = try Self.ints("y")
        let asDiffusers = try DiTPipeline.load(path: pt, original: .init(heads: 2, diffusersNumerics: true))
        let c = asDiffusers.transformer.config
        #expect(c.width == 32 && c.layers == 2 && c.patch == 2 && c.sampleSize == 8 && c.classes == 10 && c.outChannels == 8)
        let e1 = Self.relative(try asDiffusers.modelOutput(x, timesteps: t, classes: y), try Self.floats("eps_original"))
        #expect(e1 <= 1e-4, "eps (diffusers numerics) relative error \(e1)")
        let asDiT = try DiTPipeline.load(path: Self.folder + "/original", original: .init(heads: 2))
        #expect(asDiT.transformer.config.frequencyShift == 0 && asDiT.transformer.config.mlpNormEps == 1e-6)
        let e2 = Self.relative(try asDiT.modelOutput(x, timesteps: t, classes: y), try Self.floats("eps_original_dit"))
        #expect(e2 <= 1e-4, "eps (DiT numerics) relative error \(e2)")
    }

    /// The inference path (GradMode disabled: fused layer norm + modulation, `Kernels.attention`,
    /// fused GELU-tanh) computes what the differentiable graph computes, on the same parameters: the
    /// fixture's diffusers layout, the original layout (one fused qkv, one shared embedding), and a
    /// seeded model of other sizes (original layout; 3 heads × 8, patch 3 on 12×12×3 latents, 7 classes,
    /// ε only, every parameter redrawn) whose
    /// odd widths and token count reach the kernels' tails. A wrong modulation part, gate or eps
    /// changes the output far beyond 1e-5.
    @Test func theInferencePathComputesTheGraphsOutput() throws {
        func compare(_ m: DiTTransformer2DModel, _ x: Tensor, _ t: [Int], _ y: [Int], _ what: String) {
            let fast = GradMode.disabled { m(Variable(x), timesteps: t, classes: y) }.scalars
            let graph = GradMode.with(true) { m(Variable(x), timesteps: t, classes: y) }.scalars
            let error = Self.relative(fast, graph)
            #expect(error <= 1e-5, "\(what): inference vs graph relative error \(error)")
        }
        let x = try Self.npy("x_t"), t = try Self.ints("t"), y = try Self.ints("y")
        compare(try Self.pipeline.get().transformer, x, t, y, "diffusers layout")
        compare(try DiTPipeline.load(path: Self.folder + "/original", original: .init(heads: 2)).transformer, x, t, y, "original layout")
        let c = DiTConfig(heads: 3, headDim: 8, inChannels: 3, outChannels: 3, layers: 2, sampleSize: 12, patch: 3, classes: 7)
        let m = try DiTTransformer2DModel(config: c, seed: 11, layout: .original)
        var rng = SeededGenerator(seed: 5)
        // A fresh model is adaLN-Zero (modulations and final linear 0: output 0 on both paths), so
        // every parameter is redrawn N(0, 0.3²) to make each part of the computation count.
        for (_, p) in m.namedParameters {
            p.assign(Tensor(shape: p.value.shape, scalars: (0..<p.value.count).map { _ in Float(rng.nextNormal()) * 0.3 }))
        }
        let z = Tensor(shape: [3, 3, 12, 12], scalars: (0..<(3 * 3 * 144)).map { _ in Float(rng.nextNormal()) })
        let fast = GradMode.disabled { m(Variable(z), timesteps: [999, 0, 421], classes: [6, 7, 0]) }.scalars
        #expect((fast.map { abs($0) }.max() ?? 0) > 0.1, "the redrawn model's output is not trivially 0")
        compare(m, z, [999, 0, 421], [6, 7, 0], "seeded 3×8, patch 3")
    }

    /// The transformer's weights as `diffusion_pytorch_model.bin` (make_bin.py: torch.save of the same
    /// state dict), read by the PyTorch checkpoint reader: the same eps.
    @Test func aBinPipelineLoadsToTheSameEps() throws {
        let p = try DiTPipeline.load(path: Self.folder + "/bin-pipeline")
        #expect(p.weightFiles[0].hasSuffix("diffusion_pytorch_model.bin"))
        let out = try p.modelOutput(try Self.floats("x_t"), timesteps: try Self.ints("t"), classes: try Self.ints("y"))
        let error = Self.relative(out, try Self.floats("eps"))
        #expect(error <= 1e-4, "eps relative error \(error)")
    }

    /// A VAE checkpoint with the mid attention's pre-0.14 names (query, key, value, proj_attn), as
    /// older SD VAE files have: read to the same decoder.
    @Test func legacyAttentionNamesLoadToTheSameVAE() throws {
        let p = try Self.pipeline.get()
        let ck = try Checkpoint(path: Self.folder + "/vae/diffusion_pytorch_model.safetensors")
        let renames = ["to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"]
        let tensors = try ck.names.map { name -> (name: String, tensor: Tensor) in
            var renamed = name
            for (new, old) in renames where name.contains(".attentions.0.\(new).") {
                renamed = name.replacingOccurrences(of: ".attentions.0.\(new).", with: ".attentions.0.\(old).")
            }
            return (renamed, try ck.float32(name))
        }
        #expect(tensors.contains { $0.name == "decoder.mid_block.attentions.0.proj_attn.weight" })
        let tmp = TempDir("vae-legacy")
        try SafeTensors.write(tensors, metadata: [:], to: tmp.path + "/vae.safetensors")
        let legacy = try AutoencoderKL(config: p.vae.config, checkpoint: try Checkpoint(path: tmp.path + "/vae.safetensors"))
        let z = Variable(try Tensor(try Self.floats("x_t"), shape: [2, 4, 8, 8]))
        let a = GradMode.disabled { legacy.decode(z) }.scalars, b = GradMode.disabled { p.vae.decode(z) }.scalars
        #expect(a == b)
    }

    @Test func theOriginalCheckpointNeedsHeadsForAnUnknownWidth() throws {
        #expect {
            try DiTPipeline.load(path: Self.folder + "/original/dit-tiny.pt")
        } throws: { "\($0)".contains("attention heads cannot be read") && "\($0)".contains("dit_heads") }
    }

    /// The VAE encoder: the posterior mean of decoded images is finite and of the latent shape, and
    /// a draw with zero noise is the mean (DiagonalGaussianDistribution.sample with ε = 0).
    @Test func encodeGivesTheMeanAndADrawAroundIt() throws {
        let p = try Self.pipeline.get()
        let images = try p.decode(try Self.floats("x_t"), count: 2).map { max(-1, min(1, $0)) }
        let mean = try p.encode(images, count: 2)
        #expect(mean.count == 2 * 4 * 8 * 8 && mean.allSatisfy(\.isFinite))
        let draw = try p.encode(images, count: 2, noise: [Float](repeating: 0, count: mean.count))
        #expect(Self.relative(draw, mean) == 0)
    }

    /// The VAE decoder is differentiable: the vector–Jacobian product against a central difference
    /// of Σ u·decode(z) in one latent coordinate (step 1e-2, float32; agreement within 2 %).
    @Test func theDecoderGradientMatchesAFiniteDifference() throws {
        let p = try Self.pipeline.get()
        let z0 = Array(try Self.floats("x_t").prefix(4 * 8 * 8))
        var rng = SeededGenerator(seed: 3)
        let u = (0..<(3 * 16 * 16)).map { _ in Float(rng.nextNormal()) }
        let z = Variable(try Tensor(z0, shape: [1, 4, 8, 8]), requiresGrad: true)
        let out = GradMode.with(true) { p.vae.decode(z) }
        let grad = Autograd.gradients(of: (out * Variable(try Tensor(u, shape: out.shape))).sum(), wrt: [z])[0]!.scalars
        func f(_ v: [Float]) throws -> Double {
            let o = GradMode.disabled { p.vae.decode(Variable(try! Tensor(v, shape: [1, 4, 8, 8]))) }.scalars
            return zip(o, u).map { Double($0 * $1) }.reduce(0, +)
        }
        for k in [5, 77, 200] {
            var plus = z0, minus = z0
            plus[k] += 1e-2
            minus[k] -= 1e-2
            let numeric = (try f(plus) - f(minus)) / 2e-2
            #expect(abs(numeric - Double(grad[k])) <= 0.02 * max(abs(numeric), 1e-3), "coordinate \(k): \(grad[k]) vs \(numeric)")
        }
    }

    /// diffusers' set_timesteps for the other spacings and offsets (values as numpy computes them:
    /// trailing round(arange(1000, 0, −100)) − 1; linspace round(linspace(0, 999, 10)); leading with
    /// steps_offset 1), and the β schedules' endpoints.
    /// A distiller's DDIM through the host: the backbone's ᾱ table with its scheduler's grid settings
    /// walks the same grid as the scheduler itself (dit-tiny: leading, offset 0, set_alpha_to_one
    /// false, so the clean end is ᾱ_0 = 1 − 1e-4, not 1); a table of another length is refused.
    @Test func aGivenAlphaTableWithTheSchedulerSettingsIsTheSchedulersGrid() throws {
        var c = try DDIMSchedulerConfig.load(path: TestPaths.fixtures + "/dit-tiny/scheduler/scheduler_config.json")
        c.stepsOffset = 1
        let own = try DDIM(scheduler: c, steps: 10)
        let given = try DDIM(alphaBar: c.alphasCumprod, scheduler: c, steps: 10)
        #expect(given.timesteps == own.timesteps && given.timesteps == [1, 101, 201, 301, 401, 501, 601, 701, 801, 901])
        #expect(given.finalAlphaBar == c.alphasCumprod[0] && abs(given.finalAlphaBar - 0.9999) < 1e-7)
        #expect(given.previousAlphaBar(level: 3) == c.alphasCumprod[201])
        #expect(throws: DiffusionError.self) { try DDIM(alphaBar: Array(c.alphasCumprod.dropLast()), scheduler: c, steps: 10) }
    }

    @Test func schedulerSpacingsAndBetas() throws {
        var c = DDIMSchedulerConfig()
        c.spacing = .trailing
        #expect(try c.timesteps(10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99])
        c.spacing = .linspace
        #expect(try c.timesteps(10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0])
        c.spacing = .leading
        c.stepsOffset = 1
        #expect(try c.timesteps(4) == [751, 501, 251, 1])
        // scaled_linear: (√0.00085 + (√0.012 − √0.00085)·t/999)²: 0.00085 at 0, 0.012 at 999.
        c.betaSchedule = .scaledLinear
        c.betaStart = 0.00085
        c.betaEnd = 0.012
        let b = c.betas
        #expect(abs(b[0] - 0.00085) < 1e-9 && abs(b[999] - 0.012) < 1e-8)
        // squaredcos_cap_v2: β_0 = 1 − f(1/1000)/f(0) with f(t) = cos²((t + 0.008)/1.008·π/2) ≈ 4.1e-5.
        c.betaSchedule = .squaredcosCapV2
        let f = { (t: Double) in pow(cos((t + 0.008) / 1.008 * Double.pi / 2), 2) }
        #expect(abs(c.betas[0] - (1 - f(0.001) / f(0))) < 1e-9 && c.betas[999] == Double(Float(0.999)))
        #expect(throws: DiffusionError.self) { try c.timesteps(0) }
    }

    /// The trailing grid's step lands on the previous grid timestep; linspace's on t − T/steps as
    /// diffusers' step computes it (888 − 100 = 788, not 777).
    @Test func theLevelBelowFollowsDiffusersStride() throws {
        var c = DDIMSchedulerConfig()
        c.clipSample = false
        c.spacing = .linspace
        let ddim = try DDIM(scheduler: c, steps: 10)
        let ac = c.alphasCumprod
        #expect(ddim.previousAlphaBar(level: 8) == ac[788])
        #expect(ddim.previousAlphaBar(level: 0) == 1) // set_alpha_to_one (default true)
        c.setAlphaToOne = false
        #expect(try DDIM(scheduler: c, steps: 10).previousAlphaBar(level: 0) == ac[0])
    }

    @Test func aPipelineMissingAPartOrDisagreeingIsRefused() throws {
        let tmp = TempDir("dit")
        let fm = FileManager.default
        for part in ["model_index.json", "transformer", "scheduler"] {
            try fm.copyItem(atPath: Self.folder + "/" + part, toPath: tmp.path + "/" + part)
        }
        #expect {
            try DiTPipeline.load(path: tmp.path)
        } throws: { "\($0)".contains("vae/ has no config.json") }
        // A VAE with 3 latent channels.
        try fm.createDirectory(atPath: tmp.path + "/vae", withIntermediateDirectories: true)
        let config = try String(contentsOfFile: Self.folder + "/vae/config.json", encoding: .utf8)
        try config.replacingOccurrences(of: "\"latent_channels\": 4", with: "\"latent_channels\": 3")
            .write(toFile: tmp.path + "/vae/config.json", atomically: true, encoding: .utf8)
        try fm.copyItem(atPath: Self.folder + "/vae/diffusion_pytorch_model.safetensors", toPath: tmp.path + "/vae/diffusion_pytorch_model.safetensors")
        #expect {
            try DiTPipeline.load(path: tmp.path)
        } throws: { "\($0)".contains("4 latent channels (in_channels) but the VAE makes 3") }
        // A VAE whose sample size disagrees with the transformer's 8 × 2.
        try config.replacingOccurrences(of: "\"sample_size\": 16", with: "\"sample_size\": 32")
            .write(toFile: tmp.path + "/vae/config.json", atomically: true, encoding: .utf8)
        #expect {
            try DiTPipeline.load(path: tmp.path)
        } throws: { "\($0)".contains("disagrees with the VAE's sample_size 32") }
    }

    /// Every mismatch in one error: a transformer config with 3 layers names the missing block 2
    /// tensors; the class beyond num_embeds_ada_norm and the wrong latent side are refused.
    @Test func mismatchesAndBadInputsAreNamed() throws {
        let c = try DiTConfig.load(path: Self.folder + "/transformer/config.json")
        var three = c
        three.layers = 3
        let ck = try Checkpoint(path: Self.folder + "/transformer/diffusion_pytorch_model.safetensors")
        #expect {
            try DiTTransformer2DModel(config: three, checkpoint: ck)
        } throws: { e in
            let s = "\(e)"
            return s.contains("transformer_blocks.2.attn1.to_q.weight: missing") && s.contains("transformer_blocks.2.ff.net.2.bias: missing")
        }
        let p = try Self.pipeline.get()
        #expect {
            _ = try p.modelOutput([Float](repeating: 0, count: 256), timesteps: [10], classes: [11])
        } throws: { "\($0)".contains("class 11 is beyond num_embeds_ada_norm = 10") }
        #expect {
            try p.transformer.check(shape: [1, 4, 16, 16], timesteps: [0], classes: [0], trainSteps: 1000)
        } throws: { "\($0)".contains("[N, 4, 8, 8]") }
    }
}
