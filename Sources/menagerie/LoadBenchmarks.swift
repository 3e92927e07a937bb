import ArgumentParser
import Foundation
import Formats
import Tensors

/// Loading a PyTorch checkpoint: open_clip ViT-L/14's state dict (427.6 M float32 parameters,
/// 1.71 GB) written in torch's zip layout, then read back (warm page cache, as a second load of a
/// model is). `scripts/bench-reference.py` times `torch.load(mmap=True, weights_only=True)` on the
/// same shapes under the same names:
/// - `load.pt.open`: the file parsed and every tensor's view known (no tensor data read);
/// - `load.pt.first_tensor`: open, then the first tensor read (its storage's CRC-32 checked; torch: summed);
/// - `load.pt.all_tensors`: open, then every tensor read (every CRC checked; torch: every tensor summed);
/// - `load.pt.peak_rss`: the growth of the resident set while reading every tensor, as a multiple of the file.
extension BenchCommand {
    static func vitL14StateDict() -> [TorchCheckpointWriter.Tensor] {
        var t: [TorchCheckpointWriter.Tensor] = []
        func add(_ name: String, _ shape: [Int]) { t.append(.init(name: name, shape: shape)) }
        func block(_ p: String, _ w: Int) {
            for n in ["ln_1", "ln_2"] { add(p + n + ".weight", [w]); add(p + n + ".bias", [w]) }
            add(p + "attn.in_proj_weight", [3 * w, w]); add(p + "attn.in_proj_bias", [3 * w])
            add(p + "attn.out_proj.weight", [w, w]); add(p + "attn.out_proj.bias", [w])
            add(p + "mlp.c_fc.weight", [4 * w, w]); add(p + "mlp.c_fc.bias", [4 * w])
            add(p + "mlp.c_proj.weight", [w, 4 * w]); add(p + "mlp.c_proj.bias", [w])
        }
        add("positional_embedding", [77, 768]); add("text_projection", [768, 768]); add("logit_scale", [])
        add("visual.class_embedding", [1024]); add("visual.positional_embedding", [257, 1024]); add("visual.proj", [1024, 768])
        add("visual.conv1.weight", [1024, 3, 14, 14])
        for n in ["visual.ln_pre", "visual.ln_post", "ln_final"] {
            let w = n == "ln_final" ? 768 : 1024
            add(n + ".weight", [w]); add(n + ".bias", [w])
        }
        for l in 0..<24 { block("visual.transformer.resblocks.\(l).", 1024) }
        add("token_embedding.weight", [49408, 768])
        for l in 0..<12 { block("transformer.resblocks.\(l).", 768) }
        return t
    }

    func loadBenchmarks(into records: inout [Record]) throws {
        guard wanted("load.pt.open") || wanted("load.pt.first_tensor") || wanted("load.pt.all_tensors") || wanted("load.pt.peak_rss") else { return }
        let path = NSTemporaryDirectory() + "/menagerie-bench-vit-l14-\(getpid()).pt"
        let tensors = BenchCommand.vitL14StateDict()
        try TorchCheckpointWriter.write(tensors, to: path) { i, buffer in
            var x = UInt32(truncatingIfNeeded: i &* 2_654_435_761) | 1
            for k in buffer.indices {
                x ^= x << 13; x ^= x >> 17; x ^= x << 5
                buffer[k] = Float(Int32(bitPattern: x >> 8) - (1 << 23)) * 1e-9
            }
        }
        defer { unlink(path) }
        let fileBytes = Double(try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber ?? 0)
        let reps = max(3, repeats / 4)
        var open: [Double] = [], first: [Double] = [], all: [Double] = [], rss: [Double] = []
        for _ in 0..<reps {
            var t0 = now()
            let f = try TorchFile(path: path)
            guard f.names.count == tensors.count else { throw ValidationError("the written checkpoint reads back with \(f.names.count) tensors, not \(tensors.count)") }
            open.append(now() - t0)
            t0 = now()
            let f2 = try TorchFile(path: path)
            _ = try f2.tensor(f2.names[0])
            first.append(now() - t0)
            let before = PeakMemory.resetAndRead()
            t0 = now()
            let f3 = try TorchFile(path: path)
            var held: [Tensor] = []
            for n in f3.names { held.append(try f3.tensor(n)) }
            all.append(now() - t0)
            rss.append(Double(PeakMemory.read() - before) / fileBytes)
            withExtendedLifetime(held) {}
        }
        for (name, samples) in [("load.pt.open", open), ("load.pt.first_tensor", first), ("load.pt.all_tensors", all)] where wanted(name) {
            var r = record(name, unit: "ms", samples)
            r.ratioTarget = 1.0
            records.append(r)
        }
        if wanted("load.pt.peak_rss") {
            var r = record("load.pt.peak_rss", unit: "× file", rss)
            r.target = 1.1
            records.append(r)
        }
    }
}
