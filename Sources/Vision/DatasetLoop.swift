import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

// The supervised loop over a dataset component that the classifiers and prompt-cam train with.

/// One labelled batch of a dataset component: images [N, C, H, W] in [0, 1] and class indices.
public func labelledBatch(_ data: DatasetOptionsProxy, dataset: String, split: String, start: Int, count: Int, epoch: Int?) throws -> (Tensor, [Int]) {
    var options: [String: JSONValue] = [
        "split": .string(split), "start": .number(Double(start)), "count": .number(Double(count)),
        "shuffle": .bool(epoch != nil),
    ]
    if let epoch { options["epoch"] = .number(Double(epoch)) }
    let b = try data.batch(options: .object(options))
    guard let images = b.tensors["images"], images.rank == 4, let labels = b.tensors["labels"] else {
        throw MenagerieError.invalidArgument("dataset '\(dataset)' batch returned no images [N, C, H, W] / labels")
    }
    // Another plugin's response: one label per image, checked before it indexes anything.
    let y = try labels.integers()
    guard y.count == images.shape[0], y.allSatisfy({ $0 >= 0 }) else {
        throw MenagerieError.invalidArgument(
            "dataset '\(dataset)' batch returned \(images.shape[0]) images with \(y.count) labels "
                + "(one non-negative class index per image is needed)")
    }
    return (images, y)
}

/// The supervised loop the explainers' trainers share: shuffled training batches, cross-entropy of
/// `logits`, one optimizer step per batch at the schedule's rate, cancellation and progress.
/// `endOfEpoch` gets each epoch's mean loss and training accuracy.
public func fitClassifier(
    _ data: DatasetOptionsProxy, dataset: String, trainCount: Int, batch: Int, epochs: Int, baseRate: Float,
    schedule: Schedule, optimizer: any Optimizer, host: PluginHost, logits: (Tensor) -> Variable,
    endOfEpoch: (_ epoch: Int, _ loss: Double, _ accuracy: Double) throws -> Void
) throws {
    let stepsPerEpoch = (trainCount + batch - 1) / batch, total = stepsPerEpoch * epochs
    var step = 0
    for epoch in 0..<epochs {
        var lossSum = 0.0, correct = 0, seen = 0
        for b in 0..<stepsPerEpoch {
            try host.checkCancelled()
            let (images, y) = try labelledBatch(data, dataset: dataset, split: "train", start: b * batch, count: batch, epoch: epoch)
            optimizer.learningRate = schedule.rate(base: baseRate, step: step, total: total)
            let z = logits(images)
            if let bad = y.first(where: { $0 >= z.shape[1] }) {
                throw MenagerieError.invalidArgument("dataset '\(dataset)' returned label \(bad), beyond the \(z.shape[1]) classes it describes")
            }
            let loss = crossEntropy(z, labels: y)
            optimizer.minimize(loss)
            lossSum += Double(loss.scalars[0]) * Double(y.count)
            correct += zip(argmaxRows(z.value), y).filter { $0 == $1 }.count
            seen += y.count
            step += 1
            host.progress(step, of: total, "epoch \(epoch + 1)/\(epochs)")
        }
        let loss = lossSum / Double(max(seen, 1)), accuracy = Double(correct) / Double(max(seen, 1))
        host.record(epoch: epoch + 1, ["train_loss": loss, "train_accuracy": accuracy])
        try endOfEpoch(epoch, loss, accuracy)
    }
}

/// Top-1 accuracy of `logits` (run without recording) over the first `count` images of a split.
public func evaluateAccuracy(_ data: DatasetOptionsProxy, dataset: String, split: String, count: Int, logits: (Tensor) -> Variable) throws -> Double {
    guard count > 0 else { return .nan }
    var correct = 0
    for start in stride(from: 0, to: count, by: 128) {
        let (images, y) = try labelledBatch(data, dataset: dataset, split: split, start: start, count: min(128, count - start), epoch: nil)
        let z = GradMode.disabled { logits(images) }
        correct += zip(argmaxRows(z.value), y).filter { $0 == $1 }.count
    }
    return Double(correct) / Double(count)
}

/// [0, 1] pixels [N, C, H, W] to (x − mean[c]) / std[c] (default: mean = std = 0.5, the embedded
/// classifier's normalisation).
public func normalize(_ images: Tensor, mean: [Float] = [0.5, 0.5, 0.5], std: [Float] = [0.5, 0.5, 0.5]) -> Tensor {
    normalizeChannels(images, mean: mean, std: std)
}

public func argmaxRows(_ t: Tensor) -> [Int] {
    let v = try! t.scalars(as: Float.self), c = t.shape[1]
    return (0..<t.shape[0]).map { i in (0..<c).max { v[i * c + $0] < v[i * c + $1] }! }
}
