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
            "dit.xl2_cfg_step_256_bf16", unit: "ms",
            summary: "the same step with precision=bf16 (oneDNN bf16 linear products; timed interleaved with the fp32 step; absent where bf16 cannot run)"),
        BenchmarkSpec(
            "dit.xl2_cfg_step_256_b8", unit: "ms",
            summary:
                "the same step on 8 latents (16 rows [cond × 8, null × 8]): the batch D^3HR's inversion runs at (per-image cost of the statistics, Docs/methods/diffusion-dd.md)"
        ),
        BenchmarkSpec(
            "vae.encode_256", unit: "ms",
            summary: "the SD VAE's encoder (random weights): one 256×256 image → its 4×32×32 posterior mean (the first step of D^3HR's statistics)"),
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

/// CPU seconds used by this process so far (every thread): what a CPU-hour estimate counts, and
/// unlike the wall clock not inflated while the process waits for a core on a shared machine.
func processCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// "name: median wall X s, median CPU Y s (Z threads busy on average)".
func cpuNote(_ name: String, wall: [Double], cpu: [Double]) -> String {
    let median = { (v: [Double]) in v.sorted()[v.count / 2] }
    let w = median(wall) / 1000, c = median(cpu)
    return String(format: "%@: median wall %.2f s, median process CPU %.2f s (%.2f cores busy)", name, w, c, c / max(w, 1e-9))
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
        let bf16Name = "dit.xl2_cfg_step_256_bf16"
        var bf16Wanted = run.wanted(bf16Name)
        if bf16Wanted, let why = GEMM.bf16Unavailable() {
            run.notes.append("\(bf16Name): \(why)")
            bf16Wanted = false
        }
        for (name, batch) in [("dit.xl2_cfg_step_256", 1), ("dit.xl2_cfg_step_256_b8", 8)] where run.wanted(name) || (batch == 1 && bf16Wanted) {
            let config = DiTConfig.xl2_256
            let transformer = try DiTTransformer2DModel(config: config, seed: 1)
            var rng = SeededGenerator(seed: 2)
            let s = config.sampleSize, x = (0..<(batch * config.inChannels * s * s)).map { _ in Float(rng.nextNormal()) }
            let vae = try AutoencoderKL(config: Self.sdVAE(), seed: 3)
            var scheduler = DDIMSchedulerConfig()
            scheduler.clipSample = false
            let pipeline = try DiTPipeline(transformer: transformer, vae: vae, scheduler: scheduler, layout: "random", weightFiles: [])
            let ddim = try DDIM(scheduler: scheduler, steps: 50)
            let predict = pipeline.predictor(guidance: 4)
            let classes = [Int](repeating: 207, count: batch)
            // The bf16 step (batch 1) alternates with the fp32 one, so that both see the same machine.
            let withBF16 = batch == 1 && bf16Wanted
            _ = try predict(x, 500, classes)
            if withBF16 { _ = try GEMM.withPrecision(.bf16) { try predict(x, 500, classes) } }
            var samples: [Double] = [], cpu: [Double] = [], bf16: [Double] = []
            for _ in 0..<(batch == 1 ? repeats : 3) {
                let t0 = run.now(), c0 = processCPUSeconds()
                let e = try predict(x, ddim.timesteps[25], classes)
                _ = ddim.step(x, epsilon: e, level: 25)
                samples.append(run.now() - t0)
                cpu.append(processCPUSeconds() - c0)
                if withBF16 {
                    let t1 = run.now()
                    let e16 = try GEMM.withPrecision(.bf16) { try predict(x, ddim.timesteps[25], classes) }
                    _ = ddim.step(x, epsilon: e16, level: 25)
                    bf16.append(run.now() - t1)
                }
            }
            if run.wanted(name) {
                run.notes.append(cpuNote(name, wall: samples, cpu: cpu))
                var r = run.record(name, unit: "ms", samples)
                if batch == 1 { r.ratioTarget = 1.0 }
                run.records.append(r)
            }
            if withBF16 {
                run.records.append(run.record(bf16Name, unit: "ms", bf16))
                let median = { (v: [Double]) in v.sorted()[v.count / 2] }
                run.notes.append(String(format: "%@: %.2f× faster than the interleaved fp32 step (medians)", bf16Name, median(samples) / median(bf16)))
            }
        }
        if run.wanted("vae.encode_256") {
            let vae = try AutoencoderKL(config: Self.sdVAE(), seed: 3)
            var rng = SeededGenerator(seed: 5)
            let x = Variable(Tensor(shape: [1, 3, 256, 256], scalars: (0..<(3 * 256 * 256)).map { _ in Float(rng.nextNormal()) }))
            _ = GradMode.disabled { vae.encodeMean(x) }
            var samples: [Double] = [], cpu: [Double] = []
            for _ in 0..<repeats {
                let t0 = run.now(), c0 = processCPUSeconds()
                _ = GradMode.disabled { vae.encodeMean(x) }
                samples.append(run.now() - t0)
                cpu.append(processCPUSeconds() - c0)
            }
            run.notes.append(cpuNote("vae.encode_256", wall: samples, cpu: cpu))
            run.records.append(run.record("vae.encode_256", unit: "ms", samples))
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
