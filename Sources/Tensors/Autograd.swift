import Foundation
import Synchronization

/// Reverse-mode automatic differentiation on float32 tensors.
///
/// A `Variable` wraps a `Tensor` value. Every differentiable op (`Ops.swift`, `+`, `*`, `matmul`…)
/// records, when gradients are enabled and an input requires one, a node holding its inputs and a
/// backward function. The backward functions are written with the same differentiable ops, so
/// differentiating a gradient works (`createGraph: true`), which dataset condensation by gradient
/// matching needs. With `GradMode.disabled { … }` (inference) nothing is recorded: no tape cost.
// @unchecked: `grad` is behind a Mutex, `node` and its closures are immutable, `value` changes only in `updateLeaf` under the owning Parameter's lock.
public final class Variable: @unchecked Sendable {
    /// The value. Fixed for every Variable but a trainable leaf, which an optimizer updates in
    /// place (`updateLeaf`, copy on write) between steps.
    public private(set) var value: Tensor
    private let gradient = Mutex<Variable?>(nil)
    /// The gradient accumulated by `backward()` (for leaves that require one).
    public var grad: Variable? {
        get { gradient.withLock { $0 } }
        set { gradient.withLock { $0 = newValue } }
    }
    public let requiresGrad: Bool
    let node: Node?

    /// A leaf. `value` must be float32.
    public init(_ value: Tensor, requiresGrad: Bool = false) {
        precondition(value.dtype == .float32, "a Variable holds f32, got \(value.dtype.name)")
        self.value = value
        self.requiresGrad = requiresGrad
        self.node = nil
    }

    /// Rewrites a leaf's value elementwise (`Tensor.updateFloats`: in place when its storage is
    /// owned and unshared, else into a fresh buffer, never through a memory-mapped file). The
    /// caller serialises updates and must not update a leaf while another thread reads it (the
    /// `Parameter` that owns the leaf does both under its lock). A graph recorded earlier sees the
    /// new value: run its backward before the update, as every optimizer step does.
    public func updateLeaf(_ body: (UnsafeMutableBufferPointer<Float>, UnsafeBufferPointer<Float>) throws -> Void) rethrows {
        precondition(node == nil, "updateLeaf on a value computed by an op; only leaves are updated")
        try value.updateFloats(body)
    }

    /// Adds `g` to `grad` (or sets it), in one step under the gradient's lock.
    func accumulateGradient(_ g: Variable, createGraph: Bool) {
        gradient.withLock { grad in
            grad = grad.map { a in GradMode.with(createGraph) { a + g } } ?? g
        }
    }

    /// A leaf from Swift floats.
    public convenience init(_ scalars: [Float], shape: [Int], requiresGrad: Bool = false) throws {
        self.init(try Tensor(scalars, shape: shape), requiresGrad: requiresGrad)
    }

    init(value: Tensor, node: Node) {
        self.value = value
        self.requiresGrad = true
        self.node = node
    }

    public var shape: [Int] { value.shape }
    public var count: Int { value.count }
    public var scalars: [Float] { try! value.scalars(as: Float.self) }
    public var isLeaf: Bool { node == nil }

    /// The same value, cut from the graph.
    public func detached() -> Variable { Variable(value) }

    /// Accumulates d(self)/d(leaf) into every leaf's `grad`. `self` must be a scalar unless `seed`
    /// (the gradient flowing into self) is given.
    public func backward(seed: Variable? = nil, createGraph: Bool = false) {
        let leaves = collectLeaves()
        let grads = Autograd.gradients(of: self, wrt: leaves, seed: seed, createGraph: createGraph)
        for (leaf, g) in zip(leaves, grads) {
            guard let g else { continue }
            leaf.accumulateGradient(g, createGraph: createGraph)
        }
    }

    func collectLeaves() -> [Variable] {
        var out: [Variable] = [], seen = Set<ObjectIdentifier>(), stack: [Variable] = [self]
        while let v = stack.popLast() {
            guard seen.insert(ObjectIdentifier(v)).inserted else { continue }
            if let node = v.node { stack.append(contentsOf: node.inputs) } else if v.requiresGrad { out.append(v) }
        }
        return out
    }
}

/// A recorded op: its inputs and how to turn the output's gradient into the inputs' gradients.
final class Node {
    let name: String
    let inputs: [Variable]
    let backward: (Variable) -> [Variable?]
    init(name: String, inputs: [Variable], backward: @escaping (Variable) -> [Variable?]) {
        self.name = name
        self.inputs = inputs
        self.backward = backward
    }
}

/// Whether ops record the graph, per thread (default: on). Two threads can run autograd at once,
/// each with its own mode; a graph itself must not be shared between threads while it is built.
public enum GradMode {
    /// A pthread key whose value is nil (recording) or 1 (not recording).
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    static var enabled: Bool {
        get { pthread_getspecific(key) == nil }
        set { pthread_setspecific(key, newValue ? nil : UnsafeRawPointer(bitPattern: 1)) }
    }

    public static var isEnabled: Bool { enabled }

    /// Runs `body` with recording on or off, restoring the previous mode afterwards.
    public static func with<T>(_ on: Bool, _ body: () throws -> T) rethrows -> T {
        let saved = enabled
        enabled = on
        defer { enabled = saved }
        return try body()
    }

    /// Inference: nothing is recorded inside `body`.
    public static func disabled<T>(_ body: () throws -> T) rethrows -> T { try with(false, body) }
}

/// Records `value` as the output of an op when gradients are on and an input needs one.
func record(_ name: String, _ value: Tensor, _ inputs: [Variable], _ backward: @escaping (Variable) -> [Variable?]) -> Variable {
    if GradMode.enabled && inputs.contains(where: { $0.requiresGrad }) {
        return Variable(value: value, node: Node(name: name, inputs: inputs, backward: backward))
    }
    return Variable(value)
}

public enum Autograd {
    /// Inside a backward function: whether input `i` of the op needs its gradient (true outside
    /// `gradients(of:)`, and for every input of ops with more than 62 inputs). Backwards that skip
    /// an input return nil for it.
    public static func needsGradient(_ i: Int) -> Bool {
        guard let bits = pthread_getspecific(needsKey) else { return true }
        return (Int(bitPattern: bits) >> (i + 1)) & 1 == 1
    }

    /// A pthread key holding nil (every input needed) or (mask << 1) | 1.
    private static let needsKey: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    static func withNeeds<T>(_ mask: Int?, _ body: () -> T) -> T {
        let saved = pthread_getspecific(needsKey)
        pthread_setspecific(needsKey, mask.map { UnsafeRawPointer(bitPattern: ($0 << 1) | 1) } ?? nil)
        defer { pthread_setspecific(needsKey, saved) }
        return body()
    }

    /// d(output)/d(inputs) (torch.autograd.grad). `nil` for an input the output does not depend on.
    /// With `createGraph`, the returned gradients are themselves differentiable.
    public static func gradients(of output: Variable, wrt inputs: [Variable], seed: Variable? = nil, createGraph: Bool = false) -> [Variable?] {
        precondition(seed != nil || output.count == 1, "gradients(of:) needs a scalar output or a seed, got shape \(output.shape)")
        // Topological order of the graph below `output` (iterative DFS, post-order).
        var order: [Variable] = [], visited = Set<ObjectIdentifier>()
        var stack: [(Variable, Bool)] = [(output, false)]
        while let (v, expanded) = stack.popLast() {
            if expanded {
                order.append(v)
                continue
            }
            guard visited.insert(ObjectIdentifier(v)).inserted else { continue }
            stack.append((v, true))
            for input in v.node?.inputs ?? [] where input.requiresGrad && !visited.contains(ObjectIdentifier(input)) {
                stack.append((input, false))
            }
        }
        // Only values from which some requested input can be reached need a gradient: the rest
        // (e.g. the weights of a network when the gradient with respect to one layer's activations
        // is asked, as Grad-CAM does) is skipped. `order` lists inputs before the values using them.
        let wanted = Set(inputs.map(ObjectIdentifier.init))
        var needed = Set<ObjectIdentifier>()
        for v in order {
            let id = ObjectIdentifier(v)
            if wanted.contains(id) || (v.node?.inputs.contains { needed.contains(ObjectIdentifier($0)) } ?? false) { needed.insert(id) }
        }
        var grads: [ObjectIdentifier: Variable] = [:]
        grads[ObjectIdentifier(output)] = seed ?? Variable(Tensor.filled(1, shape: output.shape))
        GradMode.with(createGraph) {
            for v in order.reversed() {
                guard needed.contains(ObjectIdentifier(v)), let node = v.node, let g = grads[ObjectIdentifier(v)] else { continue }
                // Tell the backward which inputs need a gradient, so it can skip the others' work
                // (e.g. the weight products of a frozen layer).
                var mask = 0
                for (i, input) in node.inputs.enumerated() where i < 62 && input.requiresGrad && needed.contains(ObjectIdentifier(input)) {
                    mask |= 1 << i
                }
                let inputGrads = Autograd.withNeeds(node.inputs.count <= 62 ? mask : nil) { node.backward(g) }
                for (input, ig) in zip(node.inputs, inputGrads) {
                    guard let ig, input.requiresGrad, needed.contains(ObjectIdentifier(input)) else { continue }
                    let id = ObjectIdentifier(input)
                    grads[id] = grads[id].map { $0 + ig } ?? ig
                }
            }
        }
        return inputs.map { grads[ObjectIdentifier($0)] }
    }
}

extension Tensor {
    /// A float32 tensor with every element `value`.
    public static func filled(_ value: Float, shape: [Int]) -> Tensor {
        var t = Tensor(zeros: .float32, shape: shape)
        if value != 0 { t.withUnsafeMutableBytes { raw in raw.withMemoryRebound(to: Float.self) { $0.update(repeating: value) } } }
        return t
    }
}
