import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// ResNet-18 against torchvision 0.29.2 (Tests/Fixtures/resnet18/make_fixture.py): the state dict's
/// names, shapes and order as torchvision's, and eval-mode logits for the same weights.
@Suite struct ResNetTests {
    struct Model {
        var size: Int
        var entries: [(name: String, shape: [Int], dtype: String)]
        var input: [Float]
        var logits: [Float]
    }

    func fixture() throws -> [String: Model] {
        let data = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/resnet18/expected.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let models = try #require(json["models"] as? [String: [String: Any]])
        return try models.mapValues { m in
            let entries = try #require(m["state_dict"] as? [[String: Any]]).map { e in
                (name: e["name"] as! String, shape: (e["shape"] as! [Int]), dtype: e["dtype"] as! String)
            }
            return Model(
                size: try #require(m["size"] as? Int), entries: entries, input: try #require(m["input"] as? [Double]).map(Float.init),
                logits: try #require(m["logits"] as? [Double]).map(Float.init))
        }
    }

    /// The fixture's weights: value[i] = a + b·sin(0.731·i + 1.37·index + 0.5) in Double, stored as
    /// Float (make_fixture.py's `fill`, same order of operations).
    func fill(index: Int, name: String, shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        let leaf = name.split(separator: ".").last.map(String.init) ?? ""
        if leaf == "num_batches_tracked" { return Tensor(shape: [], scalars: [Int64(0)]) }
        let values: [Float] = (0..<n).map { i in
            let s = sin(0.731 * Double(i) + 1.37 * Double(index) + 0.5)
            let v: Double
            if leaf == "running_var" {
                v = 1.0 + 0.5 * s
            } else if leaf == "running_mean" || leaf == "bias" {
                v = 0.1 * s
            } else if shape.count == 1 {
                v = 1.0 + 0.2 * s
            } else {
                v = (1.7 / Double(shape.dropFirst().reduce(1, *)).squareRoot()) * s
            }
            return Float(v)
        }
        return Tensor(shape: shape, scalars: values)
    }

    @Test func stateDictLayoutAndEvalLogitsMatchTorchvision() throws {
        let dir = TempDir("resnet")
        for (key, model) in try fixture() {
            let stem = try #require(ResNet18.Stem(rawValue: key))
            let net = ResNet18(channels: 3, classes: 10, stem: stem, seed: 1)
            // The same names, shapes and order as torchvision's state dict (parameters, then each
            // BatchNorm's buffers after its parameters in torchvision; compared as sets of name+shape
            // and in order for the parameters).
            let ours = net.stateDict.map { ($0.name, $0.tensor.shape) }
            #expect(ours.count == model.entries.count, "\(key): \(ours.count) tensors, torchvision \(model.entries.count)")
            #expect(
                Set(ours.map { "\($0.0) \($0.1)" }) == Set(model.entries.map { "\($0.name) \($0.shape)" }),
                "\(key): names or shapes differ")
            let torchParameters = model.entries.filter {
                !["running_mean", "running_var", "num_batches_tracked"].contains($0.name.split(separator: ".").last!)
            }
            #expect(net.namedParameters.map(\.0) == torchParameters.map(\.name), "\(key): parameter order")
            // Write the formula weights in torchvision's layout, load them by name, run in eval mode.
            let path = dir.path + "/\(key).safetensors"
            try SafeTensors.write(
                model.entries.enumerated().map { i, e in (name: e.name, tensor: fill(index: i, name: e.name, shape: e.shape)) }, metadata: [:], to: path)
            try net.load(from: try Checkpoint(path: path))
            net.isTraining = false
            let x = Variable(Tensor(shape: [2, 3, model.size, model.size], scalars: model.input))
            let logits: [Float] = GradMode.disabled { net(x) }.scalars
            let scale = model.logits.map { abs($0) }.max() ?? 1
            let worst = zip(logits, model.logits).map { abs($0 - $1) }.max() ?? .infinity
            print("ResNet parity \(key): max |Δ| \(worst), largest logit \(scale)")
            // Tolerance: 1e-4 of the largest logit (float32 accumulation order differs from torch's).
            #expect(logits.count == model.logits.count && worst <= 1e-4 * scale, "\(key): max |Δ| \(worst) for logits up to \(scale)")
        }
    }

    @Test func aCheckpointOfTheOtherStemIsRefusedByName() throws {
        let dir = TempDir("resnet-stem")
        let modified = ResNet18(classes: 10, stem: .small, seed: 2)
        try modified.save(to: dir.path + "/m.safetensors")
        let standard = ResNet18(classes: 10, stem: .imagenet, seed: 3)
        do {
            try standard.load(from: try Checkpoint(path: dir.path + "/m.safetensors"))
            Issue.record("a 3×3-stem checkpoint was loaded into the 7×7 stem")
        } catch {
            #expect("\(error)".contains("conv1.weight") && "\(error)".contains("[64, 3, 3, 3]"), "\(error)")
        }
    }

    /// Training mode: BatchNorm normalises with the batch statistics and updates the running ones;
    /// a few AdamW steps on a fixed batch lower the loss.
    @Test func trainsInTrainingModeAndUpdatesRunningStatistics() throws {
        let net = ResNet18(classes: 3, stem: .small, seed: 4)
        var rng = SeededGenerator(seed: 5)
        let x = Variable(Tensor(shape: [6, 3, 8, 8], scalars: (0..<(6 * 3 * 64)).map { _ in Float(rng.nextNormal()) }))
        let labels = [0, 1, 2, 0, 1, 2]
        let before = try net.bn1.runningMean.scalars(as: Float.self)
        let optimizer = AdamW(net.parameters, learningRate: 1e-3)
        var losses: [Float] = []
        for _ in 0..<5 {
            let loss = crossEntropy(net(x), labels: labels)
            losses.append(loss.scalars[0])
            optimizer.minimize(loss)
        }
        #expect(losses.last! < losses.first!, "\(losses)")
        #expect(try net.bn1.runningMean.scalars(as: Float.self) != before)
        #expect(net.bn1.batchesTracked == 5)
    }
}
