import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// `bioclip2 embed` as the differentiable CLIP backbone CONCORD calls through the host: texts in,
/// embeddings out; images with `grad_embedding` in, the vector-Jacobian product out — checked
/// against central finite differences of the tape-free inference path on `openclip-tiny`.
@Suite struct BackboneGradientTests {
    let folder = TestPaths.fixtures + "/openclip-tiny"

    @Test func inputGradientMatchesFiniteDifferences() throws {
        let model = try CLIP(folder: folder)
        let s = model.config.vision.imageSize, e = model.config.embedDim
        var rng = SeededGenerator(seed: 2)
        let x = (0..<(3 * s * s)).map { _ in Float(rng.nextNormal()) * 0.5 }
        let g = (0..<e).map { _ in Float(rng.nextNormal()) }
        let dir = TempDir("vjp")
        try NPY.encode(try Tensor(x, shape: [1, 3, s, s])).write(to: URL(fileURLWithPath: dir.path + "/x.npy"))
        try NPY.encode(try Tensor(g, shape: [1, e])).write(to: URL(fileURLWithPath: dir.path + "/g.npy"))
        let cli = CLI()
        let r = try cli.run(
            "run", "bioclip2", "--set", "model=\(folder)", "--input", "input=\(dir.path)/x.npy", "--input", "grad_embedding=\(dir.path)/g.npy",
            "--out", dir.sub("out"))
        #expect(r.status == 0, "\(r.stderr)")
        let grad: [Float] = try NPY.read(path: dir.sub("out") + "/grad_input.npy").scalars()
        func objective(_ v: [Float]) throws -> Double {
            let emb: [Float] = try model.encodeImage(try Tensor(v, shape: [1, 3, s, s])).scalars()
            return zip(emb, g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var worst = 0.0
        for i in [0, 17, 200, 3 * s * s - 1] {
            var plus = x, minus = x
            plus[i] += 1e-2
            minus[i] -= 1e-2
            let numeric = (try objective(plus) - objective(minus)) / 2e-2
            worst = max(worst, abs(numeric - Double(grad[i])) / max(abs(numeric), 1e-2))
        }
        #expect(worst < 0.02, "relative error \(worst)")
        // Texts: one embedding each, with the preprocessing CONCORD needs in the result.
        let t = try cli.run("run", "bioclip2", "--set", "model=\(folder)", "--set", "texts=[\"a bird\",\"a fish\"]", "--out", dir.sub("t"), "--json")
        #expect(t.status == 0, "\(t.stderr)")
        #expect(try NPY.read(path: dir.sub("t") + "/embedding.npy").shape == [2, e])
        #expect(t.stdout.contains("\"image_size\" : \(s)") || t.stdout.contains("\"image_size\": \(s)"))
    }
}
