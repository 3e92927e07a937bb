import Tensors

extension Image {
    /// The image as f32 `[1, C, H, W]`: v/255 per channel, then (v − mean[c]) / std[c]
    /// (torchvision `ToTensor` + `Normalize`). Gray images are repeated to `mean.count` channels.
    public func normalizedCHW(mean: [Float], std: [Float]) throws -> Tensor {
        let c = mean.count
        guard c == std.count, c > 0, std.allSatisfy({ $0 != 0 }) else {
            throw TensorError("mean and std must have the same non-zero length and std no zero (got \(mean), \(std))")
        }
        guard channels == c || channels == 1 || (channels == 4 && c == 3) else {
            throw TensorError("a \(channels)-channel image cannot be normalised with \(c) means")
        }
        var out = [Float](repeating: 0, count: c * width * height)
        for y in 0..<height {
            for x in 0..<width {
                for ch in 0..<c {
                    let src = channels == 1 ? 0 : ch
                    let v = Float(pixels[(y * width + x) * channels + src]) / 255
                    out[(ch * height + y) * width + x] = (v - mean[ch]) / std[ch]
                }
            }
        }
        return try Tensor(out, shape: [1, c, height, width])
    }
}

/// [0, 1] pixels [N, C, H, W] to (x − mean[c]) / std[c] (torchvision `Normalize` on a batch).
public func normalizeChannels(_ images: Tensor, mean: [Float], std: [Float]) -> Tensor {
    let channels = images.shape[1], plane = images.shape[2] * images.shape[3]
    precondition(mean.count == channels && std.count == channels, "normalizeChannels: \(channels) channels, \(mean.count) means")
    let x = try! images.scalars(as: Float.self)
    return Tensor.makeUninitialized(images.shape) { o in
        for i in 0..<(x.count / plane) {
            let c = i % channels
            let (m, inv) = (mean[c], 1 / std[c])
            for p in 0..<plane { o[i * plane + p] = (x[i * plane + p] - m) * inv }
        }
    }
}
