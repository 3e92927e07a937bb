import Formats
import Foundation
import LatentDiffusion
import NN
import Tensors
import TestSupport
import Testing

/// Writes Tests/Fixtures/ldm-tol-eps with the plugin's own `DiT` class (before it became an
/// instance of NN's DiTTransformer2DModel): seeded latents, timesteps and classes (the null class
/// too), the embedded model's ε for them, and gradients of Σ r·ε (r seeded) with respect to the
/// latents and a few parameters (under the old names). Runs only with LDM_WRITE_FIXTURE=1.
@Suite struct LDMFixtureGenerator {
    @Test func writeFixture() throws {
        guard ProcessInfo.processInfo.environment["LDM_WRITE_FIXTURE"] == "1" else { return }
        let out = TestPaths.fixtures + "/ldm-tol-eps"
        let m = try LatentDiffusionModel.load(folder: TestPaths.sourceRoot + "/Plugins/LatentDiffusion/Resources/ldm-tol")
        let c = m.config
        var rng = SeededGenerator(seed: 20261206)
        let n = 6
        let shape = [n, c.latentChannels, c.latentSize, c.latentSize]
        let x = Tensor.make(shape) { t in for i in 0..<shape.reduce(1, *) { t[i] = Float(rng.nextNormal()) } }
        let r = Tensor.make(shape) { t in for i in 0..<shape.reduce(1, *) { t[i] = Float(rng.nextNormal()) } }
        let steps = [0, 1, 250, 500, 760, 999], classes = [0, 17, 63, c.nullClass, 5, c.nullClass]
        let eps = GradMode.disabled { m.dit(Variable(x), timesteps: steps, classes: classes) }.value
        let xv = Variable(x, requiresGrad: true)
        let named = m.dit.namedParameters
        let kept = ["x_embedder.weight", "y_embedder.table", "t_embedder.0.bias", "blocks.3.attn.qkv.bias", "blocks.0.mlp.fc2.bias",
            "final.adaLN.bias", "final.linear.weight", "final.linear.bias"]
        let params = kept.map { k in named.first { $0.0 == k }!.1 }
        let loss = GradMode.with(true) { (m.dit(xv, timesteps: steps, classes: classes) * Variable(r)).sum() }
        let grads = Autograd.gradients(of: loss, wrt: [xv] + params.map(\.variable))
        try NPY.encode(x).write(to: URL(fileURLWithPath: out + "/x.npy"))
        try NPY.encode(r).write(to: URL(fileURLWithPath: out + "/r.npy"))
        try NPY.encode(Tensor(steps.map(Int64.init))).write(to: URL(fileURLWithPath: out + "/t.npy"))
        try NPY.encode(Tensor(classes.map(Int64.init))).write(to: URL(fileURLWithPath: out + "/y.npy"))
        try NPY.encode(eps).write(to: URL(fileURLWithPath: out + "/eps.npy"))
        try NPY.encode(grads[0]!.value).write(to: URL(fileURLWithPath: out + "/grad_x.npy"))
        try SafeTensors.write(zip(kept, grads.dropFirst()).map { ($0, $1!.value) }, metadata: ["note": "old DiT names"], to: out + "/grad_params.safetensors")
    }
}
