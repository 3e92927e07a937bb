import Foundation
import Synchronization
import Tensors
import Testing

/// oneDNN's convolutions against our im2col convolution on the same operands. The reference is the
/// public `conv2d`, which for these small shapes is always ours: each case is below the rule
/// (`OneDNNConv.pays` is false, asserted), whatever MENAGERIE_BACKEND says. Forward, backward-data,
/// backward-weights and the bias gradient, through the tensor calls (blocked layouts with reorders,
/// and plain NCHW) and through the recorded op's gradients, to second order; from two threads at once.
@Suite(.serialized) struct OneDNNConvTests {
    static let available = OneDNNTests.available

    struct Case: CustomStringConvertible, Sendable {
        var n: Int, c: Int, h: Int, w: Int, o: Int
        var window: Window2D
        var groups = 1
        var bias = true
        var description: String {
            "\(n)×\(c)×\(h)×\(w) → \(o) k\(window.kernel) s\(window.stride) p\(window.padding) d\(window.dilation) g\(groups)\(bias ? " +b" : "")"
        }
        var geometry: OneDNNConv.Geometry { .init(n: n, c: c, h: h, w: w, o: o, window: window, groups: groups) }
    }

    static let cases: [Case] = [
        Case(n: 2, c: 3, h: 9, w: 7, o: 8, window: Window2D(kernel: (3, 3), padding: (1, 1))), // non-square, first-layer-like
        Case(n: 2, c: 8, h: 10, w: 10, o: 6, window: Window2D(kernel: (3, 3), stride: (2, 2), padding: (1, 1))),
        Case(n: 1, c: 4, h: 11, w: 9, o: 4, window: Window2D(kernel: (3, 2), padding: (2, 1), dilation: (2, 2))),
        Case(n: 2, c: 8, h: 7, w: 7, o: 6, window: Window2D(kernel: (3, 3), padding: (1, 1)), groups: 2),
        Case(n: 3, c: 16, h: 5, w: 6, o: 12, window: Window2D(kernel: (1, 1))),
        Case(n: 2, c: 4, h: 8, w: 9, o: 8, window: Window2D(kernel: (5, 5), stride: (2, 1), padding: (2, 2)), groups: 4, bias: false),
    ]

    static func random(_ shape: [Int], seed: UInt64) -> Tensor {
        var rng = SplitMix(seed)
        return Tensor.make(shape) { p in for i in 0..<shape.reduce(1, *) { p[i] = rng.uniform() } }
    }

    /// Largest |x − y| relative to the largest |y|.
    static func relativeError(_ x: Tensor, _ y: Tensor) -> Float {
        #expect(x.shape == y.shape)
        let a = (try? x.scalars(as: Float.self)) ?? [], b = (try? y.scalars(as: Float.self)) ?? []
        let scale = max(b.map(abs).max() ?? 1, 1e-30)
        return (zip(a, b).map { abs($0 - $1) }.max() ?? .infinity) / scale
    }

    struct Result {
        var y: Tensor, dx: Tensor, dw: Tensor, db: Tensor?
    }

    /// Our forward and the gradients of ⟨dy, y⟩ (the reference).
    static func ours(_ c: Case, _ x: Tensor, _ w: Tensor, _ b: Tensor?, _ dy: Tensor) -> Result {
        let xv = Variable(x, requiresGrad: true), wv = Variable(w, requiresGrad: true), bv = b.map { Variable($0, requiresGrad: true) }
        let y = conv2d(
            xv, weight: wv, bias: bv, stride: c.window.stride, padding: c.window.padding, dilation: c.window.dilation, groups: c.groups)
        let g = Autograd.gradients(of: y, wrt: [xv, wv] + (bv.map { [$0] } ?? []), seed: Variable(dy))
        return Result(y: y.value, dx: g[0]!.value, dw: g[1]!.value, db: b == nil ? nil : g[2]!.value)
    }

    static func operands(_ c: Case, seed: UInt64) -> (Tensor, Tensor, Tensor?, Tensor) {
        let g = c.geometry
        return (
            random(g.inputShape, seed: seed), random(g.weightShape, seed: seed + 1), c.bias ? random([c.o], seed: seed + 2) : nil,
            random(g.outputShape, seed: seed + 3)
        )
    }

    /// The three tensor calls, with blocked layouts (as `conv2d` runs them) or plain NCHW.
    static func dnnl(_ c: Case, _ x: Tensor, _ w: Tensor, _ b: Tensor?, _ dy: Tensor, plain: Bool) -> Result? {
        let g = c.geometry
        guard let y = OneDNNConv.forward(x, weight: w, bias: b, g, plain: plain),
            let dx = OneDNNConv.backwardData(dy, weight: w, g, plain: plain),
            let (dw, db) = OneDNNConv.backwardWeights(x, dy, g, bias: c.bias, plain: plain)
        else { return nil }
        return Result(y: y, dx: dx, dw: dw, db: db)
    }

    static func compare(_ r: Result, _ reference: Result, _ label: String) {
        #expect(relativeError(r.y, reference.y) < 1e-4, "\(label): forward")
        #expect(relativeError(r.dx, reference.dx) < 1e-4, "\(label): backward-data")
        #expect(relativeError(r.dw, reference.dw) < 1e-4, "\(label): backward-weights")
        #expect((r.db == nil) == (reference.db == nil), "\(label): bias gradient present")
        if let db = r.db, let ref = reference.db { #expect(relativeError(db, ref) < 1e-4, "\(label): bias gradient") }
    }

    @Test(.enabled(if: available), arguments: cases)
    func tensorCallsMatchOurs(_ c: Case) throws {
        #expect(!OneDNNConv.pays(c.geometry), "the reference must be our own convolution")
        let (x, w, b, dy) = Self.operands(c, seed: 5)
        let reference = Self.ours(c, x, w, b, dy)
        for plain in [false, true] {
            let r = try #require(Self.dnnl(c, x, w, b, dy, plain: plain), "\(c): oneDNN failed")
            Self.compare(r, reference, "\(c) plain=\(plain)")
        }
    }

    /// The recorded op: its gradients, and the gradients of a function of its gradients (the
    /// dataset-condensation outer step's shape: L = ⟨∂⟨dy, y⟩/∂x, r⟩ + ⟨∂⟨dy, y⟩/∂w, s⟩, differentiated
    /// with respect to x, w and dy), equal ours.
    @Test(.enabled(if: available), arguments: cases)
    func recordedOpMatchesOursToSecondOrder(_ c: Case) throws {
        let (x, w, b, dy) = Self.operands(c, seed: 9)
        let g = c.geometry
        let r = Self.random(g.inputShape, seed: 20), s = Self.random(g.weightShape, seed: 21)
        func run(_ dnnl: Bool) throws -> [Tensor] {
            let xv = Variable(x, requiresGrad: true), wv = Variable(w, requiresGrad: true), bv = b.map { Variable($0, requiresGrad: true) }
            let dyv = Variable(dy, requiresGrad: true)
            let y =
                dnnl
                ? try #require(OneDNNConv.conv2d(xv, weight: wv, bias: bv, c.window, groups: c.groups))
                : conv2d(
                    xv, weight: wv, bias: bv, stride: c.window.stride, padding: c.window.padding, dilation: c.window.dilation, groups: c.groups)
            let first = Autograd.gradients(of: (y * dyv).sum(), wrt: [xv, wv] + (bv.map { [$0] } ?? []), createGraph: true)
            let loss = (first[0]! * Variable(r)).sum() + (first[1]! * Variable(s)).sum()
            let second = Autograd.gradients(of: loss, wrt: [xv, wv, dyv])
            // x and w enter the gradients linearly and not their own: d/dx = conv-adjoint(dy, s),
            // d/dw = weight gradient of (r, dy); d/d(dy) = conv(r, w) + conv(x, s).
            #expect(second[0] != nil && second[1] != nil && second[2] != nil)
            return [y.value] + first.map { $0!.value } + second.compactMap { $0?.value }
        }
        let ours = try run(false), theirs = try run(true)
        #expect(ours.count == theirs.count)
        for (i, (a, e)) in zip(theirs, ours).enumerated() { #expect(Self.relativeError(a, e) < 1e-4, "\(c): output \(i)") }
    }

    /// Two threads running the three calls at once on shared cached primitives (one OpenMP thread
    /// each, as `GEMM.concurrently` sets): the same results as ours.
    @Test(.enabled(if: available)) func concurrentCallsAgree() {
        let results = Mutex<[Int: Bool]>([:])
        GEMM.concurrently(Self.cases.count * 2, threads: 2) { _, items in
            for i in items {
                let c = Self.cases[i % Self.cases.count]
                let (x, w, b, dy) = Self.operands(c, seed: 31)
                let reference = Self.ours(c, x, w, b, dy)
                guard let r = Self.dnnl(c, x, w, b, dy, plain: false) else {
                    results.withLock { $0[i] = false }
                    continue
                }
                let worst = [Self.relativeError(r.y, reference.y), Self.relativeError(r.dx, reference.dx), Self.relativeError(r.dw, reference.dw)].max()!
                results.withLock { $0[i] = worst < 1e-4 }
            }
        }
        let ok = results.withLock { $0 }
        #expect(ok.count == Self.cases.count * 2 && ok.values.allSatisfy { $0 }, "\(ok)")
    }

    /// The routing: only the fp32 oneDNN backend and a shape above the rule go to oneDNN.
    @Test func routingRule() {
        let big = OneDNNConv.Geometry(n: 256, c: 128, h: 16, w: 16, o: 128, window: Window2D(kernel: (3, 3), padding: (1, 1)))
        #expect(OneDNNConv.pays(big))
        #expect(OneDNNConv.routes(big, backend: OneDNNBackend()))
        #expect(!OneDNNConv.routes(big, backend: OpenBLASBackend()))
        #expect(!OneDNNConv.routes(big, backend: OneDNNBackend(bf16: true)))
        #expect(!OneDNNConv.routes(Self.cases[0].geometry, backend: OneDNNBackend()))
    }

    /// With OpenBLAS as the backend (MENAGERIE_BACKEND=openblas, or no oneDNN) a convolution above
    /// the rule runs no oneDNN primitive.
    @Test(.enabled(if: GEMM.backend is OpenBLASBackend)) func openBLASBackendKeepsOurs() {
        let c = Case(n: 8, c: 32, h: 32, w: 32, o: 32, window: Window2D(kernel: (3, 3), padding: (1, 1)))
        #expect(OneDNNConv.pays(c.geometry))
        let before = OneDNNConv.counters.executed
        let (x, w, b, dy) = Self.operands(c, seed: 3)
        _ = Self.ours(c, x, w, b, dy)
        _ = GradMode.disabled { conv2d(Variable(x), weight: Variable(w), bias: b.map { Variable($0) }, padding: (1, 1)) }
        #expect(OneDNNConv.counters.executed == before)
    }
}
