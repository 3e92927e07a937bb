import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

extension CoreInferComponent {
    static var inTour: Bool { true }

    /// The embedded tiny LLaMA (trained here on the embedded corpus by `train`): a prompt from the
    /// corpus generated on its core neurons and densely (speed, agreement, the text), the analyses on
    /// the corpus, and the shipped evaluation tasks dense vs stability.
    func tour(_ request: Request<Options>) throws -> Response {
        var o = Options()
        o.prompt = "The planets move"
        o.max_new_tokens = 24
        o.stream = false
        o.save_core = true
        // Every layer after the first is converted (the default window is 5/32…27/32 of the depth).
        o.start = 0
        o.end = 4
        let sparse = try generate(Request(options: o, inputs: request.inputs, host: request.host, component: Self.id, operation: "generate"))
        let analysis = try analyze(Request(options: o, inputs: request.inputs, host: request.host, component: Self.id, operation: "analyze"))
        var result = analysis.result.objectValue ?? [:]
        for key in [
            "text", "speedup", "decode_tokens_per_s", "dense_decode_tokens_per_s", "prefill_tokens_per_s", "greedy_agreement_prefix",
            "kept_neurons_per_layer",
        ] {
            result["generate_" + key] = sparse.result[key]
        }
        result["prompt"] = .string(o.prompt)
        // The shipped tasks, dense and on core neurons (a few seconds).
        let evaluation = try evaluate(Request(options: o, inputs: request.inputs, host: request.host, component: Self.id, operation: "evaluate"))
        for (task, metrics) in [("corpus_choice", ["acc", "acc_norm"]), ("corpus_completion", ["exact_match", "rouge_l", "bleu"])] {
            for mode in ["dense", "stability"] {
                for m in metrics + ["speedup"] { result["evaluate_\(task)_\(mode)_\(m)"] = evaluation.result["tasks"]?[task]?["modes"]?[mode]?[m] }
            }
        }
        return Response(result: .object(result), tensors: sparse.tensors, artifacts: analysis.artifacts + evaluation.artifacts)
    }
}
