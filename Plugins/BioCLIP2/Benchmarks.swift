import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// The benchmarks of this plugin (moved from the CLI, which no longer knows any model): the
/// embedded BioCLIP model's text embedding and `predict` against 10,000 labels through the host,
/// open_clip ViT-L/14's towers and peak memory, and loading its state dict in torch's zip layout.
/// The host runs each family (`bioclip2.*`, `vit_l14.*`, `load.*`) in a fresh isolated child, so
/// the peak-memory rows see only their own family's work.
extension BioCLIPComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "bioclip2.text_embed", unit: "texts/s", summary: "the embedded model's text embeddings of 100 labels × 80 templates (no cache), through the host"),
        BenchmarkSpec(
            "bioclip2.predict_10k_cold", unit: "ms",
            summary: "predict for 100 PNG images against 10,000 labels, first call (computes and caches 800,000 template texts)"),
        BenchmarkSpec("bioclip2.predict_10k_cached", unit: "ms", summary: "the same predict with the text cache"),
        BenchmarkSpec(
            "bioclip2.embed_folder", unit: "images/s",
            summary: "embed over a folder of 512 PNGs (256 px, resized to 64) at batch 32, decoding ahead on a worker thread (prefetch 2)",
            ratioTarget: 1.0),
        BenchmarkSpec("bioclip2.embed_folder_serial", unit: "images/s", summary: "the same with prefetch=0: decode, then forward, in turn"),
        BenchmarkSpec(
            "vit_l14.embed_folder", unit: "images/s", summary: "embed with a random ViT-L/14 open_clip folder over 16 PNGs (256 px) at batch 8",
            ratioTarget: 1.0),
        BenchmarkSpec("vit_l14.image_forward", unit: "ms", summary: "open_clip ViT-L-14 image tower at batch 1 (random weights)", ratioTarget: 0.85),
        BenchmarkSpec("vit_l14.text_forward_batch8", unit: "ms", summary: "open_clip ViT-L-14 text tower at batch 8 × 77 tokens", ratioTarget: 0.85),
        BenchmarkSpec(
            "vit_l14.image_forward_bf16", unit: "ms",
            summary: "the image tower at batch 1 with precision=bf16 (oneDNN bf16 products; absent where bf16 cannot run)"),
        BenchmarkSpec(
            "vit_l14.peak_memory", unit: "× weights", summary: "rise of VmHWM while loading the 1.7 GB checkpoint and running both towers, over its size",
            target: 1.3),
        BenchmarkSpec(
            "load.pt.open", unit: "ms", summary: "open_clip ViT-L/14's state dict (1.71 GB, torch zip layout) parsed, every view known", ratioTarget: 1.0),
        BenchmarkSpec("load.pt.first_tensor", unit: "ms", summary: "open, then the first tensor read (CRC-32 checked)", ratioTarget: 1.0),
        BenchmarkSpec("load.pt.all_tensors", unit: "ms", summary: "open, then every tensor read (every CRC-32 checked)", ratioTarget: 1.0),
        BenchmarkSpec("load.pt.peak_rss", unit: "× file", summary: "growth of the resident set while reading every tensor, over the file size", target: 1.1),
    ]

    func benchmark(_ run: BenchmarkRun) throws {
        try run.bioclipBenchmarks()
        try run.vitL14Benchmarks()
        try run.loadBenchmarks()
    }
}

extension BenchmarkRun {
    func bioclipBenchmarks() throws {
        // BioCLIP 2 with the embedded model: text-embedding throughput under the 80 templates (100
        // labels, no cache), then predict for 100 images against 10,000 custom labels: the first call
        // computes and caches the 800,000 template texts (`bioclip2.predict_10k_cold`, one sample), the
        // next ones read the cache (`bioclip2.predict_10k_cached`).
        if wanted("bioclip2.text_embed") || wanted("bioclip2.predict_10k_cached") || wanted("bioclip2.predict_10k_cold")
            || wanted("bioclip2.embed_folder") || wanted("bioclip2.embed_folder_serial"),
            has("bioclip2")
        {
            let dir = scratch + "/bench-bioclip2"
            try FileManager.default.createDirectory(atPath: dir + "/images", withIntermediateDirectories: true)
            var rng = SeededGenerator(seed: 7)
            for i in 0..<100 {
                let pixels = (0..<(64 * 64 * 3)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                try PNG.write(Image(width: 64, height: 64, channels: 3, pixels: pixels), to: dir + String(format: "/images/%03d.png", i))
            }
            try (0..<100).map { "Genus\($0 / 10) species\($0)" }.joined(separator: "\n").write(
                toFile: dir + "/labels100.txt", atomically: true, encoding: .utf8)
            try (0..<10_000).map { "Genus\($0 / 10) species\($0)" }.joined(separator: "\n").write(
                toFile: dir + "/labels10k.txt", atomically: true, encoding: .utf8)
            if wanted("bioclip2.text_embed") {
                var samples: [Double] = []
                for _ in 0..<2 {
                    let t0 = now()
                    _ = try invoke(
                        "bioclip2", operation: "predict",
                        options: [
                            "images": .string(dir + "/images/000.png"), "cls": .string(dir + "/labels100.txt"),
                            "cache": "none",
                        ])
                    samples.append(8000 / ((now() - t0) / 1000))
                }
                records.append(record("bioclip2.text_embed", unit: "texts/s", samples))
            }
            for (name, depth) in [("bioclip2.embed_folder", 2), ("bioclip2.embed_folder_serial", 0)] where wanted(name) {
                let images = dir + "/folder512"
                if !FileManager.default.fileExists(atPath: images) { try writeBenchImages(512, side: 256, to: images) }
                let options: JSONValue = ["images": .string(images), "batch": 32, "output": "npy", "prefetch": .number(Double(depth))]
                _ = try invoke("bioclip2", operation: "embed", options: options)
                var samples: [Double] = []
                for _ in 0..<max(2, repeats / 4) {
                    let t0 = now()
                    _ = try invoke("bioclip2", operation: "embed", options: options)
                    samples.append(512 / ((now() - t0) / 1000))
                }
                var r = record(name, unit: "images/s", samples)
                if depth > 0 { r.ratioTarget = 1.0 }
                records.append(r)
            }
            if wanted("bioclip2.predict_10k_cached") || wanted("bioclip2.predict_10k_cold") {
                let options: JSONValue = ["images": .string(dir + "/images"), "cls": .string(dir + "/labels10k.txt"), "cache": .string(dir + "/cache")]
                let t0 = now()
                _ = try invoke("bioclip2", operation: "predict", options: options)
                records.append(record("bioclip2.predict_10k_cold", unit: "ms", [now() - t0]))
                var samples: [Double] = []
                for _ in 0..<max(2, repeats / 5) {
                    let t1 = now()
                    _ = try invoke("bioclip2", operation: "predict", options: options)
                    samples.append(now() - t1)
                }
                records.append(record("bioclip2.predict_10k_cached", unit: "ms", samples))
            }
        }
    }

    func vitL14Benchmarks() throws {
        let scratch = NSTemporaryDirectory() + "/menagerie-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        // open_clip ViT-L-14: image tower batch 1, text tower batch 8, and the peak memory of loading
        // the checkpoint and running both, as a multiple of the checkpoint's size.
        if wanted("vit_l14.image_forward") || wanted("vit_l14.text_forward_batch8") || wanted("vit_l14.peak_memory")
            || wanted("vit_l14.image_forward_bf16") || wanted("vit_l14.embed_folder")
        {
            let dir = scratch + "/vit-l14"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data(Self.vitL14Config.utf8).write(to: URL(fileURLWithPath: dir + "/open_clip_config.json"))
            let config = try OpenCLIPConfig.load(path: dir + "/open_clip_config.json")
            try CLIP(config: config, seed: 1).save(to: dir + "/open_clip_model.safetensors")
            BufferPool.shared.drain()
            let weightBytes = Double(
                (try FileManager.default.attributesOfItem(atPath: dir + "/open_clip_model.safetensors")[.size] as? NSNumber)?.intValue ?? 0)
            let before = PeakMemory.resetAndRead()
            let model = try CLIP(folder: dir)
            let image = Tensor.filled(0.5, shape: [1, 3, 224, 224])
            // Eight prompts of random tokens, each ending in the end-of-text token (the largest id).
            var idValues = [Int32](repeating: 1, count: 8 * 77)
            for i in idValues.indices { idValues[i] = i % 77 == 76 ? 49407 : Int32(1 + (i * 7919) % 49000) }
            let ids = try Tensor(idValues, shape: [8, 77])
            let workloads: [(String, () throws -> Void)] = [
                ("vit_l14.image_forward", { _ = try model.encodeImage(image) }),
                ("vit_l14.text_forward_batch8", { _ = try model.encodeText(ids) }),
            ]
            for (name, body) in workloads where wanted(name) || wanted("vit_l14.peak_memory") {
                try body()
                var samples: [Double] = []
                for _ in 0..<max(2, repeats / 4) {
                    let t0 = now()
                    try body()
                    samples.append(now() - t0)
                }
                var r = record(name, unit: "ms", samples)
                r.ratioTarget = 0.85
                if wanted(name) { records.append(r) }
            }
            // bf16 last, outside the peak-memory loop: its rounded weight copies are its own memory.
            if wanted("vit_l14.image_forward_bf16") {
                if let why = GEMM.bf16Unavailable() {
                    notes.append("vit_l14.image_forward_bf16: \(why)")
                } else {
                    try GEMM.withPrecision(.bf16) {
                        _ = try model.encodeImage(image)
                        var samples: [Double] = []
                        for _ in 0..<max(2, repeats / 4) {
                            let t0 = now()
                            _ = try model.encodeImage(image)
                            samples.append(now() - t0)
                        }
                        records.append(record("vit_l14.image_forward_bf16", unit: "ms", samples))
                    }
                }
            }
            if wanted("vit_l14.peak_memory"), weightBytes > 0 {
                let peak = PeakMemory.read() - before
                var r = record("vit_l14.peak_memory", unit: "× weights", [Double(peak) / weightBytes])
                r.target = 1.3
                records.append(r)
            }
            withExtendedLifetime(model) {}
            if wanted("vit_l14.embed_folder") {
                // The plugin's embed over files with the same folder as its model: decode, resize,
                // forward at batch 8 (the reference: open_clip with a DataLoader, one worker).
                let images = scratch + "/vit-l14-images"
                try writeBenchImages(16, side: 256, to: images)
                let options: JSONValue = ["images": .string(images), "model": .string(dir), "batch": 8, "output": "npy"]
                _ = try invoke("bioclip2", operation: "embed", options: options)
                var samples: [Double] = []
                for _ in 0..<max(2, repeats / 4) {
                    let t0 = now()
                    _ = try invoke("bioclip2", operation: "embed", options: options)
                    samples.append(16 / ((now() - t0) / 1000))
                }
                var r = record("vit_l14.embed_folder", unit: "images/s", samples)
                r.ratioTarget = 1.0
                records.append(r)
            }
        }
    }

    /// `count` RGB PNGs of side `side` (a deterministic pattern, `scripts/bench-reference.py`
    /// writes the same pixels): value (x + 2y + 37i + 85c) mod 256 at pixel (x, y) of image i, channel c.
    func writeBenchImages(_ count: Int, side: Int, to dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for i in 0..<count {
            var pixels = [UInt8](repeating: 0, count: side * side * 3)
            for y in 0..<side {
                for x in 0..<side {
                    for c in 0..<3 { pixels[(y * side + x) * 3 + c] = UInt8(truncatingIfNeeded: x + 2 * y + 37 * i + 85 * c) }
                }
            }
            try PNG.write(Image(width: side, height: side, channels: 3, pixels: pixels), to: dir + String(format: "/%04d.png", i))
        }
    }

    /// open_clip's `ViT-L-14.json` model config.
    static let vitL14Config = """
        {"model_cfg": {"embed_dim": 768, "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}}}
        """
}

/// Loading a PyTorch checkpoint: open_clip ViT-L/14's state dict (427.6 M float32 parameters,
/// 1.71 GB) written in torch's zip layout, then read back (warm page cache, as a second load of a
/// model is). `scripts/bench-reference.py` times `torch.load(mmap=True, weights_only=True)` on the
/// same shapes under the same names:
/// - `load.pt.open`: the file parsed and every tensor's view known (no tensor data read);
/// - `load.pt.first_tensor`: open, then the first tensor read (its storage's CRC-32 checked; torch: summed);
/// - `load.pt.all_tensors`: open, then every tensor read (every CRC checked; torch: every tensor summed);
/// - `load.pt.peak_rss`: the growth of the resident set while reading every tensor, as a multiple of the file.
extension BenchmarkRun {
    static func vitL14StateDict() -> [TorchCheckpointWriter.Tensor] {
        var t: [TorchCheckpointWriter.Tensor] = []
        func add(_ name: String, _ shape: [Int]) { t.append(.init(name: name, shape: shape)) }
        func block(_ p: String, _ w: Int) {
            for n in ["ln_1", "ln_2"] {
                add(p + n + ".weight", [w])
                add(p + n + ".bias", [w])
            }
            add(p + "attn.in_proj_weight", [3 * w, w])
            add(p + "attn.in_proj_bias", [3 * w])
            add(p + "attn.out_proj.weight", [w, w])
            add(p + "attn.out_proj.bias", [w])
            add(p + "mlp.c_fc.weight", [4 * w, w])
            add(p + "mlp.c_fc.bias", [4 * w])
            add(p + "mlp.c_proj.weight", [w, 4 * w])
            add(p + "mlp.c_proj.bias", [w])
        }
        add("positional_embedding", [77, 768])
        add("text_projection", [768, 768])
        add("logit_scale", [])
        add("visual.class_embedding", [1024])
        add("visual.positional_embedding", [257, 1024])
        add("visual.proj", [1024, 768])
        add("visual.conv1.weight", [1024, 3, 14, 14])
        for n in ["visual.ln_pre", "visual.ln_post", "ln_final"] {
            let w = n == "ln_final" ? 768 : 1024
            add(n + ".weight", [w])
            add(n + ".bias", [w])
        }
        for l in 0..<24 { block("visual.transformer.resblocks.\(l).", 1024) }
        add("token_embedding.weight", [49408, 768])
        for l in 0..<12 { block("transformer.resblocks.\(l).", 768) }
        return t
    }

    func loadBenchmarks() throws {
        guard wanted("load.pt.open") || wanted("load.pt.first_tensor") || wanted("load.pt.all_tensors") || wanted("load.pt.peak_rss") else { return }
        let path = NSTemporaryDirectory() + "/menagerie-bench-vit-l14-\(getpid()).pt"
        let tensors = BenchmarkRun.vitL14StateDict()
        try TorchCheckpointWriter.write(tensors, to: path) { i, buffer in
            var x = UInt32(truncatingIfNeeded: i &* 2_654_435_761) | 1
            for k in buffer.indices {
                x ^= x << 13
                x ^= x >> 17
                x ^= x << 5
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
            guard f.names.count == tensors.count else {
                throw MenagerieError.failed("the written checkpoint reads back with \(f.names.count) tensors, not \(tensors.count)")
            }
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
