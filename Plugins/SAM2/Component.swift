import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// Loaded SAM 2 models by folder and the weights' identity.
let loadedModels = ProcessCache<SAM2Model>()

/// A SAM 2 model folder: `config.yaml` (an official sam2 / sam2.1 yaml or a resolved one) and
/// `model.pt` (the released checkpoint) or `model.safetensors`.
func loadModel(_ folder: String) throws -> SAM2Model {
    let dir = (folder as NSString).expandingTildeInPath
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
        throw MenagerieError.invalidArgument("model: '\(folder)' is not a folder (config.yaml and model.pt or model.safetensors)")
    }
    let config = dir + "/config.yaml"
    guard FileManager.default.fileExists(atPath: config) else {
        throw MenagerieError.invalidArgument("model: '\(folder)' has no config.yaml (copy the sam2 yaml of the checkpoint, e.g. sam2.1_hiera_t.yaml)")
    }
    guard let weights = ["model.pt", "model.safetensors"].map({ dir + "/" + $0 }).first(where: { FileManager.default.fileExists(atPath: $0) }) else {
        throw MenagerieError.invalidArgument("model: '\(folder)' has no model.pt or model.safetensors")
    }
    do {
        return try loadedModels.value(dir, stamp: weights) { try SAM2Model(config: try SAM2Config.read(config), checkpoint: try Checkpoint(path: weights)) }
    } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
}

/// `sam2-tracker`: SAM 2's video predictor as SST's tracker — a mask, clicks or a box on the first
/// frame, the later frames tracked from SAM 2's memory, exactly as sam2's
/// `SAM2VideoPredictor.add_new_mask` / `add_new_points_or_box` + `propagate_in_video` (parity:
/// Tests/SAM2Tests). A mask and clicks together: the mask first, then the clicks on the same frame
/// (sam2 feeds the mask's logits to the SAM heads with them). Frames are read, resized and tracked
/// one at a time.
struct SAM2TrackerComponent: Segmenter {
    struct Options: ComponentOptions {
        var model = ""
        var frames = ""
        var mask = ""
        var points: [[Double]] = []
        var pointLabels: [Int] = []
        var box: [Double] = []
        var object = 0
        var masks = true
        var height = 0
        var width = 0
        // fine-tuning (Finetune.swift)
        var tuned = ""
        var support = ""
        var queries = ""
        var tune = "mask_decoder,memory_attention"
        var steps = 20
        var lr = 1e-5
        var soft = true
        var lora_rank = 0
        var weight_decay = 0.01
        var max_grad_norm = 1.0
        var seed = 0
        static let help = [
            "model": "a SAM 2 folder: config.yaml (sam2 / sam2.1 yaml) and model.pt (the released checkpoint) or model.safetensors",
            "frames": "a folder of PNG/TIFF/JPEG frames (sorted by name; all of one size)",
            "mask":
                "a PNG mask of the first frame, at its size (or points and/or box instead; with both, the mask is added first and the clicks refine it, as sam2's add_new_mask then add_new_points_or_box)",
            "points": "clicks on the first frame, [[x, y], …] in its pixel coordinates (0 ≤ x ≤ width, 0 ≤ y ≤ height), with point_labels",
            "point_labels": "one label per point: 1 positive (on the object), 0 negative (background)",
            "box": "a box on the first frame, [x0, y0, x1, y1] in its pixel coordinates (x0 < x1, y0 < y1); alone or with points",
            "object": "the label in the mask that is the object (0: every non-zero pixel)",
            "masks": "also write each frame's binary mask (logits > 0) as a PNG",
            "height": "with tensor inputs: output mask height (0: the frames')", "width": "with tensor inputs: output mask width (0: the frames')",
            "tuned": "segment with the tuned parameters of this safetensors file (written by finetune)",
            "support": "finetune: the labelled support image (its mask: mask=)", "queries": "finetune: a folder of unlabelled frames (x1, one per step)",
            "tune":
                "finetune: comma-separated parameter groups: mask_decoder, memory_attention, memory_encoder, prompt_encoder, object_pointer, memory_embeddings, or all (everything but the image encoder, as SST's oc_ccl.py)",
            "soft": "finetune: condition x1 on its soft predicted mask sigmoid(logits) (false: logits > 0, as SST's oc_ccl.py)",
            "steps": "finetune: AdamW steps (one palindrome x0 → x1 → x0 per object each)",
            "lr": "finetune: AdamW learning rate (cosine decay to 1 %; 1e-5 as SST's oc_ccl.py)",
            "weight_decay": "finetune: AdamW decoupled weight decay", "max_grad_norm": "finetune: clip the gradient's global L2 norm (0: off)",
            "seed": "finetune: which unlabelled frame each step draws",
            "lora_rank":
                "finetune: > 0 trains rank-R LoRA adapters on the chosen groups' attention projections (q/k/v/out_proj), merged into the tuned tensors (0: the tensors themselves)",
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "object": 0...65535, "height": 0...65536, "width": 0...65536, "steps": 1...1e6, "lr": 0...1, "weight_decay": 0...1e3, "max_grad_norm": 0...1e9,
            "lora_rank": 0...4096, "point_labels": 0...1,
        ]
    }

    static let id = "sam2-tracker"
    static let summary =
        "SAM 2 (Hiera, memory attention) video predictor: a first-frame mask, clicks or box tracked through the frames, as sam2's add_new_mask / add_new_points_or_box + propagate_in_video"
    static let operations = [
        OperationSpec(
            "segment",
            summary:
                "track the first frame's mask (mask=PNG) or clicks and box (points=[[x,y],…] point_labels=[1,0,…] box=[x0,y0,x1,y1]) through the frames → mask_logits.npy, object_score_logits.npy, masks/; or, as SST's tracker, images + a trait label mask → each later frame's label mask",
            inputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "F×3×H×W", summary: "frames in [0, 1] (SST's pseudo-video; frame 0 labelled)", optional: true),
                TensorSpec(
                    "labels", dtypes: ["u8", "i32", "i64"], shape: "H×W", summary: "frame 0's trait mask: 0 background, 1…K (one object each)", optional: true),
            ],
            outputs: [
                TensorSpec(
                    "masks", dtypes: ["i64"], shape: "(F−1)×H×W",
                    summary: "with images: each later frame's label mask (the trait whose logit is highest and positive)"),
                TensorSpec(
                    "mask_logits", dtypes: ["f32"], shape: "F×H×W",
                    summary: "per frame, at the video's resolution (frame 0: a mask prompt's ±10 logits, or SAM's output for points/box)"),
                TensorSpec(
                    "object_score_logits", dtypes: ["f32"], shape: "F", summary: "per frame (NaN for frame 0 with a mask prompt; SAM's score with points/box)"),
            ]),
        OperationSpec("propagate", summary: "the same as segment (sam2's name)"),
        OperationSpec(
            "finetune",
            summary:
                "one-shot cycle-consistent fine-tuning (support → unlabelled frame → support, memory reset, soft intermediate mask, BCE + Dice) → tuned.safetensors, finetune.csv",
            inputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "F×3×H×W", summary: "frame 0 the support, the rest unlabelled, in [0, 1]", optional: true),
                TensorSpec("labels", dtypes: ["u8", "i32", "i64"], shape: "H×W", summary: "the support's trait mask (one object per label)", optional: true),
            ],
            outputs: [TensorSpec("losses", dtypes: ["f32"], shape: "steps", summary: "the cycle loss of each step (with tensors: also every tuned parameter)")]),
    ]

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        if operation == "finetune" { return try finetune(request) }
        guard operation == "propagate" else { throw MenagerieError.unsupported("'\(Self.id)' has no operation '\(operation)'") }
        return try segment(request)
    }

    func segment(_ request: Request<Options>) throws -> Response {
        if request.inputs["images"] != nil { return try segmentTensors(request) }
        let o = request.options
        guard !o.model.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' needs --set model=DIR (config.yaml + model.pt)") }
        let prompted = !o.points.isEmpty || !o.pointLabels.isEmpty || !o.box.isEmpty
        guard !o.frames.isEmpty, !o.mask.isEmpty || prompted else {
            throw MenagerieError.invalidArgument(
                "'\(Self.id)' needs --set frames=DIR and a prompt on the first frame: --set mask=PNG, or --set points='[[x,y],…]' --set point_labels='[1,…]', and/or --set box='[x0,y0,x1,y1]'"
            )
        }
        let files: [String]
        do { files = try ImageFiles.list((o.frames as NSString).expandingTildeInPath) } catch { throw MenagerieError.invalidArgument("frames: \(error)") }
        guard !files.isEmpty else { throw MenagerieError.invalidArgument("frames: '\(o.frames)' holds no PNG, TIFF or JPEG file") }
        let first: Image
        do { first = try ImageFiles.read(files[0]) } catch { throw MenagerieError.invalidArgument("\(error)") }
        let (h, w) = (first.height, first.width)
        let plane = w * h
        let prompt = try pointPrompt(o, width: w, height: h, frame: (files[0] as NSString).lastPathComponent)
        var mask: [Float]? = nil
        if !o.mask.isEmpty {
            let maskImage: Image
            do { maskImage = try ImageFiles.read((o.mask as NSString).expandingTildeInPath) } catch { throw MenagerieError.invalidArgument("mask: \(error)") }
            guard maskImage.width == w, maskImage.height == h else {
                throw MenagerieError.invalidArgument(
                    "mask '\(o.mask)' is \(maskImage.width)×\(maskImage.height); the first frame '\((files[0] as NSString).lastPathComponent)' is \(w)×\(h): they must match"
                )
            }
            let ch = maskImage.channels
            let values = (0..<plane).map { p -> Float in
                let v = Int(maskImage.pixels[p * ch])
                return (o.object == 0 ? v != 0 : v == o.object) ? 1 : 0
            }
            guard values.contains(1) else {
                throw MenagerieError.invalidArgument(
                    "mask '\(o.mask)' is empty\(o.object == 0 ? "" : " for object \(o.object)"): SAM 2 needs the object on the first frame")
            }
            mask = values
        }
        let model = try loadModel(o.model, tuned: o.tuned)
        do {
            _ = try Limits.allocation(shape: [files.count, h, w], elementSize: 4, what: "the mask logits of every frame", source: o.frames)
        } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        let tracker = SAM2VideoTracker(model: model, frameCount: files.count)
        var logits = [Float](), scores = [Float]()
        logits.reserveCapacity(files.count * plane)
        let dir = request.host.scratchDirectory
        if o.masks { try FileManager.default.createDirectory(atPath: dir + "/masks", withIntermediateDirectories: true) }
        let began = Date()
        for (i, file) in files.enumerated() {
            try request.host.checkCancelled()
            let image: Image
            do { image = i == 0 ? first : try ImageFiles.read(file) } catch { throw MenagerieError.invalidArgument("\(error)") }
            guard image.width == w, image.height == h else {
                throw MenagerieError.invalidArgument(
                    "frame '\((file as NSString).lastPathComponent)' is \(image.width)×\(image.height), the first frame \(w)×\(h): all frames must have one size"
                )
            }
            let input = try preprocess(image, size: model.config.imageSize)
            let state: SAM2FrameState
            do {
                state = try GradMode.disabled {
                    guard i == 0 else { return try tracker.track(frame: i, image: input) }
                    let features = tracker.features(input)
                    var out: SAM2FrameState? = nil
                    if let mask { out = try tracker.addMask(Tensor(shape: [h, w], scalars: mask), frame: 0, features: features) }
                    if let p = prompt {
                        out = try tracker.addPoints(p.points, labels: p.labels, box: p.box, videoHeight: h, videoWidth: w, frame: 0, features: features)
                    }
                    guard let out else { throw SAM2Error("no prompt on the first frame: give mask, or points with point_labels, or box") }
                    return out
                }
            } catch let e as SAM2Error { throw MenagerieError.invalidArgument("\(e)") }
            let frameLogits = try tracker.videoResolution(state.masks, height: h, width: w).scalars(as: Float.self)
            logits += frameLogits
            scores.append(i == 0 && prompt == nil ? .nan : state.objectScore)
            if o.masks {
                let name = (file as NSString).deletingPathExtension.components(separatedBy: "/").last ?? String(format: "%05d", i)
                try PNG.write(Image(width: w, height: h, channels: 1, pixels: frameLogits.map { $0 > 0 ? 255 : 0 }), to: dir + "/masks/\(name).png")
            }
            request.host.progress(i + 1, of: files.count, "sam2 frames")
        }
        let seconds = Date().timeIntervalSince(began)
        let maskLogits = Tensor(shape: [files.count, h, w], scalars: logits)
        let objectScores = Tensor(shape: [files.count], scalars: scores)
        let area = (0..<files.count).map { i in Double(logits[(i * plane)..<((i + 1) * plane)].filter { $0 > 0 }.count) / Double(plane) }
        return Response(
            result: [
                "frames": .number(Double(files.count)), "video_size": [.number(Double(h)), .number(Double(w))],
                "image_size": .number(Double(model.config.imageSize)), "seconds": .number(seconds),
                "seconds_per_frame": .number(seconds / Double(files.count)),
                "object_fraction": .array(area.map { .number($0) }),
            ],
            tensors: [("mask_logits", maskLogits), ("object_score_logits", objectScores)], artifacts: o.masks ? ["masks"] : [])
    }
}

extension SAM2TrackerComponent {
    /// A point prompt on the first frame.
    struct PointPrompt {
        var points: [(x: Float, y: Float)]
        var labels: [Int]
        var box: (x0: Float, y0: Float, x1: Float, y1: Float)?
    }

    /// The options `points`, `point_labels` and `box` checked against the first frame (width × height):
    /// nil when none is given. Coordinates are the frame's pixel coordinates, continuous: 0 ≤ x ≤ width,
    /// 0 ≤ y ≤ height.
    func pointPrompt(_ o: Options, width w: Int, height h: Int, frame: String) throws -> PointPrompt? {
        guard !o.points.isEmpty || !o.pointLabels.isEmpty || !o.box.isEmpty else { return nil }
        func bad(_ m: String) -> MenagerieError { MenagerieError.invalidArgument(m) }
        let size = "the first frame '\(frame)' is \(w)×\(h)"
        func text(_ v: [Double]) -> String { "[" + v.map { JSONValue.number($0).compactText }.joined(separator: ", ") + "]" }
        guard o.points.count == o.pointLabels.count else {
            throw bad(
                "options 'points' (\(o.points.count) points) and 'point_labels' (\(o.pointLabels.count) labels) must have the same length: one label per point (1 positive, 0 negative)"
            )
        }
        var points: [(x: Float, y: Float)] = []
        for (i, p) in o.points.enumerated() {
            guard p.count == 2 else { throw bad("option 'points[\(i)]' must be [x, y], got \(text(p))") }
            guard p.allSatisfy(\.isFinite) else { throw bad("option 'points[\(i)]' = \(text(p)) is not a pair of finite numbers") }
            guard (0...Double(w)).contains(p[0]), (0...Double(h)).contains(p[1]) else {
                throw bad("option 'points[\(i)]' = \(text(p)) lies outside the first frame: \(size), so 0 ≤ x ≤ \(w) and 0 ≤ y ≤ \(h)")
            }
            points.append((Float(p[0]), Float(p[1])))
        }
        for (i, l) in o.pointLabels.enumerated() where l != 0 && l != 1 {
            throw bad("option 'point_labels[\(i)]' = \(l): a label is 1 (positive) or 0 (negative)")
        }
        var box: (x0: Float, y0: Float, x1: Float, y1: Float)? = nil
        if !o.box.isEmpty {
            let b = o.box
            guard b.count == 4 else { throw bad("option 'box' must be [x0, y0, x1, y1], got \(text(b))") }
            guard b.allSatisfy(\.isFinite) else { throw bad("option 'box' = \(text(b)) holds a number that is not finite") }
            guard b[0] < b[2], b[1] < b[3] else { throw bad("option 'box' = \(text(b)) must have x0 < x1 and y0 < y1 ([left, top, right, bottom])") }
            guard b[0] >= 0, b[1] >= 0, b[2] <= Double(w), b[3] <= Double(h) else {
                throw bad("option 'box' = \(text(b)) lies outside the first frame: \(size), so 0 ≤ x ≤ \(w) and 0 ≤ y ≤ \(h)")
            }
            box = (Float(b[0]), Float(b[1]), Float(b[2]), Float(b[3]))
        }
        return PointPrompt(points: points, labels: o.pointLabels, box: box)
    }

    /// SST's tracker interface: frames [F, 3, H, W] in [0, 1] and frame 0's trait mask [H, W]; every
    /// trait is tracked as its own object (the image features computed once per frame and shared), and
    /// each later frame's pixel takes the trait whose logit is highest, background where none is
    /// positive. Returns `masks` [F−1, height, width].
    func segmentTensors(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.model.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' needs model=DIR (tracker_options=[\"model=DIR\"] from sst)") }
        guard o.points.isEmpty, o.pointLabels.isEmpty, o.box.isEmpty else {
            throw MenagerieError.invalidArgument(
                "options 'points', 'point_labels' and 'box' go with frames=DIR; with the 'images' input, the 'labels' mask is the prompt")
        }
        let model = try loadModel(o.model, tuned: o.tuned)
        let images = try request.inputs.require("images", dtypes: [.float32], rank: 4)
        let labelsTensor = try request.inputs.require("labels", dtypes: [.uint8, .int32, .int64], rank: 2)
        let (frames, channels, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        guard frames >= 2, channels == 3 else {
            throw MenagerieError.invalidArgument("input 'images' must be [F ≥ 2, 3, H, W], got \(images.shape)")
        }
        guard labelsTensor.shape == [h, w] else {
            throw MenagerieError.invalidArgument("input 'labels' is \(labelsTensor.shape); the frames are \(h)×\(w): they must match")
        }
        let labels = try labelsTensor.integers()
        guard labels.allSatisfy({ (0...65535).contains($0) }) else { throw MenagerieError.invalidArgument("input 'labels' holds a label outside 0…65535") }
        let parts = Array(Set(labels.filter { $0 > 0 })).sorted()
        guard !parts.isEmpty else { throw MenagerieError.invalidArgument("input 'labels' holds no trait (all background)") }
        let (oh, ow) = (o.height > 0 ? o.height : h, o.width > 0 ? o.width : w)
        do {
            _ = try Limits.allocation(shape: [frames - 1, oh, ow], elementSize: 8, what: "the output masks", source: "options 'height' × 'width'")
            _ = try Limits.allocation(shape: [parts.count, oh, ow], elementSize: 4, what: "one frame's logits per trait", source: "input 'labels'")
        } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        let values = try images.scalars(as: Float.self), plane = 3 * h * w
        let trackers = parts.map { _ in SAM2VideoTracker(model: model, frameCount: frames) }
        var out: [Int64] = []
        out.reserveCapacity((frames - 1) * oh * ow)
        for f in 0..<frames {
            try request.host.checkCancelled()
            let picture = Image(
                width: w, height: h, channels: 3,
                pixels: (0..<(h * w)).flatMap { p in (0..<3).map { c in UInt8(max(0, min(255, (values[f * plane + c * h * w + p] * 255).rounded()))) } })
            let input = try preprocess(picture, size: model.config.imageSize)
            let features = GradMode.disabled { trackers[0].features(input) }
            var best = [Float](repeating: 0, count: oh * ow), label = [Int64](repeating: 0, count: oh * ow)
            for (k, part) in parts.enumerated() {
                let state: SAM2FrameState
                do {
                    state = try GradMode.disabled {
                        f == 0
                            ? try trackers[k].addMask(Tensor(shape: [h, w], scalars: labels.map { $0 == part ? Float(1) : 0 }), frame: 0, features: features)
                            : try trackers[k].track(frame: f, features: features)
                    }
                } catch let e as SAM2Error { throw MenagerieError.invalidArgument("\(e)") }
                guard f > 0 else { continue }
                let logits = try trackers[k].videoResolution(state.masks, height: oh, width: ow).scalars(as: Float.self)
                for p in logits.indices where logits[p] > 0 && logits[p] > best[p] {
                    best[p] = logits[p]
                    label[p] = Int64(part)
                }
            }
            if f > 0 { out += label }
            request.host.progress(f + 1, of: frames, "sam2 frames")
        }
        return Response(
            result: ["frames": .number(Double(frames)), "traits": .array(parts.map { .number(Double($0)) })],
            tensors: [("masks", Tensor(shape: [frames - 1, oh, ow], scalars: out))])
    }
}

/// A frame as sam2's `load_video_frames` prepares it: RGB, resized to size² with Pillow's default
/// (bicubic), /255, ImageNet mean and std — [1, 3, S, S].
func preprocess(_ image: Image, size s: Int) throws -> Tensor {
    let rgb = image.channels == 3 ? image : try image.rgb()
    let resized = rgb.resized(width: s, height: s, filter: .bicubic)
    let mean: [Float] = [0.485, 0.456, 0.406], std: [Float] = [0.229, 0.224, 0.225]
    var out = [Float](repeating: 0, count: 3 * s * s)
    for p in 0..<(s * s) {
        for c in 0..<3 { out[c * s * s + p] = (Float(Double(resized.pixels[p * 3 + c]) / 255) - mean[c]) / std[c] }
    }
    return Tensor(shape: [1, 3, s, s], scalars: out)
}

/// The plugin (the entry symbol is in `Entry/`).
public enum SAM2Plugin: Plugin {
    public static let name = "sam2"
    public static let version = "0.1.0"
    public static let summary =
        "SAM 2 / SAM 2.1 in Swift (Hiera image encoder, prompt encoder, mask decoder, memory encoder and attention): the video predictor as a tracker"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let paper: Paper? = Paper(title: "SAM 2: Segment Anything in Images and Videos", url: "https://arxiv.org/abs/2408.00714")
    public static let components: [any Component.Type] = [SAM2TrackerComponent.self]
}
