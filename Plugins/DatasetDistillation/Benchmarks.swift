import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// This plugin's benchmarks (moved from the CLI, which no longer knows any model). Dataset distillation at 3×28×28, 10 classes, IPC 10, no augmentation — the shapes of
/// `scripts/bench-reference.py`'s `distill.*`: one DM iteration and one DC outer step through the
/// plugins (`iterations_per_s` of their own loop, data generation excluded), and one evaluation
/// epoch of ConvNet-3 on 100 images.
extension DMComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "distill.dm_iteration", unit: "ms", summary: "one DM iteration at 3×28×28, 10 classes, IPC 10, 256 real images per class (dm's own loop rate)",
            ratioTarget: 1.0)
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.distillationBenchmarks() }
}

extension DCComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "distill.dc_outer_step", unit: "ms", summary: "one DC outer step (per-class gradient matching, second order) at the same shapes",
            ratioTarget: 1.0)
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.distillationBenchmarks() }
}

extension DistilledEvalComponent {
    static let benchmarks = [
        BenchmarkSpec("distill.eval_epoch", unit: "ms", summary: "one protocol-1 training step of ConvNet-3 on 100 distilled 3×28×28 images", ratioTarget: 1.0),
        BenchmarkSpec(
            "convnet3.train_step", unit: "ms", summary: "one SGD step of ConvNet-3 (momentum 0.9, weight decay 5e-4) at batch 256 on 32×32×3",
            ratioTarget: 1.0),
    ]
    func benchmark(_ run: BenchmarkRun) throws {
        try run.distillationBenchmarks()
        try run.convNetBenchmarks()
    }
}

extension BenchmarkRun {
    func distillationBenchmarks() throws {
        let data: JSONValue = [
            "dataset": "cmnist-dd", "dataset_options": ["per_class=300", "test_per_class=10"], "ipc": 10, "batch_real": 256,
            "augment": "none",
        ]
        func perIteration(_ id: String, _ extra: [String: JSONValue], iterations: Int) throws -> [Double] {
            var options = data.objectValue!
            for (k, v) in extra { options[k] = v }
            options["iterations"] = .number(Double(iterations))
            var samples: [Double] = []
            for _ in 0..<2 {
                let r = try invoke(id, operation: "distill", options: .object(options))
                samples.append(1000 / (r.result["iterations_per_s"]?.doubleValue ?? .nan))
            }
            return samples
        }
        if wanted("distill.dm_iteration"), has("dm") {
            var r = record("distill.dm_iteration", unit: "ms", try perIteration("dm", [:], iterations: 3))
            r.ratioTarget = 1.0
            records.append(r)
        }
        if wanted("distill.dc_outer_step"), has("dc") {
            var r = record("distill.dc_outer_step", unit: "ms", try perIteration("dc", ["outer_loop": 1, "inner_loop": 0], iterations: 2))
            r.ratioTarget = 1.0
            records.append(r)
        }
        if wanted("distill.eval_epoch") {
            var rng = SeededGenerator(seed: 4)
            let x = Variable(try Tensor((0..<(100 * 3 * 28 * 28)).map { _ in Float(rng.nextNormal()) }, shape: [100, 3, 28, 28]))
            let labels = (0..<100).map { $0 % 10 }
            let net = ConvNet(channels: 3, classes: 10, imageSize: 28)
            let opt = SGD(net.parameters, learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4)
            opt.minimize(crossEntropy(net(x), labels: labels))
            var samples: [Double] = []
            for _ in 0..<10 {
                let t0 = now()
                opt.minimize(crossEntropy(net(x), labels: labels))
                samples.append(now() - t0)
            }
            var r = record("distill.eval_epoch", unit: "ms", samples)
            r.ratioTarget = 1.0
            records.append(r)
        }
    }

    func convNetBenchmarks() throws {
        // ConvNet-3 training step (forward + backward + SGD) at batch 256 on 32×32 RGB, width 128.
        if wanted("convnet3.train_step") {
            var rng = SeededGenerator(seed: 1)
            let batch = 256
            let x = Variable(try Tensor((0..<(batch * 3 * 32 * 32)).map { _ in Float(rng.nextNormal()) }, shape: [batch, 3, 32, 32]))
            let labels = (0..<batch).map { $0 % 10 }
            let net = ConvNet(channels: 3, classes: 10)
            let opt = SGD(net.parameters, learningRate: 0.01, momentum: 0.9, weightDecay: 5e-4)
            opt.minimize(crossEntropy(net(x), labels: labels)) // warm-up: fills the buffer pool
            var samples: [Double] = []
            for _ in 0..<max(3, repeats / 4) {
                let t0 = now()
                opt.minimize(crossEntropy(net(x), labels: labels))
                samples.append(now() - t0)
            }
            var r = record("convnet3.train_step", unit: "ms", samples)
            r.ratioTarget = 1.0
            records.append(r)
            BufferPool.shared.drain()
        }
    }
}
