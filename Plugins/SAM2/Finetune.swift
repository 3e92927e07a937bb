import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// The last model with tuned weights applied (by folder, tuned file and its identity), built fresh:
/// the untuned cached model is never changed. One entry only: a study tunes a model per species, and
/// a released SAM 2 is large.
// @unchecked: `entry` is touched only under `lock`; the model is shared read-only.
final class LastTunedModel: @unchecked Sendable {
    private var entry: (key: String, model: SAM2Model)?
    private let lock = NSLock()

    func value(_ key: String, build: () throws -> SAM2Model) throws -> SAM2Model {
        lock.lock()
        if let e = entry, e.key == key {
            lock.unlock()
            return e.model
        }
        lock.unlock()
        let model = try build()
        lock.lock()
        entry = (key, model)
        lock.unlock()
        return model
    }
}

let tunedModel = LastTunedModel()

/// The weights file of a model folder already checked by `loadModel`.
func weightsFile(_ dir: String) -> String? {
    ["model.pt", "model.safetensors"].map { dir + "/" + $0 }.first { FileManager.default.fileExists(atPath: $0) }
}

/// A model of its own (not the cached one: fine-tuning changes it), from the folder `loadModel` checks.
func freshModel(_ folder: String) throws -> SAM2Model {
    _ = try loadModel(folder) // checks the folder and its files, names what is wrong
    let dir = (folder as NSString).expandingTildeInPath
    guard let weights = weightsFile(dir) else { throw MenagerieError.invalidArgument("model: '\(folder)' has no model.pt or model.safetensors") }
    do { return try SAM2Model(config: try SAM2Config.read(dir + "/config.yaml"), checkpoint: try Checkpoint(path: weights)) } catch let e as FormatError {
        throw MenagerieError.invalidArgument("\(e)")
    }
}

/// The model of `folder`, with the tuned parameters of `tuned` (a safetensors file written by
/// `finetune`) when given.
func loadModel(_ folder: String, tuned: String) throws -> SAM2Model {
    guard !tuned.isEmpty else { return try loadModel(folder) }
    let path = (tuned as NSString).expandingTildeInPath
    guard FileManager.default.fileExists(atPath: path) else {
        throw MenagerieError.invalidArgument("tuned: '\(tuned)' does not exist (the tuned.safetensors that `sam2-tracker finetune` writes)")
    }
    let dir = (folder as NSString).expandingTildeInPath
    let attributes = try? FileManager.default.attributesOfItem(atPath: path)
    let identity = "\((attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0) \((attributes?[.size] as? Int) ?? 0)"
    return try tunedModel.value(dir + "\u{0}" + path + "\u{0}" + identity) {
        let model = try freshModel(folder)
        do { try SAM2Tuning.apply(try Checkpoint(path: path), to: model) } catch let e as SAM2Error {
            throw MenagerieError.invalidArgument("\(e)")
        } catch let e as FormatError { throw MenagerieError.invalidArgument("tuned: \(e)") }
        return model
    }
}

extension SAM2TrackerComponent {
    /// The tuner from the options, checked.
    func tuner(_ o: Options) throws -> SAM2CycleTuner {
        var t = SAM2CycleTuner()
        t.groups = o.tune.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for g in t.groups where !SAM2Tuning.groups.contains(g) && g != "all" {
            throw MenagerieError.invalidArgument("tune: unknown parameter group '\(g)'; choose from \(SAM2Tuning.groups.joined(separator: ", ")) or all")
        }
        guard !t.groups.isEmpty else { throw MenagerieError.invalidArgument("tune: name at least one of \(SAM2Tuning.groups.joined(separator: ", ")) or all") }
        t.soft = o.soft
        t.loraRank = o.lora_rank
        guard o.lr > 0, o.lr.isFinite else { throw MenagerieError.invalidArgument("lr must be > 0, got \(o.lr)") }
        t.steps = o.steps
        t.learningRate = Float(o.lr)
        t.weightDecay = Float(o.weight_decay)
        t.maxGradientNorm = Float(o.max_grad_norm)
        t.seed = UInt64(bitPattern: Int64(o.seed))
        return t
    }

    /// `finetune`: one-shot cycle-consistent fine-tuning (NN `SAM2CycleTuner`). With files: support=
    /// IMAGE, mask=PNG (object= as in segment), queries=DIR of unlabelled frames (read one per step)
    /// → tuned.safetensors, finetune.csv. With tensors (SST through the host): images [F, 3, H, W]
    /// (frame 0 the support, the rest unlabelled) and labels [H, W] (one object per trait) → the tuned
    /// parameters as tensors under their checkpoint names, and `losses`.
    func finetune(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.model.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' finetune needs --set model=DIR (config.yaml + model.pt)") }
        let tuner = try tuner(o)
        let model = try freshModel(o.model)
        let s = model.config.imageSize
        let support: Tensor, masks: [Tensor], count: Int, query: (Int) throws -> Tensor
        let tensorMode = request.inputs["images"] != nil
        if tensorMode {
            let images = try request.inputs.require("images", dtypes: [.float32], rank: 4)
            let labelsTensor = try request.inputs.require("labels", dtypes: [.uint8, .int32, .int64], rank: 2)
            let (frames, h, w) = (images.shape[0], images.shape[2], images.shape[3])
            guard frames >= 2, images.shape[1] == 3 else {
                throw MenagerieError.invalidArgument("input 'images' must be [F ≥ 2, 3, H, W] (the support, then unlabelled frames), got \(images.shape)")
            }
            guard labelsTensor.shape == [h, w] else {
                throw MenagerieError.invalidArgument("input 'labels' is \(labelsTensor.shape); the frames are \(h)×\(w): they must match")
            }
            let labels = try labelsTensor.integers()
            let parts = Array(Set(labels.filter { $0 > 0 })).sorted()
            guard !parts.isEmpty else { throw MenagerieError.invalidArgument("input 'labels' holds no trait (all background)") }
            let values = try images.scalars(as: Float.self), plane = 3 * h * w
            func frame(_ f: Int) throws -> Tensor {
                let picture = Image(
                    width: w, height: h, channels: 3,
                    pixels: (0..<(h * w)).flatMap { p in (0..<3).map { c in UInt8(max(0, min(255, (values[f * plane + c * h * w + p] * 255).rounded()))) } })
                return try preprocess(picture, size: s)
            }
            support = try frame(0)
            masks = try parts.map { part in try SAM2Tuning.promptMask(Tensor(shape: [h, w], scalars: labels.map { $0 == part ? Float(1) : 0 }), size: s) }
            count = frames - 1
            query = { try frame($0 + 1) }
        } else {
            guard !o.support.isEmpty, !o.mask.isEmpty, !o.queries.isEmpty else {
                throw MenagerieError.invalidArgument(
                    "'\(Self.id)' finetune needs --set support=IMAGE --set mask=PNG (its mask) --set queries=DIR (unlabelled frames), or tensors images + labels"
                )
            }
            let image: Image, maskImage: Image, files: [String]
            do {
                image = try ImageFiles.read((o.support as NSString).expandingTildeInPath)
                maskImage = try ImageFiles.read((o.mask as NSString).expandingTildeInPath)
                files = try ImageFiles.list((o.queries as NSString).expandingTildeInPath, option: "queries")
            } catch { throw MenagerieError.invalidArgument("\(error)") }
            guard maskImage.width == image.width, maskImage.height == image.height else {
                throw MenagerieError.invalidArgument(
                    "mask '\(o.mask)' is \(maskImage.width)×\(maskImage.height); the support '\(o.support)' is \(image.width)×\(image.height): they must match")
            }
            guard !files.isEmpty else { throw MenagerieError.invalidArgument("queries: '\(o.queries)' holds no PNG, TIFF or JPEG file") }
            let ch = maskImage.channels
            let mask = (0..<(image.width * image.height)).map { p -> Float in
                let v = Int(maskImage.pixels[p * ch])
                return (o.object == 0 ? v != 0 : v == o.object) ? 1 : 0
            }
            guard mask.contains(1) else {
                throw MenagerieError.invalidArgument("mask '\(o.mask)' is empty\(o.object == 0 ? "" : " for object \(o.object)"): nothing to fine-tune on")
            }
            support = try preprocess(image, size: s)
            masks = [try SAM2Tuning.promptMask(Tensor(shape: [image.height, image.width], scalars: mask), size: s)]
            count = files.count
            query = { i in
                do { return try preprocess(try ImageFiles.read(files[i]), size: s) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
            }
        }
        let began = Date()
        let losses: [Float]
        do {
            losses = try tuner.run(
                model: model, support: support, masks: masks, queryCount: count, query: query,
                progress: { step, loss in
                    try request.host.checkCancelled()
                    request.host.record(step: step, ["cycle_loss": Double(loss)])
                    request.host.progress(step, of: tuner.steps, "sam2 cycle fine-tuning")
                })
        } catch let e as SAM2Error { throw MenagerieError.invalidArgument("\(e)") }
        let seconds = Date().timeIntervalSince(began)
        let tuned = try SAM2Tuning.parameters(model, groups: tuner.groups)
        var result: [String: JSONValue] = [
            "steps": .number(Double(tuner.steps)), "objects": .number(Double(masks.count)), "unlabelled": .number(Double(count)),
            "tune": .array(SAM2Tuning.expanded(tuner.groups).map { .string($0) }), "soft": .bool(o.soft), "lora_rank": .number(Double(o.lora_rank)),
            "tuned_parameters": .number(Double(tuned.reduce(0) { $0 + $1.1.value.count })),
            "seconds": .number(seconds), "seconds_per_step": .number(seconds / Double(max(tuner.steps, 1))),
        ]
        if let first = losses.first, let last = losses.last { result["cycle_loss"] = .array([.number(Double(first)), .number(Double(last))]) }
        let lossTensor = Tensor(shape: [losses.count], scalars: losses)
        if tensorMode {
            return Response(result: .object(result), tensors: [("losses", lossTensor)] + tuned.map { (name: $0.0, tensor: $0.1.value) })
        }
        let dir = request.host.scratchDirectory
        let metadata = [
            "steps": "\(tuner.steps)", "lr": "\(o.lr)", "weight_decay": "\(o.weight_decay)", "seed": "\(o.seed)", "model": o.model,
            "lora_rank": "\(o.lora_rank)",
        ]
        do { try SAM2Tuning.save(model, groups: tuner.groups, to: dir + "/tuned.safetensors", metadata: metadata) } catch let e as SAM2Error {
            throw MenagerieError.invalidArgument("\(e)")
        }
        try AtomicFile.write(
            "step,cycle_loss\n" + losses.enumerated().map { "\($0.offset + 1),\(String(format: "%.6f", $0.element))\n" }.joined(), to: dir + "/finetune.csv")
        return Response(result: .object(result), tensors: [("losses", lossTensor)], artifacts: ["tuned.safetensors", "finetune.csv"])
    }
}
