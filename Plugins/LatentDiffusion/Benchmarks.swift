import DistillationKit
import Foundation
import MenagerieKit
import NN
import Tensors

/// The embedded model's DDIM step and host round trip, and DiT-XL/2 + the SD VAE at 256 px (random
/// weights drawn here: speed does not depend on their values). `scripts/bench-reference.py` times
/// diffusers 0.42 on PyTorch on the same sizes for the ratio.
extension LatentDiffusionComponent {
    static let benchmarks = [
        BenchmarkSpec("diffusion.denoiser_step_64", unit: "ms", summary: "one DDIM step with CFG 4 on 64 latents of the embedded latent diffusion model"),
        BenchmarkSpec(
            "diffusion.denoise_direct", unit: "ms", summary: "ε with CFG 4 on 16 latents of the embedded model, called in-process (what a DDIM step computes)"),
        BenchmarkSpec(
            "diffusion.denoise_host", unit: "ms",
            summary:
                "the same ε through the host (`denoise`: options, tensors in and out) — a distiller's round trip per DDIM step; the difference is the host's cost"
        ),
        BenchmarkSpec(
            "dit.xl2_cfg_step_256", unit: "ms",
            summary: "DiT-XL/2 at 256 px (random weights, diffusers' sizes): one classifier-free-guided denoiser step, batch 2 ([cond, null])",
            ratioTarget: 1.0),
        BenchmarkSpec(
            "vae.decode_256", unit: "ms",
            summary: "the SD VAE's decoder (AutoencoderKL 128/256/512/512, random weights): one 4×32×32 latent → a 256×256 image",
            ratioTarget: 1.0),
    ]
    func benchmark(_ run: BenchmarkRun) throws {
        try benchmarkPipeline(run)
        if run.wanted("diffusion.denoiser_step_64") {
            var samples: [Double] = []
            for _ in 0..<3 {
                let r = try run.invoke("latent-diffusion", operation: "sample", options: ["steps": 10, "classes": [0, 1, 2, 3, 4, 5, 6, 7], "per_class": 8])
                samples.append(1000 * (r.result["seconds"]?.doubleValue ?? .nan) / 10)
            }
            run.records.append(run.record("diffusion.denoiser_step_64", unit: "ms", samples))
        }
        guard run.wanted("diffusion.denoise_direct") || run.wanted("diffusion.denoise_host") else { return }
        let m = try loadDiffusion(""), c = m.config
        var rng = SeededGenerator(seed: 3)
        let n = 16, x = (0..<(n * c.latentDimension)).map { _ in Float(rng.nextNormal()) }, y = (0..<n).map { $0 % c.classes }
        let predict = m.predictor(guidance: 4)
        let latents = try Tensor(x, shape: [n] + [c.latentChannels, c.latentSize, c.latentSize]), labels = Tensor(y.map(Int64.init))
        _ = try predict(x, 500, y)
        // Interleaved, so that both see the same machine.
        var direct: [Double] = [], host: [Double] = []
        for _ in 0..<max(5, run.repeats) {
            var t0 = run.now()
            _ = try predict(x, 500, y)
            direct.append(run.now() - t0)
            t0 = run.now()
            _ = try run.invoke(
                "latent-diffusion", operation: "denoise", options: ["timestep": 500, "guidance": 4], inputs: [("latents", latents), ("labels", labels)])
            host.append(run.now() - t0)
        }
        run.records.append(run.record("diffusion.denoise_direct", unit: "ms", direct))
        run.records.append(run.record("diffusion.denoise_host", unit: "ms", host))
        let median = { (v: [Double]) in v.sorted()[v.count / 2] }
        run.notes.append(
            String(
                format: "diffusion: a host round trip adds %.0f µs to a %.2f ms DDIM step on 16 latents (%.1f %%)", 1000 * (median(host) - median(direct)),
                median(direct), 100 * (median(host) - median(direct)) / median(direct)))
    }
}

extension LatentDiffusionComponent {
    /// The SD VAE's sizes (stabilityai/sd-vae-ft-ema, the VAE of facebook/DiT-XL-2-256).
    static func sdVAE() -> AutoencoderKLConfig {
        var v = AutoencoderKLConfig()
        v.blockOutChannels = [128, 256, 512, 512]
        v.layersPerBlock = 2
        v.groups = 32
        v.latentChannels = 4
        v.sampleSize = 256
        return v
    }

    func benchmarkPipeline(_ run: BenchmarkRun) throws {
        let repeats = max(3, min(run.repeats, 10))
        if run.wanted("dit.xl2_cfg_step_256") {
            let config = DiTConfig.xl2_256
            let transformer = try DiTTransformer2DModel(config: config, seed: 1)
            var rng = SeededGenerator(seed: 2)
            let s = config.sampleSize, x = (0..<(config.inChannels * s * s)).map { _ in Float(rng.nextNormal()) }
            let vae = try AutoencoderKL(config: Self.sdVAE(), seed: 3)
            var scheduler = DDIMSchedulerConfig()
            scheduler.clipSample = false
            let pipeline = try DiTPipeline(transformer: transformer, vae: vae, scheduler: scheduler, layout: "random", weightFiles: [])
            let ddim = try DDIM(scheduler: scheduler, steps: 50)
            let predict = pipeline.predictor(guidance: 4)
            _ = try predict(x, 500, [207])
            var samples: [Double] = []
            for _ in 0..<repeats {
                let t0 = run.now()
                let e = try predict(x, ddim.timesteps[25], [207])
                _ = ddim.step(x, epsilon: e, level: 25)
                samples.append(run.now() - t0)
            }
            var r = run.record("dit.xl2_cfg_step_256", unit: "ms", samples)
            r.ratioTarget = 1.0
            run.records.append(r)
        }
        if run.wanted("vae.decode_256") {
            let vae = try AutoencoderKL(config: Self.sdVAE(), seed: 3)
            var rng = SeededGenerator(seed: 4)
            let z = Variable(Tensor(shape: [1, 4, 32, 32], scalars: (0..<(4 * 32 * 32)).map { _ in Float(rng.nextNormal()) }))
            _ = GradMode.disabled { vae.decode(z) }
            var samples: [Double] = []
            for _ in 0..<repeats {
                let t0 = run.now()
                _ = GradMode.disabled { vae.decode(z) }
                samples.append(run.now() - t0)
            }
            var r = run.record("vae.decode_256", unit: "ms", samples)
            r.ratioTarget = 1.0
            run.records.append(r)
        }
    }
}
