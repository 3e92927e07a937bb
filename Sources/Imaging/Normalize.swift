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
