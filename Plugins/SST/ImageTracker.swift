import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// SST with a tracker that tracks the frames themselves (sam2-tracker): its one-shot fine-tuning is
/// the tracker's own `finetune` operation (SAM 2 tuned by the cycle-consistent loss), reached
/// through the host; the tuned parameters come back as tensors, are written to this call's scratch
/// folder (`sam2_tuned.safetensors`, also an artifact) and handed to the tracker as `tuned=`.
extension SSTComponent {
    /// Whether the tracker's `segment` takes the frames (`images`) rather than patch features.
    func tracksImages(_ tracker: String, host: PluginHost) throws -> Bool {
        let component = try SegmenterProxy(host, id: tracker)
        return component.component.info?.operations.first { $0.name == "segment" }?.inputs.contains { $0.name == "images" } ?? false
    }

    /// Frames stretched to size² (bilinear) as [F, 3, size, size] in [0, 1], as `TrackerCall` sends them.
    static func frameTensor(_ images: [Image], size: Int) throws -> Tensor {
        var pixels: [Float] = []
        pixels.reserveCapacity(images.count * 3 * size * size)
        for image in images {
            let rgb = image.channels == 3 ? image : try image.rgb()
            let resized = rgb.width == size && rgb.height == size ? rgb : rgb.resized(width: size, height: size, filter: .bilinear)
            for c in 0..<3 { for p in 0..<(size * size) { pixels.append(Float(resized.pixels[p * 3 + c]) / 255) } }
        }
        return try Tensor(pixels, shape: [images.count, 3, size, size])
    }

    /// Fine-tunes the tracker on the support (its mask) and `unlabelled` frames by its `finetune`
    /// operation (steps = finetune_steps, seed, soft = finetune_soft; the rest from tracker_options:
    /// tune, lr, weight_decay, max_grad_norm), writes the tuned parameters to `file` in the scratch folder and
    /// points `call` at them. Returns the loss per step.
    func tuneTracker(
        _ call: inout TrackerCall, support: Image, mask: LabelMask, unlabelled: [Image], o: Options, size: Int, host: PluginHost,
        file: String = "sam2_tuned.safetensors"
    ) throws -> [Float] {
        guard !unlabelled.isEmpty else { throw MenagerieError.invalidArgument("fine-tuning needs unlabelled images (unlabelled= or queries)") }
        let component = try SegmenterProxy(host, id: call.tracker)
        guard component.component.info?.operations.contains(where: { $0.name == "finetune" }) ?? false else {
            throw MenagerieError.unsupported("tracker '\(call.tracker)' has no finetune operation: run it with finetune_steps=0")
        }
        var options = call.extra
        options["steps"] = .number(Double(o.finetune_steps))
        options["seed"] = .number(Double(o.seed))
        if options["soft"] == nil { options["soft"] = .bool(o.finetune_soft) }
        let labels = mask.width == size && mask.height == size ? mask : mask.resized(width: size, height: size)
        let r = try component.component.invoke(
            "finetune", options: .object(options),
            inputs: [
                ("images", try Self.frameTensor([support] + unlabelled, size: size)),
                ("labels", try Tensor(labels.labels.map { Int64($0) }, shape: [size, size])),
            ])
        guard let losses = r.tensors["losses"], losses.rank == 1, losses.shape[0] == o.finetune_steps else {
            throw MenagerieError.failed("tracker '\(call.tracker)' finetune returned no losses [\(o.finetune_steps)]")
        }
        let tuned = r.tensors.filter { $0.key != "losses" }.sorted { $0.key < $1.key }.map { (name: $0.key, tensor: $0.value) }
        guard !tuned.isEmpty else { throw MenagerieError.failed("tracker '\(call.tracker)' finetune returned no tuned parameters") }
        let path = host.scratchDirectory + "/" + file
        try SafeTensors.write(tuned, metadata: ["finetune_steps": "\(o.finetune_steps)", "seed": "\(o.seed)"], to: path)
        call.extra["tuned"] = .string(path)
        return try losses.scalars(as: Float.self)
    }
}
