import Formats
import Foundation
import Tensors

/// y = x·Wᵀ + b, W [out, in] (torch nn.Linear and its default initialisation:
/// W, b ~ U(±1/√in), the bound kaiming_uniform(a = √5) gives).
public final class Linear: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, rng: inout SeededGenerator) {
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(uniform([outFeatures, inFeatures], bound: bound, &rng))
        self.bias = bias ? Parameter(uniform([outFeatures], bound: bound, &rng), decays: false) : nil
    }

    /// A layer around existing parameters (weight [out, in], bias [out]).
    public init(weight: Parameter, bias: Parameter?) {
        self.weight = weight
        self.bias = bias
    }

    public var namedParameters: [(String, Parameter)] { [("weight", weight)] + (bias.map { [("bias", $0)] } ?? []) }
    public func callAsFunction(_ x: Variable) -> Variable {
        if !GradMode.isEnabled, GEMM.precision == .bf16, x.value.dtype == .float32, let y = try? inferenceBF16(x.value) { return Variable(y) }
        return linear(x, weight: weight.variable, bias: bias?.variable)
    }

    /// y = x·Wᵀ + b on raw rows [rows, in] → [rows, out] in the current inference precision
    /// (`GEMM.precision`); with `accumulate`, y += x·Wᵀ + b (a residual added in place).
    public func inference(_ x: UnsafePointer<Float>, rows: Int, accumulate: Bool = false, into y: UnsafeMutablePointer<Float>) throws {
        let (outF, inF) = (weight.shape[0], weight.shape[1])
        let b = try bias.map { try $0.value.converted(to: .float32) }
        if GEMM.precision == .bf16 {
            let w16 = try weight.bf16Value()
            try w16.withUnsafeBytes { raw in
                let w = raw.bindMemory(to: UInt16.self).baseAddress!
                try withFloatsIfPresent(b) { bp in
                    Kernels.linearBF16(x, rows: rows, inFeatures: inF, weight: w, bias: bp, outFeatures: outF, accumulate: accumulate, into: y)
                }
            }
            return
        }
        try weight.value.withFloats { w in
            try withFloatsIfPresent(b) { bp in
                guard accumulate else {
                    Kernels.linear(x, rows: rows, inFeatures: inF, weight: w, bias: bp, outFeatures: outF, into: y)
                    return
                }
                if let bp { for r in 0..<rows { for j in 0..<outF { y[r * outF + j] += bp[j] } } }
                GEMM.sgemm(transposeB: true, m: rows, n: outF, k: inF, a: x, lda: inF, b: w, ldb: inF, beta: 1, c: y, ldc: outF)
            }
        }
    }

    /// y = act(x·Wᵀ + b) (or y += …) as one fused oneDNN product (`Kernels.fusedLinear`). In bf16
    /// the weight is rounded once, x is fp32 or (`sourceBF16`) bfloat16 and y fp32 or (`outputBF16`)
    /// bfloat16; otherwise all fp32. False when the fused product cannot run; nothing is written then.
    public func fused(
        _ x: UnsafeRawPointer, bf16: Bool, sourceBF16: Bool = false, rows: Int, activation: Kernels.FusedActivation = .none,
        accumulate: Bool = false, outputBF16: Bool = false, into y: UnsafeMutableRawPointer
    ) throws -> Bool {
        let (outF, inF) = (weight.shape[0], weight.shape[1])
        let b = try bias.map { try $0.value.converted(to: .float32) }
        let w = bf16 ? try weight.bf16Value() : try weight.value.converted(to: .float32)
        return try w.withUnsafeBytes { raw in
            try withFloatsIfPresent(b) { bp in
                Kernels.fusedLinear(
                    x, sourceBF16: sourceBF16, rows: rows, inFeatures: inF, weight: raw.baseAddress!, bf16: bf16, bias: bp, outFeatures: outF,
                    activation: activation, accumulate: accumulate, outputBF16: outputBF16, into: y)
            }
        }
    }

    /// The bf16 path of `callAsFunction` for an input [..., in].
    private func inferenceBF16(_ x: Tensor) throws -> Tensor? {
        let (outF, inF) = (weight.shape[0], weight.shape[1])
        guard weight.shape.count == 2, x.shape.count >= 1, x.shape.last == inF else { return nil }
        let rows = x.count / max(inF, 1)
        var out = Tensor(zeros: .float32, shape: Array(x.shape.dropLast()) + [outF])
        try x.withFloats { xp in
            try out.withUnsafeMutableBytes { raw in try inference(xp, rows: rows, into: raw.bindMemory(to: Float.self).baseAddress!) }
        }
        return out
    }
}

/// `body` with the tensor's floats, or with nil when there is no tensor.
func withFloatsIfPresent<R>(_ t: Tensor?, _ body: (UnsafePointer<Float>?) throws -> R) throws -> R {
    guard let t else { return try body(nil) }
    return try t.withFloats { try body($0) }
}

/// 2-D convolution layer (torch nn.Conv2d, same default initialisation as Linear with
/// fan_in = in/groups · kh · kw).
public final class Conv2d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int), groups: Int
    public var isTraining = true

    public init(
        _ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
        groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator
    ) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0, "channels must divide into groups")
        let fanIn = inChannels / groups * kernel * kernel
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Parameter(uniform([outChannels, inChannels / groups, kernel, kernel], bound: bound, &rng))
        self.bias = bias ? Parameter(uniform([outChannels], bound: bound, &rng), decays: false) : nil
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.groups = groups
    }

    /// A layer around existing parameters (weight [out, in/groups, kh, kw], bias [out]).
    public init(weight: Parameter, bias: Parameter?, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) {
        self.weight = weight
        self.bias = bias
        self.stride = (stride, stride)
        self.padding = (padding, padding)
        self.dilation = (dilation, dilation)
        self.groups = groups
    }

    public var namedParameters: [(String, Parameter)] { [("weight", weight)] + (bias.map { [("bias", $0)] } ?? []) }
    public func callAsFunction(_ x: Variable) -> Variable {
        conv2d(x, weight: weight.variable, bias: bias?.variable, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }
}

/// 1-D convolution layer over [N, C, L] (torch nn.Conv1d and its default initialisation,
/// fan_in = in/groups · kernel).
public final class Conv1d: Module {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int, dilation: Int, groups: Int
    public var isTraining = true

    public init(
        _ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
        groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator
    ) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0, "channels must divide into groups")
        let bound = 1 / Float(inChannels / groups * kernel).squareRoot()
        weight = Parameter(uniform([outChannels, inChannels / groups, kernel], bound: bound, &rng))
        self.bias = bias ? Parameter(uniform([outChannels], bound: bound, &rng), decays: false) : nil
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
    }

    public var namedParameters: [(String, Parameter)] { [("weight", weight)] + (bias.map { [("bias", $0)] } ?? []) }
    public func callAsFunction(_ x: Variable) -> Variable {
        conv1d(x, weight: weight.variable, bias: bias?.variable, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }
}

/// LayerNorm over the last dimension (gain 1, bias 0).
public final class LayerNorm: Module {
    public let weight: Parameter, bias: Parameter
    public let eps: Float
    public var isTraining = true

    public init(_ width: Int, eps: Float = 1e-5) {
        weight = Parameter(Tensor.filled(1, shape: [width]), decays: false)
        bias = Parameter(Tensor.filled(0, shape: [width]), decays: false)
        self.eps = eps
    }

    /// A layer around existing parameters (gain and shift [width]).
    public init(weight: Parameter, bias: Parameter, eps: Float = 1e-5) {
        self.weight = weight
        self.bias = bias
        self.eps = eps
    }

    public var namedParameters: [(String, Parameter)] { [("weight", weight), ("bias", bias)] }
    public func callAsFunction(_ x: Variable) -> Variable { x.layerNorm(weight: weight.variable, bias: bias.variable, eps: eps) }
}

/// GroupNorm (groups == channels: instance normalisation with affine, ConvNet-3's norm).
public final class GroupNorm: Module {
    public let groups: Int
    public let weight: Parameter?, bias: Parameter?
    public let eps: Float
    public var isTraining = true

    public init(groups: Int, channels: Int, affine: Bool = true, eps: Float = 1e-5) {
        self.groups = groups
        weight = affine ? Parameter(Tensor.filled(1, shape: [channels]), decays: false) : nil
        bias = affine ? Parameter(Tensor.filled(0, shape: [channels]), decays: false) : nil
        self.eps = eps
    }

    public var namedParameters: [(String, Parameter)] { weight.map { [("weight", $0), ("bias", bias!)] } ?? [] }
    public func callAsFunction(_ x: Variable) -> Variable {
        x.groupNorm(groups: groups, weight: weight?.variable, bias: bias?.variable, eps: eps)
    }
}

/// BatchNorm over [N, C, …] (torch nn.BatchNorm2d): training normalises with the batch mean and
/// biased variance and updates running statistics (unbiased variance, `momentum`); evaluation uses
/// the running statistics.
public final class BatchNorm: Module {
    public let weight: Parameter, bias: Parameter
    public private(set) var runningMean: Tensor
    public private(set) var runningVar: Tensor
    public private(set) var batchesTracked: Int = 0
    public let momentum: Float, eps: Float
    public var isTraining = true

    public init(_ channels: Int, momentum: Float = 0.1, eps: Float = 1e-5) {
        weight = Parameter(Tensor.filled(1, shape: [channels]), decays: false)
        bias = Parameter(Tensor.filled(0, shape: [channels]), decays: false)
        runningMean = Tensor.filled(0, shape: [channels])
        runningVar = Tensor.filled(1, shape: [channels])
        self.momentum = momentum
        self.eps = eps
    }

    public var namedParameters: [(String, Parameter)] { [("weight", weight), ("bias", bias)] }
    public var namedBuffers: [(String, Tensor)] {
        [("running_mean", runningMean), ("running_var", runningVar), ("num_batches_tracked", Tensor.filled(Float(batchesTracked), shape: []))]
    }
    public func loadBuffer(_ name: String, _ value: Tensor) {
        switch name {
        case "running_mean": runningMean = value
        case "running_var": runningVar = value
        case "num_batches_tracked":
            // A checkpoint's number: NaN, ±inf or a huge value would trap in Int(); clamped to a count.
            let v = Double((try? value.scalars(as: Float.self).first) ?? 0)
            batchesTracked = Limits.clampedCount(v, atMost: 1 << 53)
        default: break
        }
    }

    public func callAsFunction(_ x: Variable) -> Variable {
        let c = x.shape[1]
        let affine = [1, c] + [Int](repeating: 1, count: x.shape.count - 2)
        // Statistics over every axis but the channel one.
        let perChannel = x.permuted([1, 0] + Array(2..<x.shape.count)).reshaped([c, -1])
        let mean: Variable, variance: Variable
        if isTraining {
            mean = perChannel.mean(axis: 1)
            let centred = perChannel - mean.reshaped([c, 1])
            variance = (centred * centred).mean(axis: 1)
            let n = Float(perChannel.shape[1])
            let m = mean.scalars, v = variance.scalars
            var rm: [Float] = try! runningMean.scalars(), rv: [Float] = try! runningVar.scalars()
            for i in 0..<c {
                rm[i] = (1 - momentum) * rm[i] + momentum * m[i]
                rv[i] = (1 - momentum) * rv[i] + momentum * v[i] * n / max(n - 1, 1)
            }
            runningMean = Tensor(shape: [c], scalars: rm)
            runningVar = Tensor(shape: [c], scalars: rv)
            batchesTracked += 1
        } else {
            mean = Variable(runningMean)
            variance = Variable(runningVar)
        }
        let y = (x - mean.reshaped(affine)) / (variance.reshaped(affine) + eps).sqrt()
        return y * weight.variable.reshaped(affine) + bias.variable.reshaped(affine)
    }
}

/// Dropout: in training, zeroes each element with probability p and scales the rest by 1/(1−p)
/// (seeded); identity in evaluation.
public final class Dropout: Module {
    public let p: Float
    public var isTraining = true
    var rng: SeededGenerator

    public init(_ p: Float, seed: UInt64 = 0) {
        self.p = p
        rng = SeededGenerator(seed: seed)
    }

    public var namedParameters: [(String, Parameter)] { [] }
    public func callAsFunction(_ x: Variable) -> Variable {
        guard isTraining, p > 0 else { return x }
        let keep = 1 - p
        let mask = Tensor(shape: x.shape, scalars: (0..<x.count).map { _ in Float(rng.nextUniform()) < keep ? 1 / keep : 0 })
        return x * Variable(mask)
    }
}
