import Foundation
import Tensors

/// A differentiable LLaMA (for training small language models here), with Hugging Face's
/// state-dict names, so `save` writes a folder `DecoderLM` and `transformers` read. Same
/// computation as `DecoderLM`'s LLaMA path: RMSNorm, rotate-half RoPE, grouped-query attention,
/// SwiGLU, untied head.
public final class LlamaModule: Module {
    public let config: DecoderConfig
    public let embed: Parameter, head: Parameter, norm: Parameter
    public struct Block {
        public let norm1: Parameter, norm2: Parameter
        public let q: Linear, k: Linear, v: Linear, o: Linear, gate: Linear, up: Linear, down: Linear
    }
    public let blocks: [Block]
    public var isTraining = true

    public init(config c: DecoderConfig, seed: UInt64 = 0) {
        precondition(c.architecture == .llama, "LlamaModule needs a llama config")
        config = c
        var rng = SeededGenerator(seed: seed)
        let d = c.hiddenSize
        func normal(_ shape: [Int]) -> Tensor { try! Tensor((0..<shape.reduce(1, *)).map { _ in Float(rng.nextNormal()) * 0.02 }, shape: shape) }
        embed = Parameter(normal([c.vocabSize, d]))
        head = Parameter(normal([c.vocabSize, d]))
        norm = Parameter(Tensor.filled(1, shape: [d]), decays: false)
        blocks = (0..<c.layers).map { _ in
            Block(norm1: Parameter(Tensor.filled(1, shape: [d]), decays: false), norm2: Parameter(Tensor.filled(1, shape: [d]), decays: false),
                  q: Linear(d, c.heads * c.headDim, bias: false, rng: &rng), k: Linear(d, c.keyValueHeads * c.headDim, bias: false, rng: &rng),
                  v: Linear(d, c.keyValueHeads * c.headDim, bias: false, rng: &rng), o: Linear(c.heads * c.headDim, d, bias: false, rng: &rng),
                  gate: Linear(d, c.intermediateSize, bias: false, rng: &rng), up: Linear(d, c.intermediateSize, bias: false, rng: &rng),
                  down: Linear(c.intermediateSize, d, bias: false, rng: &rng))
        }
    }

    public var namedParameters: [(String, Parameter)] {
        var p: [(String, Parameter)] = [("model.embed_tokens.weight", embed), ("lm_head.weight", head), ("model.norm.weight", norm)]
        for (i, b) in blocks.enumerated() {
            let n = "model.layers.\(i)."
            p += [(n + "input_layernorm.weight", b.norm1), (n + "post_attention_layernorm.weight", b.norm2)]
            p += prefixed(n + "self_attn.q_proj.", b.q.namedParameters) + prefixed(n + "self_attn.k_proj.", b.k.namedParameters)
            p += prefixed(n + "self_attn.v_proj.", b.v.namedParameters) + prefixed(n + "self_attn.o_proj.", b.o.namedParameters)
            p += prefixed(n + "mlp.gate_proj.", b.gate.namedParameters) + prefixed(n + "mlp.up_proj.", b.up.namedParameters)
            p += prefixed(n + "mlp.down_proj.", b.down.namedParameters)
        }
        return p
    }

    /// Logits [B, T, V] of token ids [B][T] (equal lengths, positions 0…T−1).
    public func callAsFunction(_ ids: [[Int]]) -> Variable {
        let c = config, b = ids.count, t = ids[0].count, d = c.hiddenSize, hd = c.headDim, h = c.heads, kv = c.keyValueHeads
        let eps = Float(c.normEps)
        var x = embed.variable.gatherRows(ids.flatMap { $0 }).reshaped([b, t, d])
        // RoPE tables [1, T, 1, hd] (cos and sin of pos · inv_freq, halves repeated).
        let half = hd / 2
        let inv = (0..<half).map { 1 / pow(c.ropeTheta, Double(2 * $0) / Double(hd)) }
        let angles = (0..<t).flatMap { p in (0..<hd).map { Double(p) * inv[$0 % half] } }
        let cosT = Variable(try! Tensor(angles.map { Float(cos($0)) }, shape: [1, t, 1, hd]))
        let sinT = Variable(try! Tensor(angles.map { Float(sin($0)) }, shape: [1, t, 1, hd]))
        func rope(_ v: Variable) -> Variable {
            let rotated = concat([-v.slice(axis: 3, half..<hd), v.slice(axis: 3, 0..<half)], axis: 3)
            return v * cosT + rotated * sinT
        }
        let mask = Variable(Tensor.make([t, t]) { m in for i in 0..<t { for j in (i + 1)..<max(t, i + 1) { m[i * t + j] = -.infinity } } })
        let group = h / kv
        for block in blocks {
            let a = x.rmsNorm(weight: block.norm1.variable, eps: eps)
            let q = rope(block.q(a).reshaped([b, t, h, hd])).permuted([0, 2, 1, 3])
            func expand(_ y: Variable) -> Variable {
                group == 1 ? y : y.reshaped([b, t, kv, 1, hd]).broadcast(to: [b, t, kv, group, hd]).reshaped([b, t, h, hd])
            }
            let k = expand(rope(block.k(a).reshaped([b, t, kv, hd]))).permuted([0, 2, 1, 3])
            let v = expand(block.v(a).reshaped([b, t, kv, hd])).permuted([0, 2, 1, 3])
            let scores = matmul(q * (1 / Float(hd).squareRoot()), k, transposeB: true) + mask
            let mixed = matmul(scores.softmax(), v).permuted([0, 2, 1, 3]).reshaped([b, t, h * hd])
            x = x + block.o(mixed)
            let f = x.rmsNorm(weight: block.norm2.variable, eps: eps)
            x = x + block.down(block.gate(f).silu() * block.up(f))
        }
        return matmul(x.rmsNorm(weight: norm.variable, eps: eps), head.variable, transposeB: true)
    }
}
