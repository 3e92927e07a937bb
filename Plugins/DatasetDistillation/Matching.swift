import Foundation
import NN
import Tensors

/// The matching objectives of DC and DM, as functions the distillers and the `objective`
/// components share.
public enum Matching {
    /// DC's layer-wise gradient distance ("ours" in the reference `match_loss`): for each parameter
    /// of rank ≥ 2, reshaped to [out, rest], Σ_rows (1 − ⟨g_real, g_syn⟩ / (‖g_real‖‖g_syn‖ + 1e-6));
    /// 1-D parameters (biases, norm gains) contribute nothing.
    public static func gradientDistance(real: [Variable], synthetic: [Variable]) -> Variable {
        precondition(real.count == synthetic.count, "one real and one synthetic gradient per parameter")
        var total: Variable? = nil
        for (gr, gs) in zip(real, synthetic) where gr.shape.count >= 2 {
            let rows = gr.shape[0], cols = gr.shape.dropFirst().reduce(1, *)
            let r = gr.reshaped([rows, cols]), s = gs.reshaped([rows, cols])
            let dot = (r * s).sum(axis: 1)
            let norms = (r * r).sum(axis: 1).sqrt() * (s * s).sum(axis: 1).sqrt() + 1e-6
            let d = (1 - dot / norms).sum()
            total = total.map { $0 + d } ?? d
        }
        return total ?? Variable(Tensor.filled(0, shape: []))
    }

    /// DM's distance between the (weighted) mean embeddings: ‖Σ wᵢ φ(realᵢ) − mean φ(syn)‖² with
    /// Σ wᵢ = 1 (uniform weights: the plain mean).
    public static func meanEmbeddingDistance(real: Variable, synthetic: Variable, weights: [Float]? = nil) -> Variable {
        let n = real.shape[0]
        let realMean: Variable
        if let weights {
            let w = Variable(Tensor(shape: [1, n], scalars: weights))
            realMean = matmul(w, real).reshaped([real.shape[1]])
        } else {
            realMean = real.mean(axis: 0)
        }
        let d = realMean - synthetic.mean(axis: 0)
        return (d * d).sum()
    }

    /// Cross-entropy gradients of `net` on a batch, one per parameter (with `createGraph` they stay
    /// differentiable in the images: second order).
    public static func gradients(_ net: ConvNet, images: Variable, labels: [Int], weights: [Float]? = nil, createGraph: Bool) -> [Variable] {
        let logits = net(images)
        let loss: Variable
        if let weights {
            let c = logits.shape[1]
            let onehot = Tensor.make([labels.count, c]) { o in for (i, y) in labels.enumerated() { o[i * c + y] = weights[i] } }
            loss = -(logits.logSoftmax() * Variable(onehot)).sum()
        } else {
            loss = crossEntropy(logits, labels: labels)
        }
        return Autograd.gradients(of: loss, wrt: net.parameters.map(\.variable), createGraph: createGraph).map { $0 ?? Variable(Tensor.filled(0, shape: [])) }
    }
}
