import Foundation
import MenagerieKit
import NN
import Tensors

/// The losses of distillation as `objective` components: `loss` returns the value in result.json
/// and, as tensors, the gradient with respect to the input named in the operation's outputs — so a
/// method in another plugin (or in C) can use them without linking this one.
struct TemperatureOptions: ComponentOptions {
    var temperature = 4.0
    static let help = ["temperature": "kd: softmax temperature T (the loss is scaled by T²)"]
}

private func lossResponse(_ loss: Variable, wrt input: Variable, name: String) throws -> Response {
    let g = Autograd.gradients(of: loss, wrt: [input])[0]?.value ?? Tensor(zeros: .float32, shape: input.shape)
    return Response(result: ["loss": .number(Double(loss.scalars[0]))], tensors: [("grad_" + name, g)])
}

private func float32(_ inputs: Inputs, _ name: String, rank: Int) throws -> Tensor {
    try inputs.require(name, dtypes: [.float32, .float64], rank: rank).converted(to: .float32).owned()
}

struct CrossEntropyObjective: Objective {
    static let id = "cross-entropy"
    static let summary = "Mean cross-entropy of logits against class indices, and its gradient"
    static let operations = [
        OperationSpec(
            "loss", summary: "loss of logits [N, K] against labels [N]",
            inputs: [TensorSpec("logits", dtypes: ["f32"], shape: "N×K"), TensorSpec("labels", dtypes: ["i64"], shape: "N")],
            outputs: [TensorSpec("grad_logits", dtypes: ["f32"], shape: "N×K")])
    ]
    func loss(_ request: Request<NoOptions>) throws -> Response {
        let logits = Variable(try float32(request.inputs, "logits", rank: 2), requiresGrad: true)
        let labels = try request.inputs.require("labels", rank: 1).integers()
        guard labels.count == logits.shape[0], labels.allSatisfy({ (0..<logits.shape[1]).contains($0) }) else {
            throw MenagerieError.invalidArgument("labels must hold \(logits.shape[0]) indices in 0..<\(logits.shape[1])")
        }
        return try lossResponse(crossEntropy(logits, labels: labels), wrt: logits, name: "logits")
    }
}

struct KDObjective: Objective {
    typealias Options = TemperatureOptions
    static let id = "kd"
    static let summary = "Knowledge distillation: KL(softmax(teacher/T) ‖ softmax(student/T)) · T², and its gradient in the student logits"
    static let operations = [
        OperationSpec(
            "loss", summary: "KD loss of student logits against teacher logits",
            inputs: [TensorSpec("student", dtypes: ["f32"], shape: "N×K"), TensorSpec("teacher", dtypes: ["f32"], shape: "N×K")],
            outputs: [TensorSpec("grad_student", dtypes: ["f32"], shape: "N×K")])
    ]
    func loss(_ request: Request<TemperatureOptions>) throws -> Response {
        let student = Variable(try float32(request.inputs, "student", rank: 2), requiresGrad: true)
        let teacher = Variable(try float32(request.inputs, "teacher", rank: 2))
        guard student.shape == teacher.shape else {
            throw MenagerieError.invalidArgument("student \(student.shape) and teacher \(teacher.shape) differ in shape")
        }
        guard request.options.temperature > 0 else { throw MenagerieError.invalidArgument("temperature must be > 0") }
        return try lossResponse(
            distillationKL(student: student, teacher: teacher, temperature: Float(request.options.temperature)), wrt: student, name: "student")
    }
}

struct DistributionMatchingObjective: Objective {
    static let id = "distribution-matching"
    static let summary = "DM's loss ‖mean φ(real) − mean φ(synthetic)‖² on embeddings, and its gradient in the synthetic embeddings"
    static let operations = [
        OperationSpec(
            "loss", summary: "squared distance of the mean embeddings",
            inputs: [
                TensorSpec("real", dtypes: ["f32"], shape: "N×D"), TensorSpec("synthetic", dtypes: ["f32"], shape: "M×D"),
                TensorSpec("weights", dtypes: ["f32"], shape: "N", summary: "optional weights of the real rows (normalised)", optional: true),
            ],
            outputs: [TensorSpec("grad_synthetic", dtypes: ["f32"], shape: "M×D")])
    ]
    func loss(_ request: Request<NoOptions>) throws -> Response {
        let real = Variable(try float32(request.inputs, "real", rank: 2))
        let syn = Variable(try float32(request.inputs, "synthetic", rank: 2), requiresGrad: true)
        guard real.shape[1] == syn.shape[1] else {
            throw MenagerieError.invalidArgument("real and synthetic embeddings differ in width: \(real.shape[1]) vs \(syn.shape[1])")
        }
        var weights: [Float]? = nil
        if request.inputs["weights"] != nil {
            let w = try request.inputs.require("weights", dtypes: [.float32], rank: 1).scalars(as: Float.self)
            guard w.count == real.shape[0], w.allSatisfy({ $0 >= 0 }), w.reduce(0, +) > 0 else {
                throw MenagerieError.invalidArgument("weights must hold \(real.shape[0]) non-negative numbers, not all zero")
            }
            let total = w.reduce(0, +)
            weights = w.map { $0 / total }
        }
        return try lossResponse(Matching.meanEmbeddingDistance(real: real, synthetic: syn, weights: weights), wrt: syn, name: "synthetic")
    }
}

struct GradientMatchingObjective: Objective {
    static let id = "gradient-matching"
    static let summary = "DC's layer-wise gradient distance Σ(1 − cos) over rows, and its gradient in the synthetic gradients"
    static let operations = [
        OperationSpec(
            "loss", summary: "distance between real_i and synthetic_i for i = 0, 1, … (rank-1 pairs contribute 0)",
            inputs: [
                TensorSpec("real_0", dtypes: ["f32"], summary: "the first parameter's gradient on real data; real_1, … follow"),
                TensorSpec("synthetic_0", dtypes: ["f32"], summary: "the same on synthetic data; synthetic_1, … follow"),
            ],
            outputs: [TensorSpec("grad_synthetic_0", dtypes: ["f32"], summary: "one per synthetic_i")])
    ]
    func loss(_ request: Request<NoOptions>) throws -> Response {
        var real: [Variable] = [], syn: [Variable] = []
        var i = 0
        while request.inputs["real_\(i)"] != nil || request.inputs["synthetic_\(i)"] != nil {
            let r = try request.inputs.require("real_\(i)", dtypes: [.float32]).owned(),
                s = try request.inputs.require("synthetic_\(i)", dtypes: [.float32]).owned()
            guard r.shape == s.shape else { throw MenagerieError.invalidArgument("real_\(i) \(r.shape) and synthetic_\(i) \(s.shape) differ in shape") }
            real.append(Variable(r))
            syn.append(Variable(s, requiresGrad: true))
            i += 1
        }
        guard i > 0 else {
            throw MenagerieError.invalidArgument("'\(Self.id)' needs --input real_0=… --input synthetic_0=… (and _1, _2, … for more parameters)")
        }
        let d = Matching.gradientDistance(real: real, synthetic: syn)
        let grads = Autograd.gradients(of: d, wrt: syn)
        return Response(
            result: ["loss": .number(Double(d.scalars[0])), "pairs": .number(Double(i))],
            tensors: grads.enumerated().map { ("grad_synthetic_\($0.offset)", $0.element?.value ?? Tensor(zeros: .float32, shape: syn[$0.offset].shape)) })
    }
}

/// The plugin: dataset distillation's frame, baselines, objectives, evaluation and the bias study.
public enum DatasetDistillationPlugin: Plugin {
    public static let name = "dataset-distillation"
    public static let version = "0.2.0"
    public static let summary =
        "Dataset distillation: random, herding, DC, DSA, DM; both evaluation protocols; objectives; CMNIST-DD, CCIFAR10-DD and the bias study; the diffusion study (its methods through the host)"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let paper: Paper? = Paper(title: "Exploring the Impact of Dataset Bias on Dataset Distillation", url: "https://arxiv.org/abs/2403.16028")
    public static let components: [any Component.Type] = [
        RandomSelectionComponent.self, HerdingComponent.self, DCComponent.self, DSAComponent.self, DMComponent.self,
        DistilledEvalComponent.self, CMNISTComponent.self, CCIFARComponent.self,
        CrossEntropyObjective.self, KDObjective.self, DistributionMatchingObjective.self, GradientMatchingObjective.self,
    ]
}
