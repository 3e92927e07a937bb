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

/// `sam2-tracker`: SAM 2's video predictor as SST's tracker — a mask on the first frame, the later
/// frames tracked from SAM 2's memory, exactly as sam2's `SAM2VideoPredictor.add_new_mask` +
/// `propagate_in_video` (parity: Tests/SAM2Tests). Frames are read, resized and tracked one at a time.
struct SAM2TrackerComponent: Segmenter {
    struct Options: ComponentOptions {
        var model = ""
        var frames = ""
        var mask = ""
        var object = 0
        var masks = true
        static let help = [
            "model": "a SAM 2 folder: config.yaml (sam2 / sam2.1 yaml) and model.pt (the released checkpoint) or model.safetensors",
            "frames": "a folder of PNG/TIFF/JPEG frames (sorted by name; all of one size)",
            "mask": "a PNG mask of the first frame, at its size",
            "object": "the label in the mask that is the object (0: every non-zero pixel)",
            "masks": "also write each frame's binary mask (logits > 0) as a PNG",
        ]
        static let ranges: [String: ClosedRange<Double>] = ["object": 0...65535]
    }

    static let id = "sam2-tracker"
    static let summary = "SAM 2 (Hiera, memory attention) video predictor: a first-frame mask tracked through the frames, as sam2's propagate_in_video"
    static let operations = [
        OperationSpec(
            "segment", summary: "track the first frame's mask through the frames → mask_logits.npy, object_score_logits.npy, masks/",
            outputs: [
                TensorSpec("mask_logits", dtypes: ["f32"], shape: "F×H×W", summary: "per frame, at the video's resolution (frame 0: the prompt's ±10 logits)"),
                TensorSpec("object_score_logits", dtypes: ["f32"], shape: "F", summary: "per frame (NaN for the prompted frame 0)"),
            ]),
        OperationSpec("propagate", summary: "the same as segment (sam2's name)"),
    ]

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        guard operation == "propagate" else { throw MenagerieError.unsupported("'\(Self.id)' has no operation '\(operation)'") }
        return try segment(request)
    }

    func segment(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.model.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' needs --set model=DIR (config.yaml + model.pt)") }
        guard !o.frames.isEmpty, !o.mask.isEmpty else {
            throw MenagerieError.invalidArgument("'\(Self.id)' needs --set frames=DIR and --set mask=PNG (the first frame's mask)")
        }
        let model = try loadModel(o.model)
        let files: [String]
        do { files = try ImageFiles.list((o.frames as NSString).expandingTildeInPath) } catch { throw MenagerieError.invalidArgument("frames: \(error)") }
        guard !files.isEmpty else { throw MenagerieError.invalidArgument("frames: '\(o.frames)' holds no PNG, TIFF or JPEG file") }
        let maskImage: Image
        do { maskImage = try ImageFiles.read((o.mask as NSString).expandingTildeInPath) } catch { throw MenagerieError.invalidArgument("mask: \(error)") }
        let first: Image
        do { first = try ImageFiles.read(files[0]) } catch { throw MenagerieError.invalidArgument("\(error)") }
        let (h, w) = (first.height, first.width)
        guard maskImage.width == w, maskImage.height == h else {
            throw MenagerieError.invalidArgument(
                "mask '\(o.mask)' is \(maskImage.width)×\(maskImage.height); the first frame '\((files[0] as NSString).lastPathComponent)' is \(w)×\(h): they must match"
            )
        }
        let plane = w * h, ch = maskImage.channels
        let mask = (0..<plane).map { p -> Float in
            let v = Int(maskImage.pixels[p * ch])
            return (o.object == 0 ? v != 0 : v == o.object) ? 1 : 0
        }
        guard mask.contains(1) else {
            throw MenagerieError.invalidArgument(
                "mask '\(o.mask)' is empty\(o.object == 0 ? "" : " for object \(o.object)"): SAM 2 needs the object on the first frame")
        }
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
                    i == 0
                        ? try tracker.addMask(Tensor(shape: [h, w], scalars: mask), frame: 0, image: input)
                        : try tracker.track(frame: i, image: input)
                }
            } catch let e as SAM2Error { throw MenagerieError.invalidArgument("\(e)") }
            let frameLogits = try tracker.videoResolution(state.masks, height: h, width: w).scalars(as: Float.self)
            logits += frameLogits
            scores.append(i == 0 ? .nan : state.objectScore)
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
