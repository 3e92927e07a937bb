import Formats
import Foundation
import LatentDiffusion
import NN
import Tensors
import TestSupport
import Testing

/// The embedded latent-diffusion model's denoiser is NN's `DiTTransformer2DModel` (DiT's layout,
/// ε only). Expected numbers: `Tests/Fixtures/ldm-tol-eps`, written by the plugin's former `DiT`
/// class (commit 26d763d, `LDMFixtureGenerator`) on the shipped weights before their conversion.
@Suite struct LatentDiffusionDiTTests {
    static let fixture = TestPaths.fixtures + "/ldm-tol-eps"
    static let shipped = TestPaths.sourceRoot + "/Plugins/LatentDiffusion/Resources/ldm-tol"

    /// max|a − b| / max|b|.
    func relative(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
        let diff = zip(a, b).map { Double(abs($0 - $1)) }.max() ?? 0
        return diff / max(Double(b.map { abs($0) }.max() ?? 0), 1e-30)
    }

    func npy(_ name: String) throws -> Tensor { try NPY.read(path: Self.fixture + "/" + name) }

    struct Inputs {
        let x: Tensor, r: Tensor, t: [Int], y: [Int]
    }

    func inputs() throws -> Inputs {
        Inputs(x: try npy("x.npy"), r: try npy("r.npy"), t: try npy("t.npy").integers(), y: try npy("y.npy").integers())
    }

    /// ε for seeded latents at t = 0, 1, 250, 500, 760, 999 and classes 0, 17, 63, 5 and the null
    /// class 64 (twice): the old class's values within 1e-5 of their maximum (measured 5.5e-7: the
    /// old class computed the timestep features in float64, NN as torch in float32).
    @Test func theEmbeddedModelComputesTheOldDiTsEpsilon() throws {
        let m = try LatentDiffusionModel.load(folder: Self.shipped)
        let i = try inputs()
        #expect(m.dit.config.outChannels == m.config.latentChannels && !m.dit.config.learnsSigma)
        let eps = GradMode.disabled { m.dit(Variable(i.x), timesteps: i.t, classes: i.y) }.value
        #expect(eps.shape == [6, 4, 8, 8])
        let error = relative(try eps.scalars(as: Float.self), try npy("eps.npy").scalars(as: Float.self))
        #expect(error <= 1e-5, "relative error \(error)")
    }

    /// The training path: gradients of Σ r·ε with respect to the latents and eight parameters equal
    /// the old class's (names and layouts mapped here as the old class laid them out).
    @Test func itsGradientsAreTheOldDiTs() throws {
        let m = try LatentDiffusionModel.load(folder: Self.shipped)
        let i = try inputs()
        let params = Dictionary(uniqueKeysWithValues: m.dit.namedParameters)
        let p = m.config.patch, lc = m.config.latentChannels, w = m.config.ditWidth
        // old name → (new name, old layout of the new tensor's values)
        let map: [(String, String)] = [
            ("x_embedder.weight", "x_embedder.proj.weight"), ("y_embedder.table", "y_embedder.embedding_table.weight"),
            ("t_embedder.0.bias", "t_embedder.mlp.0.bias"), ("blocks.3.attn.qkv.bias", "blocks.3.attn.qkv.bias"),
            ("blocks.0.mlp.fc2.bias", "blocks.0.mlp.fc2.bias"), ("final.adaLN.bias", "final_layer.adaLN_modulation.1.bias"),
            ("final.linear.weight", "final_layer.linear.weight"), ("final.linear.bias", "final_layer.linear.bias"),
        ]
        let chosen = try map.map { _, new in
            guard let v = params[new] else { throw TestSupportError("no parameter \(new)") }
            return v
        }
        let xv = Variable(i.x, requiresGrad: true)
        let loss = GradMode.with(true) { (m.dit(xv, timesteps: i.t, classes: i.y) * Variable(i.r)).sum() }
        let grads = Autograd.gradients(of: loss, wrt: [xv] + chosen.map(\.variable))
        let gx = try #require(grads[0]).value
        let errorX = relative(try gx.scalars(as: Float.self), try npy("grad_x.npy").scalars(as: Float.self))
        #expect(errorX <= 1e-4, "∂/∂x: relative error \(errorX)")
        let expected = try Checkpoint(path: Self.fixture + "/grad_params.safetensors")
        for (k, (old, new)) in map.enumerated() {
            var g = try #require(grads[k + 1]).value.scalars(as: Float.self)
            if new.hasPrefix("final_layer.linear") {
                // The old final linear's rows are (channel, a, b); DiT's are (a, b, channel).
                let row = new.hasSuffix("weight") ? w : 1
                var back = g
                for ch in 0..<lc {
                    for a in 0..<p {
                        for b in 0..<p {
                            for j in 0..<row { back[(ch * p * p + a * p + b) * row + j] = g[((a * p + b) * lc + ch) * row + j] }
                        }
                    }
                }
                g = back
            }
            let error = relative(g, try expected.float32(old).scalars(as: Float.self))
            #expect(error <= 1e-4, "∂/∂\(new) (was \(old)): relative error \(error)")
        }
    }

    /// A folder under 0.2's names (the shipped weights laid out as the old class stored them: the
    /// patch linear [D, C·p·p], the final rows by channel first) is refused with the command that
    /// converts it; `convert` then gives the shipped file's tensors bit for bit, and refuses a
    /// folder that is already converted.
    @Test func aLegacyFolderIsRefusedThenConvertsExactly() throws {
        let dir = TempDir("ldm-legacy")
        let legacy = dir.sub("legacy")
        let ck = try Checkpoint(path: Self.shipped + "/model.safetensors")
        let c = try JSONDecoder().decode(LatentDiffusionConfig.self, from: Data(contentsOf: URL(fileURLWithPath: Self.shipped + "/config.json")))
        let p = c.patch, lc = c.latentChannels, w = c.ditWidth
        var old: [(name: String, tensor: Tensor)] = []
        for name in ck.names {
            let t = try ck.tensor(name)
            var n = name
            for (a, b) in [
                ("dit.x_embedder.proj.", "dit.x_embedder."), ("dit.t_embedder.mlp.", "dit.t_embedder."),
                ("dit.y_embedder.embedding_table.weight", "dit.y_embedder.table"), (".adaLN_modulation.1.", ".adaLN."),
                ("dit.final_layer.", "dit.final."),
            ] {
                n = n.replacingOccurrences(of: a, with: b)
            }
            if name == "dit.x_embedder.proj.weight" {
                old.append((n, try t.reshaped([w, lc * p * p])))
            } else if name.hasPrefix("dit.final_layer.linear.") {
                let v = try t.converted(to: .float32).scalars(as: Float.self), row = t.rank == 2 ? w : 1
                var back = v
                for ch in 0..<lc {
                    for a in 0..<p {
                        for b in 0..<p { for j in 0..<row { back[(ch * p * p + a * p + b) * row + j] = v[((a * p + b) * lc + ch) * row + j] } }
                    }
                }
                old.append((n, try Tensor(back, shape: t.shape).converted(to: t.dtype)))
            } else {
                old.append((n, t))
            }
        }
        #expect(old.contains { $0.name == "dit.final.adaLN.weight" } && old.contains { $0.name == "dit.blocks.3.adaLN.bias" })
        try SafeTensors.write(old, to: legacy + "/model.safetensors")
        try FileManager.default.copyItem(atPath: Self.shipped + "/config.json", toPath: legacy + "/config.json")

        let cli = CLI()
        let refused = try cli.run("run", "latent-diffusion", "sample", "--set", "model=\(legacy)", "--set", "per_class=1", "--set", "classes=[0]")
        #expect(refused.status != 0 && refused.stderr.contains("0.2's own names") && refused.stderr.contains("latent-diffusion convert"), "\(refused.stderr)")
        let converted = try cli.run("run", "latent-diffusion", "convert", "--set", "model=\(legacy)", "--out", dir.path + "/out")
        #expect(converted.status == 0, "\(converted.stderr)")
        let new = try Checkpoint(path: dir.path + "/out/model/model.safetensors")
        #expect(Set(new.names) == Set(ck.names))
        for name in ck.names {
            let a = try ck.tensor(name), b = try new.tensor(name)
            #expect(a.dtype == b.dtype && a.shape == b.shape && a.withUnsafeBytes { Data($0) } == b.withUnsafeBytes { Data($0) }, "\(name)")
        }
        let again = try cli.run("run", "latent-diffusion", "convert", "--set", "model=\(dir.path)/out/model", "--out", dir.path + "/again")
        #expect(again.status != 0 && again.stderr.contains("nothing to convert"), "\(again.stderr)")
    }

    /// Training NN's DiT as the plugin trains it (AdamW on ε-MSE): at adaLN-Zero's start ε̂ = 0, so
    /// the first loss is exactly mean(noise²); 40 steps on a fixed batch bring it below 70 % of that.
    @Test func trainingTheDenoiserReducesTheLoss() throws {
        var c = LatentDiffusionConfig()
        c.classes = 4
        c.imageSize = 16
        c.autoencoderWidths = [8, 8]
        c.ditWidth = 32
        c.ditHeads = 2
        c.ditDepth = 2
        let m = try LatentDiffusionModel(config: c, seed: 5)
        m.dit.isTraining = true
        var rng = SeededGenerator(seed: 9)
        let n = 8, shape = [n, c.latentChannels, c.latentSize, c.latentSize], count = shape.reduce(1, *)
        let x0 = (0..<count).map { _ in Float(rng.nextNormal()) }, noise = (0..<count).map { _ in Float(rng.nextNormal()) }
        let t = (0..<n).map { 100 * $0 + 50 }, y = (0..<n).map { $0 % (c.classes + 1) }
        let d = count / n
        var xt = [Float](repeating: 0, count: count)
        for k in 0..<n {
            let ab = m.schedule.alphaBar[t[k]]
            for j in 0..<d { xt[k * d + j] = Float(ab.squareRoot()) * x0[k * d + j] + Float((1 - ab).squareRoot()) * noise[k * d + j] }
        }
        let opt = AdamW(m.dit.parameters, learningRate: 1e-3, weightDecay: 0)
        var losses: [Float] = []
        for _ in 0..<40 {
            let prediction = m.dit(Variable(try Tensor(xt, shape: shape)), timesteps: t, classes: y)
            let diff = prediction - Variable(try Tensor(noise, shape: shape))
            let loss = (diff * diff).mean()
            losses.append(loss.scalars[0])
            opt.step(Autograd.gradients(of: loss, wrt: m.dit.parameters.map(\.variable)))
        }
        let initial = noise.map { $0 * $0 }.reduce(0, +) / Float(count)
        #expect(abs(losses[0] - initial) <= 1e-6 * initial, "first loss \(losses[0]), mean(noise²) \(initial)")
        #expect(losses.last! < 0.7 * losses[0], "losses \(losses)")
    }
}
