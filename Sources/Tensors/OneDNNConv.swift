import CDNNL
import COpenBLAS
import Dispatch

/// 2-D convolutions through oneDNN's direct convolution primitives (`Sources/CDNNL/dnnl_conv.c`):
/// forward, backward-data and backward-weights (+ bias gradient), for `conv2d` when
/// oneDNN is the backend (the default where it loads) and `pays` says so. The three are each other's adjoints, so the recorded
/// op is differentiable to any order (the dataset-condensation outer step differentiates gradients).
public enum OneDNNConv {
    /// Which of the three a call computes.
    public enum Kind: Int32, Sendable { case forward = 0, backwardData = 1, backwardWeights = 2 }

    /// A convolution's geometry: source [n, c, h, w], weights [o, c/groups, kh, kw].
    public struct Geometry: Sendable, Equatable {
        public var n, c, h, w, o: Int
        public var window: Window2D
        public var groups: Int

        public init(n: Int, c: Int, h: Int, w: Int, o: Int, window: Window2D, groups: Int = 1) {
            (self.n, self.c, self.h, self.w, self.o, self.window, self.groups) = (n, c, h, w, o, window, groups)
        }

        var output: (Int, Int) { window.outputSize(h, w) }
        public var inputShape: [Int] { [n, c, h, w] }
        public var weightShape: [Int] { [o, c / groups, window.kernel.0, window.kernel.1] }
        public var outputShape: [Int] { [n, o, output.0, output.1] }

        var shim: MngConvShape {
            let (oh, ow) = output
            return MngConvShape(
                n: n, c: c, h: h, w: w, o: o, kh: window.kernel.0, kw: window.kernel.1, oh: oh, ow: ow, sy: window.stride.0,
                sx: window.stride.1, py: window.padding.0, px: window.padding.1, dy: window.dilation.0, dx: window.dilation.1,
                groups: groups, bias: 0)
        }
    }

    /// Whether `conv2d` goes through oneDNN: the oneDNN backend (fp32) is in use and the rule says it pays.
    public static func routes(_ g: Geometry, backend: any GEMMBackend = GEMM.backend) -> Bool {
        guard let dnnl = backend as? OneDNNBackend, !dnnl.bf16 else { return false }
        return pays(g)
    }

    /// The measured rule (Docs/benchmarks.md, "oneDNN convolutions"): oneDNN's direct convolutions beat
    /// im2col + sgemm on every ConvNet-3 layer measured, forward and both backward, at batch 256
    /// (128 → 128 at 8²: forward 20 vs 82 ms) and at DC's 10 synthetic images (the smallest, 3 → 128
    /// at 28², 5.4·10⁷ FLOP: forward 0.43 vs 1.3 ms). Below 2^25 FLOP per call nothing was measured,
    /// and a primitive (created once per shape, ~1 ms) for a one-off tiny convolution would not pay:
    /// those stay ours.
    public static func pays(_ g: Geometry) -> Bool {
        let (oh, ow) = g.output
        let macs = g.n * g.o * oh * ow * (g.c / g.groups) * g.window.kernel.0 * g.window.kernel.1
        return 2 * macs >= 1 << 25
    }

    /// `conv2d` through oneDNN whatever the backend and rule say (recorded, differentiable to any
    /// order), or nil when oneDNN cannot run it: for tests and measurements.
    public static func conv2d(_ x: Variable, weight: Variable, bias: Variable?, _ window: Window2D, groups: Int = 1) -> Variable? {
        let g = Geometry(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3], o: weight.shape[0], window: window, groups: groups)
        return conv2dOneDNN(x, weight: weight, bias: bias, g)
    }

    /// Whether `conv2d` runs oneDNN's primitive on NCHW itself rather than on its blocked layouts with
    /// reorders: for fewer than 16 input channels per group (ConvNet-3's first layer, 3 → 128 at 32²,
    /// batch 256: forward 16 ms plain, 79 ms blocked, 42 ms ours; backward-data 26 / 125 / 33 ms).
    public static func plain(_ g: Geometry) -> Bool { g.c / g.groups < 16 }

    /// Convolutions created (primitive-cache misses) and run through oneDNN in this process's copy.
    public static var counters: (created: Int, executed: Int) {
        var created = 0, executed = 0
        mng_dnnl_conv_counters(&created, &executed)
        return (created, executed)
    }

    /// One oneDNN call (see `mng_dnnl_conv`); false when oneDNN failed (the output is then unspecified).
    static func run(
        _ kind: Kind, _ g: Geometry, plain: Bool, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
        bias: UnsafeMutablePointer<Float>?
    ) -> Bool {
        var shape = g.shim
        return mng_dnnl_conv(kind.rawValue, &shape, plain ? 1 : 0, a, b, out, bias, openblas_get_num_threads()) == 0
    }

    /// y = conv(x, w) + bias, or nil when oneDNN cannot run it.
    public static func forward(_ x: Tensor, weight: Tensor, bias: Tensor?, _ g: Geometry, plain: Bool = false) -> Tensor? {
        var ok = false
        let y = Tensor.makeUninitialized(g.outputShape) { out in
            if let bias {
                let b = UnsafeMutablePointer(mutating: bias.fp)
                ok = run(.forward, g, plain: plain, x.fp, weight.fp, out, bias: b)
            } else {
                ok = run(.forward, g, plain: plain, x.fp, weight.fp, out, bias: nil)
            }
        }
        return ok ? y : nil
    }

    /// dx for the output gradient dy, or nil when oneDNN cannot run it.
    public static func backwardData(_ dy: Tensor, weight: Tensor, _ g: Geometry, plain: Bool = false) -> Tensor? {
        var ok = false
        let dx = Tensor.makeUninitialized(g.inputShape) { out in ok = run(.backwardData, g, plain: plain, dy.fp, weight.fp, out, bias: nil) }
        return ok ? dx : nil
    }

    /// dw (and the bias gradient when asked) for input x and output gradient dy, or nil.
    public static func backwardWeights(_ x: Tensor, _ dy: Tensor, _ g: Geometry, bias: Bool, plain: Bool = false) -> (Tensor, Tensor?)? {
        var ok = false
        var db: Tensor? = nil
        let dw = Tensor.makeUninitialized(g.weightShape) { out in
            if bias {
                db = Tensor.makeUninitialized([g.o]) { b in ok = run(.backwardWeights, g, plain: plain, x.fp, dy.fp, out, bias: b) }
            } else {
                ok = run(.backwardWeights, g, plain: plain, x.fp, dy.fp, out, bias: nil)
            }
        }
        return ok ? (dw, db) : nil
    }
}

// MARK: - The recorded ops

/// `conv2d` through oneDNN, recorded: its backward is again oneDNN convolutions (recorded when the
/// gradients are built with `createGraph`). Nil when oneDNN cannot run the forward (the caller
/// takes its own path).
func conv2dOneDNN(_ x: Variable, weight: Variable, bias: Variable?, _ g: OneDNNConv.Geometry) -> Variable? {
    guard let y = OneDNNConv.forward(x.value, weight: weight.value, bias: bias?.value, g, plain: OneDNNConv.plain(g)) else { return nil }
    let inputs = bias.map { [x, weight, $0] } ?? [x, weight]
    return record("conv2dOneDNN", y, inputs) { dy in
        let needsX = Autograd.needsGradient(0), needsW = Autograd.needsGradient(1), needsB = bias != nil && Autograd.needsGradient(2)
        let dx = needsX ? convBackwardDataOneDNN(dy, weight: weight, g) : nil
        guard needsW || needsB else { return Array([dx, nil, nil].prefix(inputs.count)) }
        if !GradMode.enabled, let (dw, db) = OneDNNConv.backwardWeights(x.value, dy.value, g, bias: needsB, plain: OneDNNConv.plain(g)) {
            // One call for both gradients when they need not be differentiable.
            return Array([dx, needsW ? Variable(dw) : nil, db.map { Variable($0) }].prefix(inputs.count))
        }
        let dw = needsW ? convBackwardWeightsOneDNN(x, dy, g) : nil
        let db = needsB ? dy.sumTo([1, g.o, 1, 1]).reshaped([g.o]) : nil
        return Array([dx, dw, db].prefix(inputs.count))
    }
}

/// dx = the adjoint of conv(·, w) applied to dy, recorded: d/d(dy) is conv(h, w) and d/dw is the
/// weight gradient of (h, dy).
func convBackwardDataOneDNN(_ dy: Variable, weight: Variable, _ g: OneDNNConv.Geometry) -> Variable {
    guard let dx = OneDNNConv.backwardData(dy.value, weight: weight.value, g, plain: OneDNNConv.plain(g)) else {
        return compositeVJP(g, weight: weight, dy: dy, wantInput: true)
    }
    return record("convBackwardDataOneDNN", dx, [dy, weight]) { h in
        [
            Autograd.needsGradient(0) ? convForwardOneDNN(h, weight: weight, g) : nil,
            Autograd.needsGradient(1) ? convBackwardWeightsOneDNN(h, dy, g) : nil,
        ]
    }
}

/// dw = the adjoint of conv(x, ·) applied to dy, recorded: d/dx is the backward data of (dy, h),
/// d/d(dy) is conv(x, h).
func convBackwardWeightsOneDNN(_ x: Variable, _ dy: Variable, _ g: OneDNNConv.Geometry) -> Variable {
    guard let (dw, _) = OneDNNConv.backwardWeights(x.value, dy.value, g, bias: false, plain: OneDNNConv.plain(g)) else {
        return compositeVJP(g, input: x, dy: dy)
    }
    return record("convBackwardWeightsOneDNN", dw, [x, dy]) { h in
        [
            Autograd.needsGradient(0) ? convBackwardDataOneDNN(dy, weight: h, g) : nil,
            Autograd.needsGradient(1) ? convForwardOneDNN(x, weight: h, g) : nil,
        ]
    }
}

/// conv(x, w) without bias, recorded, for the backward ops' own gradients.
func convForwardOneDNN(_ x: Variable, weight: Variable, _ g: OneDNNConv.Geometry) -> Variable {
    if let y = conv2dOneDNN(x, weight: weight, bias: nil, g) { return y }
    return conv2dComposite(x, weight: weight, bias: nil, g.window, groups: g.groups)
}

/// The adjoint through our own im2col convolution, for a oneDNN call that failed: the gradient of
/// ⟨dy, conv(x, w)⟩ with respect to x (for `weight`) or w (for `input`), a graph when recording.
func compositeVJP(_ g: OneDNNConv.Geometry, weight: Variable? = nil, input: Variable? = nil, dy: Variable, wantInput: Bool = false) -> Variable {
    let x = input ?? Variable(Tensor.filled(0, shape: g.inputShape), requiresGrad: true)
    let w = weight ?? Variable(Tensor.filled(0, shape: g.weightShape), requiresGrad: true)
    let y = GradMode.with(true) { conv2dComposite(x, weight: w, bias: nil, g.window, groups: g.groups) }
    let target = wantInput ? x : w
    let grads = Autograd.gradients(of: y, wrt: [target], seed: dy, createGraph: GradMode.enabled)
    return grads[0] ?? Variable(Tensor.filled(0, shape: target.shape))
}

// MARK: - Measuring the rule

extension OneDNNConv {
    /// Whose convolution `measure` times: ours (im2col + sgemm, recorded as in training), oneDNN with
    /// its blocked layouts and reorders (what `conv2d` uses), or oneDNN on NCHW itself.
    public enum Path: String, Sendable, CaseIterable { case ours, onednn, onednnPlain = "onednn_plain" }

    /// Milliseconds per call of `kind` on `path` for geometry `g` with a bias, after one untimed
    /// warm-up (which also creates oneDNN's primitives); nil when oneDNN cannot run it. Ours: the
    /// forward is `conv2d`'s recorded im2col + product; backward-data and backward-weights are the
    /// gradients of that graph with respect to the input only or to the weight and bias only.
    public static func measure(_ g: Geometry, _ kind: Kind, _ path: Path, samples: Int) -> [Double]? {
        var rng = UInt64(0x9E37_79B9_7F4A_7C15)
        func values(_ shape: [Int]) -> Tensor {
            Tensor.make(shape) { p in
                for i in 0..<shape.reduce(1, *) {
                    rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    p[i] = Float(rng >> 40) / Float(1 << 24) - 0.5
                }
            }
        }
        let x = values(g.inputShape), w = values(g.weightShape), b = values([g.o]), dy = values(g.outputShape)
        let call: () -> Bool
        switch path {
        case .ours:
            let xv = Variable(x, requiresGrad: true), wv = Variable(w, requiresGrad: true), bv = Variable(b, requiresGrad: true)
            func y() -> Variable { conv2dComposite(xv, weight: wv, bias: bv, g.window, groups: g.groups) }
            switch kind {
            case .forward:
                call = {
                    _ = y()
                    return true
                }
            case .backwardData:
                let out = y()
                call = { Autograd.gradients(of: out, wrt: [xv], seed: Variable(dy))[0] != nil }
            case .backwardWeights:
                let out = y()
                call = { Autograd.gradients(of: out, wrt: [wv, bv], seed: Variable(dy))[0] != nil }
            }
        case .onednn, .onednnPlain:
            let plain = path == .onednnPlain
            switch kind {
            case .forward: call = { forward(x, weight: w, bias: b, g, plain: plain) != nil }
            case .backwardData: call = { backwardData(dy, weight: w, g, plain: plain) != nil }
            case .backwardWeights: call = { backwardWeights(x, dy, g, bias: true, plain: plain) != nil }
            }
        }
        guard call() else { return nil }
        var out: [Double] = []
        for _ in 0..<Swift.max(1, samples) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            guard call() else { return nil }
            out.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        return out
    }
}
