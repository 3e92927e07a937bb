import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// `stm-tracker`: the label-propagation tracker SST runs without SAM 2, as a component of its own
/// so another tracker (a SAM 2 backed one) can replace it: patch features of a pseudo-video in,
/// label masks out.
struct STMTrackerComponent: Segmenter {
    struct Options: ComponentOptions {
        var temperature = 0.1
        var top_k = 5
        var radius = 12
        var queue = 7
        var parts = 0
        var height = 0
        var width = 0
        static let help = [
            "temperature": "τ of exp(⟨f_q, f_s⟩/τ)", "top_k": "sources kept per query patch, jointly across context frames",
            "radius": "neighbourhood in patches (|Δrow|, |Δcol| ≤ radius; 0: everywhere)",
            "queue": "recent soft predictions kept as context besides the first frame",
            "parts": "number of trait labels (1…parts, 0 background); 0: the largest label in the support mask",
            "height": "output mask height (0: the support mask's)", "width": "output mask width (0: the support mask's)",
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "temperature": 1e-12...1e12, "top_k": 1...1e9, "radius": 0...1e9, "queue": 0...1e6,
            "parts": 0...65535, "height": 0...65536, "width": 0...65536,
        ]
    }
    static let id = "stm-tracker"
    static let summary = "Space-time-memory label propagation over patch features (DINO's video segmentation; SST's tracker without SAM 2)"
    static let operations = [
        OperationSpec(
            "segment", summary: "propagate the support mask (frame 0) through the query frames, in order",
            inputs: [
                TensorSpec("features", dtypes: ["f32"], shape: "F×R×C×D", summary: "patch features, frame 0 = the labelled support"),
                TensorSpec("labels", dtypes: ["u8", "i32", "i64"], shape: "H×W", summary: "the support's trait mask: 0 background, 1…parts"),
            ],
            outputs: [TensorSpec("masks", dtypes: ["i64"], shape: "(F−1)×H×W", summary: "each query's label mask")])
    ]

    func segment(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let f = try request.inputs.require("features", dtypes: [.float32], rank: 4)
        let mask = try request.inputs.require("labels", dtypes: [.uint8, .int32, .int64], rank: 2)
        let (frames, rows, cols, dim) = (f.shape[0], f.shape[1], f.shape[2], f.shape[3])
        guard frames >= 2 else { throw MenagerieError.invalidArgument("input 'features' needs the support and at least one query frame, got \(frames)") }
        let labels = try mask.integers()
        let (h, w) = (mask.shape[0], mask.shape[1])
        let channels = try Self.checkMask(labels, parts: o.parts, name: "labels")
        var settings = PropagationSettings()
        settings.temperature = o.temperature
        settings.topK = o.top_k
        settings.radius = o.radius
        settings.queue = o.queue
        guard o.temperature > 0, o.top_k > 0, o.radius >= 0, o.queue >= 0 else {
            throw MenagerieError.invalidArgument("temperature and top_k must be > 0; radius and queue ≥ 0")
        }
        let values = try f.scalars(as: Float.self), plane = rows * cols * dim
        let memory = SpaceTimeMemory(
            settings: settings, rows: rows, cols: cols, dim: dim, features: Array(values[0..<plane]),
            labels: patchLabels(labels, height: h, width: w, rows: rows, cols: cols, channels: channels), channels: channels)
        let (oh, ow) = (o.height > 0 ? o.height : h, o.width > 0 ? o.width : w)
        do {
            try Limits.allocation(
                shape: [rows, cols, channels], elementSize: 4, what: "the support's soft labels (\(channels) channels)", source: "input 'labels'")
            try Limits.allocation(shape: [frames - 1, oh, ow], elementSize: 8, what: "the output masks", source: "options 'height' × 'width'")
        } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        var out: [Int64] = []
        for k in 1..<frames {
            try request.host.checkCancelled()
            let seg = memory.propagate(Array(values[(k * plane)..<((k + 1) * plane)]))
            out += labelImage(seg, rows: rows, cols: cols, channels: channels, height: oh, width: ow).map(Int64.init)
        }
        return Response(
            result: ["frames": .number(Double(frames - 1)), "parts": .number(Double(channels - 1))],
            tensors: [("masks", try Tensor(out, shape: [frames - 1, oh, ow]))])
    }

    /// Validates a trait mask; returns the channel count (parts + background).
    static func checkMask(_ labels: [Int], parts: Int, name: String) throws -> Int {
        guard let top = labels.max(), top > 0 else {
            throw MenagerieError.invalidArgument(
                "the mask '\(name)' holds no trait label (all background): label the traits 1, 2, … and leave 0 for the background")
        }
        guard labels.allSatisfy({ $0 >= 0 }) else { throw MenagerieError.invalidArgument("the mask '\(name)' has negative labels") }
        guard top <= 65535 else {
            throw MenagerieError.invalidArgument("the mask '\(name)' has label \(top): trait labels must lie in 0…65535")
        }
        if parts > 0 && top > parts {
            throw MenagerieError.invalidArgument("the mask '\(name)' has label \(top), beyond the \(parts) parts given (labels 1…\(parts), 0 background)")
        }
        return (parts > 0 ? parts : top) + 1
    }
}

/// The plugin: SST end to end (`sst`) and its replaceable tracker (`stm-tracker`).
public enum SSTPlugin: Plugin {
    public static let name = "sst"
    public static let version = "0.1.0"
    public static let summary =
        "SST (static segmentation by tracking): one-shot trait segmentation, cycle-consistent fine-tuning, trait retrieval; the label-propagation tracker"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let paper: Paper? = Paper(
        title: "Static Segmentation by Tracking: A Frustratingly Label-Efficient Approach to Fine-Grained Segmentation",
        url: "https://arxiv.org/abs/2501.06749")
    public static let components: [any Component.Type] = [SSTComponent.self, STMTrackerComponent.self]
}
