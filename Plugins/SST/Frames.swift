import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

/// A label mask read from a file: one integer label per pixel (0 background, 1… traits).
struct LabelMask {
    var width: Int
    var height: Int
    var labels: [Int]

    /// Reads an 8- or 16-bit single-channel PNG or TIFF (a three-channel file whose channels are
    /// equal is accepted as gray).
    static func read(_ path: String) throws -> LabelMask {
        let pixels: Tensor
        do {
            switch (path as NSString).pathExtension.lowercased() {
            case "png": pixels = try PNG.readSamples(path: path).pixels
            case "tif", "tiff": pixels = try TIFF.read(path: path).pixels
            default: throw MenagerieError.invalidArgument("mask '\(path)': a label mask is a PNG or TIFF file")
            }
        } catch let e as FormatError { throw MenagerieError.invalidArgument("mask '\(path)': \(e)") }
        let (h, w) = (pixels.shape[0], pixels.shape[1])
        var values = try pixels.integers()
        if pixels.rank == 3 {
            let c = pixels.shape[2]
            guard c == 1 || (0..<(h * w)).allSatisfy({ p in (1..<min(c, 3)).allSatisfy { values[p * c + $0] == values[p * c] } }) else {
                throw MenagerieError.invalidArgument(
                    "mask '\(path)' is a colour image: a label mask has one channel, the label of each pixel (0 background, 1, 2, … traits)")
            }
            values = (0..<(h * w)).map { values[$0 * c] }
        }
        return LabelMask(width: w, height: h, labels: values)
    }

    /// Nearest-neighbour resampling (pixel centres), labels stay labels.
    func resized(width ow: Int, height oh: Int) -> LabelMask {
        if ow == width && oh == height { return self }
        var out = [Int](repeating: 0, count: ow * oh)
        for y in 0..<oh {
            let sy = min(height - 1, Int((Double(y) + 0.5) * Double(height) / Double(oh)))
            for x in 0..<ow { out[y * ow + x] = labels[sy * width + min(width - 1, Int((Double(x) + 0.5) * Double(width) / Double(ow)))] }
        }
        return LabelMask(width: ow, height: oh, labels: out)
    }

    /// Writes an 8-bit label image (16-bit when a label exceeds 255) as PNG or TIFF, atomically.
    func write(to path: String, format: String) throws {
        let wide = (labels.max() ?? 0) > 255
        let tensor = wide ? try Tensor(labels.map { Int32($0) }, shape: [height, width]) : try Tensor(labels.map { UInt8($0) }, shape: [height, width])
        if format == "tiff" { try TIFF.write(tensor, to: path) } else { try PNG.writeSamples(tensor, to: path) }
    }
}

/// Patch features of a pseudo-video, every frame on the same grid: frames[f] is [rows·cols·dim].
struct PatchFeatures {
    var rows: Int
    var cols: Int
    var dim: Int
    var frames: [[Float]]
    var patches: Int { rows * cols }

    /// All frames as one tensor [F, rows, cols, dim] (the tracker's input).
    func tensor(order: [Int]) throws -> Tensor {
        try Tensor(order.flatMap { frames[$0] }, shape: [order.count, rows, cols, dim])
    }

    /// Mean of the frame's unit-normalised patch features, unit-normalised (a global descriptor).
    func descriptor(_ f: Int) -> [Float] {
        let unit = SpaceTimeMemory.normalized(frames[f], dim: dim)
        var mean = [Float](repeating: 0, count: dim)
        for p in 0..<patches { for k in 0..<dim { mean[k] += unit[p * dim + k] } }
        let norm = max(mean.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
        return mean.map { $0 / norm }
    }
}

/// Where the patch features come from: `pixels` (each patch's raw RGB values, no network), or a
/// backbone component whose `embed` takes [0, 1] `pixels` and returns `tokens` [N, G, G, D]
/// (`vit-classifier`: the embedded ViT or any timm ViT folder such as DINO/DINOv2 via
/// `classifier=`; `bioclip2`: an open_clip model via `model=`).
struct FeatureSource {
    var backbone: String
    var options: [String: JSONValue]
    /// Images are resized (bilinear, aspect ratio not kept, as SST's resize to a square) to size × size.
    var size: Int
    /// Patch side of the `pixels` features.
    var patch: Int
    var batch = 8

    static let pixelsID = "pixels"

    func validate() throws {
        guard size > 0 else { throw MenagerieError.invalidArgument("size must be positive, got \(size)") }
        if backbone == Self.pixelsID {
            guard patch > 0, size % patch == 0 else {
                throw MenagerieError.invalidArgument("with backbone=pixels, size (\(size)) must be a multiple of patch (\(patch))")
            }
        }
    }

    /// [0, 1] RGB planes [3, size, size] of an image.
    func pixels(_ image: Image) throws -> [Float] {
        let rgb = try image.rgb()
        return rgb.resizedFloatCHW(width: size, height: size, filter: .bilinear)
    }

    func extract(_ images: [Image], host: PluginHost) throws -> PatchFeatures {
        try validate()
        let plane = size * size
        if backbone == Self.pixelsID {
            let g = size / patch, dim = 3 * patch * patch
            let frames = try images.map { image -> [Float] in
                let px = try pixels(image)
                var out = [Float](repeating: 0, count: g * g * dim)
                for i in 0..<g {
                    for j in 0..<g {
                        for c in 0..<3 {
                            for dy in 0..<patch {
                                for dx in 0..<patch {
                                    out[(i * g + j) * dim + (c * patch + dy) * patch + dx] = px[c * plane + (i * patch + dy) * size + j * patch + dx]
                                }
                            }
                        }
                    }
                }
                return out
            }
            return PatchFeatures(rows: g, cols: g, dim: dim, frames: frames)
        }
        let component = try BackboneProxy(host, id: backbone)
        var frames: [[Float]] = []
        var grid: (Int, Int, Int)?
        for start in stride(from: 0, to: images.count, by: batch) {
            try host.checkCancelled()
            let chunk = Array(images[start..<min(images.count, start + batch)])
            let px = try Tensor(chunk.flatMap { try pixels($0) }, shape: [chunk.count, 3, size, size])
            let r = try component.embed(options: .object(options), inputs: [("pixels", px)])
            guard let tokens = r.tensors["tokens"], tokens.rank == 4, tokens.dtype == .float32, tokens.shape[0] == chunk.count else {
                throw MenagerieError.invalidArgument(
                    "backbone '\(backbone)' returned no patch tokens [N, G, G, D] from embed with 'pixels': "
                        + "use a backbone that does (vit-classifier, bioclip2) or backbone=pixels")
            }
            let t = try tokens.scalars(as: Float.self), per = tokens.count / chunk.count
            grid = (tokens.shape[1], tokens.shape[2], tokens.shape[3])
            for i in 0..<chunk.count { frames.append(Array(t[(i * per)..<((i + 1) * per)])) }
        }
        guard let (rows, cols, dim) = grid else { return PatchFeatures(rows: 0, cols: 0, dim: 0, frames: []) }
        return PatchFeatures(rows: rows, cols: cols, dim: dim, frames: frames)
    }
}

/// Calls a tracker component (`stm-tracker`, or one that replaces it) on a pseudo-video.
struct TrackerCall {
    var tracker: String
    var options: [String: JSONValue]
    /// `tracker_options`: passed to the tracker as they are (e.g. model=DIR for sam2-tracker).
    var extra: [String: JSONValue] = [:]

    /// Masks [size × size] of frames 1… of `order` (order[0] is the labelled frame). Options the tracker
    /// does not declare are not sent (a tracker other than stm-tracker has its own); a tracker whose
    /// `segment` declares an `images` input (sam2-tracker) also gets the frames, stretched to size², with
    /// the labels resized to match (nearest).
    func run(_ features: PatchFeatures, order: [Int], labels: LabelMask, size: Int, host: PluginHost, images: [Image]? = nil) throws -> [[Int]] {
        let component = try SegmenterProxy(host, id: tracker)
        let declared = component.component.info?.options["properties"]?.objectValue ?? [:]
        var o = options.filter { declared[$0.key] != nil }
        for key in ["height", "width"] where declared[key] != nil { o[key] = .number(Double(size)) }
        for (k, v) in extra { o[k] = v }
        let wantsImages = component.component.info?.operations.first { $0.name == "segment" }?.inputs.contains { $0.name == "images" } ?? false
        var inputs: [(name: String, tensor: Tensor)] = [("features", try features.tensor(order: order))]
        if wantsImages {
            guard let images else {
                throw MenagerieError.invalidArgument(
                    "tracker '\(tracker)' tracks the frames themselves, and this call passed none")
            }
            var pixels: [Float] = []
            pixels.reserveCapacity(order.count * 3 * size * size)
            for f in order {
                let rgb = images[f].channels == 3 ? images[f] : try images[f].rgb()
                let resized = rgb.width == size && rgb.height == size ? rgb : rgb.resized(width: size, height: size, filter: .bilinear)
                for c in 0..<3 { for p in 0..<(size * size) { pixels.append(Float(resized.pixels[p * 3 + c]) / 255) } }
            }
            inputs.append(("images", try Tensor(pixels, shape: [order.count, 3, size, size])))
            let resized = labels.width == size && labels.height == size ? labels : labels.resized(width: size, height: size)
            inputs.append(("labels", try Tensor(resized.labels.map { Int64($0) }, shape: [size, size])))
        } else {
            inputs.append(("labels", try Tensor(labels.labels.map { Int64($0) }, shape: [labels.height, labels.width])))
        }
        let r = try component.segment(options: .object(o), inputs: inputs)
        guard let masks = r.tensors["masks"], masks.rank == 3, masks.shape == [order.count - 1, size, size] else {
            throw MenagerieError.failed("tracker '\(tracker)' returned no masks [\(order.count - 1), \(size), \(size)]")
        }
        let m = try masks.integers(), plane = size * size
        // Another plugin's labels: checked before they index anything.
        let limit = max(labels.labels.max() ?? 0, options["parts"]?.intValue ?? 0)
        if let bad = m.first(where: { $0 < 0 || $0 > limit }) {
            throw MenagerieError.failed("tracker '\(tracker)' returned label \(bad), outside the support's 0…\(limit)")
        }
        return (0..<(order.count - 1)).map { Array(m[($0 * plane)..<(($0 + 1) * plane)]) }
    }
}

/// Intersection over union of label `k` in two masks of the same size (NaN when absent from both).
func labelIoU(_ a: [Int], _ b: [Int], label k: Int) -> Double {
    var inter = 0, union = 0
    for i in a.indices {
        let (x, y) = (a[i] == k, b[i] == k)
        if x && y { inter += 1 }
        if x || y { union += 1 }
    }
    return union == 0 ? .nan : Double(inter) / Double(union)
}
