import Foundation
import Tensors
import Testing

@Suite struct AutogradTests {
    @Test func elementwiseAndBroadcasting() {
        var gc = GradientCheck()
        gc.check("add", [gc.random([3, 4]), gc.random([4])]) { $0[0] + $0[1] }
        gc.check("sub", [gc.random([2, 1, 3]), gc.random([4, 1])]) { $0[0] - $0[1] }
        gc.check("mul", [gc.random([3, 4]), gc.random([3, 1])]) { $0[0] * $0[1] }
        gc.check("div", [gc.random([3, 4]), gc.random([4], scale: 0.3, offset: 2)]) { $0[0] / $0[1] }
        gc.check("scalars", [gc.random([5])]) { 2 - ($0[0] * 3 + 1) / 4 }
    }

    @Test func unaryFunctions() {
        var gc = GradientCheck()
        gc.check("exp", [gc.random([6], scale: 0.5)]) { $0[0].exp() }
        gc.check("log", [gc.random([6], scale: 0.2, offset: 2)]) { $0[0].log() }
        gc.check("sqrt", [gc.random([6], scale: 0.2, offset: 2)]) { $0[0].sqrt() }
        gc.check("tanh", [gc.random([6])]) { $0[0].tanh() }
        gc.check("sigmoid", [gc.random([6])]) { $0[0].sigmoid() }
        gc.check("erf", [gc.random([6])]) { $0[0].erf() }
        gc.check("gelu", [gc.random([8])]) { $0[0].gelu() }
        gc.check("geluTanh", [gc.random([8])]) { $0[0].geluTanh() }
        gc.check("quickGELU", [gc.random([8])]) { $0[0].quickGELU() }
        gc.check("silu", [gc.random([8])]) { $0[0].silu() }
        // Away from the kink at 0.
        let x = try! Variable([-1.5, -0.7, 0.4, 1.2, 2.0, -0.3], shape: [6], requiresGrad: true)
        gc.check("relu", [x]) { $0[0].relu() }
    }

    @Test func shapesAndReductions() {
        var gc = GradientCheck()
        gc.check("reshape", [gc.random([2, 6])]) { $0[0].reshaped([3, -1]) }
        gc.check("permute", [gc.random([2, 3, 4])]) { $0[0].permuted([2, 0, 1]) }
        gc.check("transpose", [gc.random([2, 3, 4])]) { $0[0].transposed() }
        gc.check("broadcast", [gc.random([3, 1])]) { $0[0].broadcast(to: [2, 3, 4]) }
        gc.check("sum", [gc.random([3, 4])]) { $0[0].sum() }
        gc.check("sum axis", [gc.random([3, 4, 2])]) { $0[0].sum(axis: 1) }
        gc.check("mean axis", [gc.random([3, 4])]) { $0[0].mean(axis: -1, keepDims: true) }
        gc.check("max axis", [gc.random([3, 5])]) { $0[0].max(axis: 1) }
        gc.check("slice", [gc.random([3, 5, 2])]) { $0[0].slice(axis: 1, 1..<4) }
        gc.check("concat", [gc.random([2, 3]), gc.random([2, 1])]) { concat($0, axis: 1) }
        gc.check("gatherRows", [gc.random([5, 3])]) { $0[0].gatherRows([4, 0, 4, 2]) }
    }

    @Test func matrixProductsAndLosses() {
        var gc = GradientCheck()
        gc.check("matmul 2d", [gc.random([3, 4]), gc.random([4, 5])]) { matmul($0[0], $0[1]) }
        gc.check("matmul batched", [gc.random([2, 3, 4]), gc.random([2, 4, 2])]) { matmul($0[0], $0[1]) }
        gc.check("matmul broadcast", [gc.random([2, 3, 4]), gc.random([4, 2])]) { matmul($0[0], $0[1]) }
        gc.check("matmulShared", [gc.random([3, 4]), gc.random([2, 4, 5])]) { matmulShared($0[0], $0[1]) }
        gc.check("matmulSumNT", [gc.random([2, 3, 5]), gc.random([2, 4, 5])]) { matmulSumNT($0[0], $0[1]) }
        gc.check("linear", [gc.random([5, 4]), gc.random([3, 4]), gc.random([3])]) { linear($0[0], weight: $0[1], bias: $0[2]) }
        gc.check("linear 3-D", [gc.random([2, 3, 4]), gc.random([5, 4]), gc.random([5])]) { linear($0[0], weight: $0[1], bias: $0[2]) }
        gc.check("logSoftmax", [gc.random([3, 5])]) { $0[0].logSoftmax() }
        gc.check("softmax", [gc.random([3, 5])]) { $0[0].softmax() }
        gc.check("crossEntropy", [gc.random([4, 3])]) { crossEntropy($0[0], labels: [0, 2, 1, 2]) }
        let targets = Variable(try! Tensor((0..<12).map { Float($0 % 5) / 4 }, shape: [4, 3]))
        gc.check("binaryCrossEntropy", [gc.random([4, 3], scale: 3)]) { binaryCrossEntropy(logits: $0[0], targets: targets) }
        // Its value against −[x log σ(z) + (1 − x) log(1 − σ(z))] (in Double), and finite at |z| = 60.
        let z: [Float] = [-3, -0.5, 0, 0.7, 2, 4], x: [Float] = [0, 1, 0.5, 0.25, 1, 0]
        let direct =
            zip(z, x).map { z, x -> Double in
                let s = 1 / (1 + Foundation.exp(-Double(z)))
                return -(Double(x) * Foundation.log(s) + (1 - Double(x)) * Foundation.log(1 - s))
            }.reduce(0, +) / 6
        let bce = binaryCrossEntropy(logits: try! Variable(z, shape: [6]), targets: try! Variable(x, shape: [6])).scalars[0]
        #expect(abs(Double(bce) - direct) < 1e-5, "\(bce) vs \(direct)")
        let extreme = binaryCrossEntropy(logits: try! Variable([60, -60], shape: [2]), targets: try! Variable([0, 1], shape: [2])).scalars[0]
        #expect(abs(extreme - 60) < 1e-3, "\(extreme)")
        let teacher = gc.random([4, 3]).detached() // the teacher is a constant of the loss
        gc.check("distillationKL", [gc.random([4, 3])]) { distillationKL(student: $0[0], teacher: teacher, temperature: 2) }
    }

    @Test func normalisation() {
        var gc = GradientCheck()
        gc.check("layerNorm", [gc.random([3, 6]), gc.random([6]), gc.random([6])]) { $0[0].layerNorm(weight: $0[1], bias: $0[2]) }
        gc.check("rmsNorm", [gc.random([3, 6]), gc.random([6])]) { $0[0].rmsNorm(weight: $0[1]) }
        gc.check("groupNorm", [gc.random([2, 4, 3, 3]), gc.random([4]), gc.random([4])]) { $0[0].groupNorm(groups: 2, weight: $0[1], bias: $0[2]) }
        gc.check("instanceNorm", [gc.random([2, 3, 2, 2])]) { $0[0].groupNorm(groups: 3, weight: nil, bias: nil) }
    }

    /// The fused first-order backward of the norms and activations and the recorded (createGraph)
    /// one are two codings of the same formulas: they must agree, with and without the affine, for
    /// layer norm, group norm and instance norm, and for GELU and QuickGELU (sizes past one chunk).
    @Test func fusedNormBackwardMatchesRecordedBackward() {
        var gc = GradientCheck()
        let cases: [(String, [Variable], ([Variable]) -> Variable)] = [
            ("layerNorm", [gc.random([5, 7], offset: 2), gc.random([7]), gc.random([7])], { $0[0].layerNorm(weight: $0[1], bias: $0[2]) }),
            ("layerNorm plain", [gc.random([2, 3, 33])], { $0[0].layerNorm(weight: nil, bias: nil) }),
            ("groupNorm", [gc.random([3, 6, 4, 5], scale: 3), gc.random([6]), gc.random([6])], { $0[0].groupNorm(groups: 2, weight: $0[1], bias: $0[2]) }),
            ("instanceNorm", [gc.random([2, 4, 3, 3]), gc.random([4])], { $0[0].groupNorm(groups: 4, weight: $0[1], bias: nil) }),
            ("gelu", [gc.random([3, 2000], scale: 4)], { $0[0].gelu() }),
            ("quickGELU", [gc.random([3, 700], scale: 4)], { $0[0].quickGELU() }),
        ]
        for (name, inputs, f) in cases {
            let seed = gc.random(f(inputs).shape).detached()
            let fused = Autograd.gradients(of: f(inputs), wrt: inputs, seed: seed)
            let recorded = Autograd.gradients(of: f(inputs), wrt: inputs, seed: seed, createGraph: true)
            for (a, b) in zip(fused, recorded) {
                let d = zip(a!.scalars, b!.scalars).map { abs($0 - $1) }.max()!
                #expect(d < 1e-4, "\(name): fused and recorded gradients differ by \(d)")
            }
        }
    }

    /// Second order through the activations: d/dx of the recorded first derivative against central
    /// differences of the fused one (both elementwise, so all elements are checked at once).
    @Test(arguments: ["gelu", "quickGELU"])
    func activationSecondDerivative(_ name: String) throws {
        let f: (Variable) -> Variable = name == "gelu" ? { $0.gelu() } : { $0.quickGELU() }
        let values = (0..<41).map { Float($0 - 20) / 5 }
        func first(_ v: [Float]) -> [Float] {
            let x = try! Variable(v, shape: [v.count], requiresGrad: true)
            return Autograd.gradients(of: f(x).sum(), wrt: [x])[0]!.scalars
        }
        let x = try Variable(values, shape: [values.count], requiresGrad: true)
        let g1 = Autograd.gradients(of: f(x).sum(), wrt: [x], createGraph: true)[0]!
        let analytic = Autograd.gradients(of: g1.sum(), wrt: [x])[0]!.scalars
        let eps: Float = 1e-2
        let (up, down) = (first(values.map { $0 + eps }), first(values.map { $0 - eps }))
        let worst = (0..<values.count).map { abs((up[$0] - down[$0]) / (2 * eps) - analytic[$0]) }.max()!
        #expect(worst < 2e-3, "\(name)'': worst error \(worst)")
    }

    /// Second order through ConvNet-3's block (conv → instance norm → ReLU → average pool): the
    /// derivative of ⟨∂L/∂x, v⟩ with respect to the conv weight against finite differences.
    @Test func secondOrderThroughConvNetBlock() {
        var gc = GradientCheck()
        let x = gc.random([2, 2, 4, 4]).detached()
        let v = gc.random([2, 2, 4, 4]).detached()
        let w = gc.random([3, 2, 3, 3], scale: 0.4)
        let gamma = gc.random([3], offset: 1).detached(), beta = gc.random([3]).detached()
        func inner(_ w: Variable, createGraph: Bool) -> Variable {
            let xr = Variable(x.value, requiresGrad: true)
            let h = conv2d(xr, weight: w, bias: nil, padding: (1, 1)).groupNorm(groups: 3, weight: gamma, bias: beta).relu().avgPool2d(kernel: 2)
            let g = Autograd.gradients(of: (h * h).sum(), wrt: [xr], createGraph: createGraph)[0]!
            return (g * v).sum()
        }
        let analytic = Autograd.gradients(of: inner(w, createGraph: true), wrt: [w])[0]!.scalars
        let base = w.scalars
        var worst: Float = 0
        for i in stride(from: 0, to: base.count, by: 2) {
            func value(_ d: Float) -> Float {
                var moved = base
                moved[i] += d
                return inner(try! Variable(moved, shape: w.shape, requiresGrad: true), createGraph: false).scalars[0]
            }
            let numeric = (value(5e-3) - value(-5e-3)) / 1e-2
            worst = max(worst, abs(numeric - analytic[i]) / max(1, abs(numeric)))
        }
        #expect(worst < 3e-2, "second-order worst relative error \(worst)")
    }

    @Test func convolutionAndPooling() {
        var gc = GradientCheck()
        gc.check("conv2d", [gc.random([2, 3, 5, 5]), gc.random([4, 3, 3, 3], scale: 0.3), gc.random([4])]) {
            conv2d($0[0], weight: $0[1], bias: $0[2], padding: (1, 1))
        }
        gc.check("conv2d strided dilated", [gc.random([1, 2, 7, 6]), gc.random([3, 2, 2, 3], scale: 0.3)]) {
            conv2d($0[0], weight: $0[1], bias: nil, stride: (2, 1), padding: (1, 0), dilation: (2, 1))
        }
        gc.check("conv2d groups", [gc.random([1, 4, 4, 4]), gc.random([6, 2, 3, 3], scale: 0.3)]) {
            conv2d($0[0], weight: $0[1], bias: nil, padding: (1, 1), groups: 2)
        }
        gc.check("conv1d", [gc.random([2, 3, 8]), gc.random([2, 3, 3], scale: 0.3)]) { conv1d($0[0], weight: $0[1], bias: nil, padding: 1) }
        gc.check("avgPool2d", [gc.random([2, 3, 4, 4])]) { $0[0].avgPool2d(kernel: 2) }
        gc.check("avgPool2d odd size", [gc.random([1, 2, 5, 7])]) { $0[0].avgPool2d(kernel: 2) }
        gc.check("avgPool2d overlapping", [gc.random([1, 2, 5, 5])]) { $0[0].avgPool2d(kernel: 3, stride: 2) }
        gc.check("maxPool2d", [gc.random([1, 2, 4, 4])]) { $0[0].maxPool2d(kernel: 2) }
        gc.check("bilinear", [gc.random([1, 2, 3, 4])]) { $0[0].upsampleBilinear(height: 5, width: 7) }
    }

    /// The gradient of a gradient (dataset condensation's gradient matching needs it): with
    /// g(W) = ∂L/∂x of L = Σ tanh(conv(x, W))², check ∂⟨g, v⟩/∂W against finite differences of ⟨g, v⟩.
    @Test func secondOrderThroughConvolution() {
        var gc = GradientCheck()
        let x = gc.random([1, 2, 5, 5])
        let v = gc.random([1, 2, 5, 5]).detached()
        let w = gc.random([3, 2, 3, 3], scale: 0.4)
        func inner(_ w: Variable, createGraph: Bool) -> Variable {
            let xi = x.detached()
            let xr = Variable(xi.value, requiresGrad: true)
            let y = conv2d(xr, weight: w, bias: nil, padding: (1, 1)).tanh()
            let l = (y * y).sum()
            let g = Autograd.gradients(of: l, wrt: [xr], createGraph: createGraph)[0]!
            return (g * v).sum()
        }
        let h = inner(w, createGraph: true)
        let analytic = Autograd.gradients(of: h, wrt: [w])[0]!.scalars
        let base = w.scalars
        var worst: Float = 0
        for i in stride(from: 0, to: base.count, by: 3) {
            func value(_ d: Float) -> Float {
                var moved = base
                moved[i] += d
                return inner(try! Variable(moved, shape: w.shape, requiresGrad: true), createGraph: false).scalars[0]
            }
            let numeric = (value(1e-2) - value(-1e-2)) / 2e-2
            worst = max(worst, abs(numeric - analytic[i]) / max(1, abs(numeric)))
        }
        #expect(worst < 2e-2, "second-order worst relative error \(worst)")
    }

    @Test func backwardAccumulatesIntoLeavesAndInferenceRecordsNothing() {
        let a = try! Variable([1, 2, 3], shape: [3], requiresGrad: true)
        let b = try! Variable([4, 5, 6], shape: [3], requiresGrad: true)
        (a * b).sum().backward()
        #expect(a.grad?.scalars == [4, 5, 6] && b.grad?.scalars == [1, 2, 3])
        (a * b).sum().backward()
        #expect(a.grad?.scalars == [8, 10, 12])
        let y = GradMode.disabled { (a * b).exp() }
        #expect(y.isLeaf && !y.requiresGrad)
        // A value used twice gets both contributions.
        let x = try! Variable([3], shape: [1], requiresGrad: true)
        let g = Autograd.gradients(of: (x * x + x).sum(), wrt: [x])[0]!
        #expect(g.scalars == [7])
    }

    @Test func opsAgreeWithDirectFormulas() throws {
        let x = try Variable([1, 2, 3, 4, 5, 6], shape: [2, 3])
        #expect(x.softmax().scalars[0...2].reduce(0, +) > 0.9999)
        let pooled = try Variable((0..<16).map(Float.init), shape: [1, 1, 4, 4]).avgPool2d(kernel: 2)
        #expect(pooled.scalars == [2.5, 4.5, 10.5, 12.5])
        let maxed = try Variable((0..<16).map(Float.init), shape: [1, 1, 4, 4]).maxPool2d(kernel: 2)
        #expect(maxed.scalars == [5, 7, 13, 15])
        // A 1×1 convolution is a matrix product over channels.
        let img = try Variable((0..<8).map(Float.init), shape: [1, 2, 2, 2])
        let w = try Variable([1, 10], shape: [1, 2, 1, 1])
        #expect(conv2d(img, weight: w, bias: nil).scalars == [40, 51, 62, 73])
        // Bilinear upsampling of a constant stays constant; of a ramp stays monotone.
        let up = try Variable([1, 1, 1, 1], shape: [1, 1, 2, 2]).upsampleBilinear(height: 5, width: 3)
        #expect(up.scalars.allSatisfy { abs($0 - 1) < 1e-6 })
    }
}

@Suite struct IndexingTests {
    @Test func stableSortTopKOneHotWhere() throws {
        let t = try Tensor([Float(3), 1, 3, 2, 1, 0], shape: [2, 3])
        #expect(try t.argsort().scalars(as: Int64.self) == [1, 0, 2, 2, 1, 0])
        #expect(try t.argsort(descending: true).scalars(as: Int64.self) == [0, 2, 1, 0, 1, 2])
        let (v, i) = try t.topK(2)
        #expect(try v.scalars(as: Float.self) == [3, 3, 2, 1] && i.scalars(as: Int64.self) == [0, 2, 0, 1])
        #expect(try Tensor.oneHot([2, 0], classes: 3).scalars(as: Float.self) == [0, 0, 1, 1, 0, 0])
        #expect(throws: TensorError.self) { try Tensor.oneHot([3], classes: 3) }
        let w = try Tensor.where(try Tensor([UInt8(1), 0], shape: [2]), try Tensor([Float(5), 6], shape: [2]), try Tensor([Float(7), 8], shape: [2]))
        #expect(try w.scalars(as: Float.self) == [5, 8])
    }

    /// `linear` is one recorded op (its backward dx = g·W, dW = gᵀ·x, db = Σ_rows g); to second order
    /// it equals the composite x·Wᵀ + b it replaced: the gradient of ‖∂L/∂W‖² with respect to x, W
    /// and b, with L = Σ tanh(linear(x))² over a 3-D x (what DC's gradient matching differentiates).
    @Test func linearSecondOrderMatchesTheComposite() throws {
        var gc = GradientCheck()
        let (x, w, b) = (gc.random([2, 3, 4]), gc.random([5, 4]), gc.random([5]))
        func secondOrder(_ f: (Variable, Variable, Variable) -> Variable) -> [[Float]] {
            let inputs = [x, w, b].map { Variable($0.value, requiresGrad: true) }
            let loss = (f(inputs[0], inputs[1], inputs[2]).tanh() * f(inputs[0], inputs[1], inputs[2]).tanh()).sum()
            let dW = Autograd.gradients(of: loss, wrt: [inputs[1]], createGraph: true)[0]!
            let outer = (dW * dW).sum()
            return Autograd.gradients(of: outer, wrt: inputs).map { g in g.flatMap { try? $0.value.scalars(as: Float.self) } ?? [] }
        }
        let fused = secondOrder { linear($0, weight: $1, bias: $2) }
        let composite = secondOrder { matmul($0, $1, transposeB: true) + $2 }
        for (i, name) in ["x", "W", "b"].enumerated() {
            let (a, c) = (fused[i], composite[i])
            #expect(a.count == c.count && !c.isEmpty, "\(name): \(a.count) and \(c.count) gradient elements")
            let worst = zip(a, c).map { abs($0 - $1) }.max() ?? .infinity, scale = c.map(abs).max() ?? 0
            #expect(scale > 0 && worst <= 1e-5 * max(scale, 1), "\(name): max |Δ| \(worst) over \(scale)")
        }
    }
}
