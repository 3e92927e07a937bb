import Formats
import Foundation
import NN
import Tensors

/// Prompt-CAM (Chowdhury et al., CVPR 2025): class-specific prompts at every layer of a frozen ViT
/// (VPT-Deep) and a head shared by all classes; the last block's attention of a class's prompt over
/// the patches, per head, shows the traits that class looks for.
///
/// Layer l's input is [P_l (C×D), CLS, patches]; after each block the C prompt outputs are replaced
/// by P_{l+1}, except after the last, where they are kept: logit_c = w·LN(z_c) + b (LN the ViT's final
/// norm, Linear(D → 1) shared). Prompts start at U(±√(6/(3·p² + D))). No attention mask.
// @unchecked: its parameters lock their own state; the modules are used by one training or explaining call at a time.
public final class PromptCAMModel: @unchecked Sendable {
    public let backbone: ViT
    public let prompts: Parameter // [L, C, D]
    public let head: Linear // D → 1
    public let classes: Int

    public init(backbone: ViT, classes: Int, seed: UInt64 = 0) {
        self.backbone = backbone
        self.classes = classes
        let c = backbone.config
        var rng = SeededGenerator(seed: seed)
        let bound = Float((6.0 / Double(3 * c.patchSize * c.patchSize + c.width)).squareRoot())
        let count = c.depth * classes * c.width
        prompts = Parameter(
            Tensor(shape: [c.depth, classes, c.width], scalars: (0..<count).map { _ in Float(rng.nextUniform() * 2 - 1) * bound }),
            decays: false)
        head = Linear(c.width, 1, rng: &rng)
        // The backbone is frozen: its parameters become constants (no gradients computed for them).
        for p in backbone.parameters { p.variable = Variable(p.value) }
        backbone.isTraining = false
    }

    /// The trainable parameters: the prompts of every layer and the shared head.
    public var trainable: [Parameter] { [prompts] + head.parameters }

    public struct Output {
        public var logits: Variable // [N, C]
        /// Last block's post-softmax attention [N, H, T, T] when kept (T = C + 1 + patches).
        public var attention: Variable?
    }

    /// `blur`: per (head, class) pairs of the last block whose prompt-query scores are set to 0.
    public func forward(_ images: Variable, keepAttention: Bool = false, blur: [(head: Int, query: Int)] = []) -> Output {
        let b = backbone, c = b.config
        let n = images.shape[0], d = c.width, g = c.grid, k = classes
        var x = b.patchEmbed(images).reshaped([n, d, g * g]).transposed()
        if let cls = b.clsToken { x = concat([cls.variable.broadcast(to: [n, 1, d]), x], axis: 1) }
        x = x + b.posEmbed.variable // [N, T0, D]
        let t0 = x.shape[1]
        var out = x
        for (l, block) in b.blocks.enumerated() {
            let p = prompts.variable.slice(axis: 0, l..<(l + 1)).reshaped([1, k, d]).broadcast(to: [n, k, d])
            let last = l == b.blocks.count - 1
            block.attention.keepAttention = last && keepAttention
            block.attention.scoreTransform =
                last && !blur.isEmpty
                ? { scores in
                    // Zero the chosen (head, query) rows: uniform attention for that prompt in that head.
                    let (h, t) = (scores.shape[1], scores.shape[2])
                    let keep = Tensor.make([1, h, t, 1]) { m in
                        for i in 0..<(h * t) { m[i] = 1 }
                        for (hh, q) in blur { m[hh * t + q] = 0 }
                    }
                    return scores * Variable(keep)
                } : nil
            out = block(concat([p, x], axis: 1))
            block.attention.scoreTransform = nil
            if !last { x = out.slice(axis: 1, k..<(k + t0)) }
        }
        let z = b.norm(out.slice(axis: 1, 0..<k)) // [N, C, D]
        let logits = head(z).reshaped([n, k])
        let attention = keepAttention ? b.blocks.last!.attention.lastAttention : nil
        b.blocks.last!.attention.keepAttention = false
        return Output(logits: logits, attention: attention)
    }

    /// Per-head trait maps of class `query` for each image: the last block's attention of that
    /// class's prompt over the patch tokens, [N, H, g, g].
    public func traitMaps(_ images: Tensor, query: [Int]) -> (maps: Tensor, logits: Tensor) {
        let out = GradMode.disabled { forward(Variable(images), keepAttention: true) }
        let a = try! out.attention!.value.scalars(as: Float.self)
        let c = backbone.config, n = images.shape[0], h = c.heads, k = classes
        let t = out.attention!.shape[2], prefix = k + c.prefixTokens, patches = c.grid * c.grid
        var maps = [Float](repeating: 0, count: n * h * patches)
        for i in 0..<n {
            for hh in 0..<h {
                let row = ((i * h + hh) * t + query[i]) * t
                for p in 0..<patches { maps[(i * h + hh) * patches + p] = a[row + prefix + p] }
            }
        }
        return (Tensor(shape: [n, h, c.grid, c.grid], scalars: maps), out.logits.value)
    }

    /// Heads of the last block in order of importance for `target` on one image: greedily blur the
    /// head whose blurring keeps p(target) highest; the reverse order of removal is the ranking.
    public func rankHeads(_ image: Tensor, target: Int) -> [Int] {
        let h = backbone.config.heads
        var removed: [Int] = []
        while removed.count < h {
            var best = -1, bestP = -Float.infinity
            for candidate in 0..<h where !removed.contains(candidate) {
                let blur = (removed + [candidate]).map { (head: $0, query: target) }
                let logits = GradMode.disabled { forward(Variable(image), blur: blur).logits.softmax() }
                let p = (try! logits.value.scalars(as: Float.self))[target]
                if p > bestP { (best, bestP) = (candidate, p) }
            }
            removed.append(best)
        }
        return removed.reversed()
    }

    public func save(to path: String) throws {
        try SafeTensors.write(
            [("prompts", prompts.value), ("head.weight", head.weight.value), ("head.bias", head.bias!.value)],
            metadata: ["format": "prompt-cam"], to: path)
    }

    public func load(from path: String) throws {
        let file = try SafeTensorsFile(path: path)
        for (name, p) in [("prompts", prompts), ("head.weight", head.weight), ("head.bias", head.bias!)] {
            let t = try file.float32(name)
            guard t.shape == p.shape else { throw FormatError(path: path, "\(name) has shape \(t.shape), the model needs \(p.shape)") }
            p.assign(t.owned())
        }
    }
}
