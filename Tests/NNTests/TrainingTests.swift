import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

@Suite struct TrainingTests {
    @Test func convNet3ShapesFollowTheReference() {
        let mnist = ConvNet(channels: 1, classes: 10, imageSize: 28)
        #expect(mnist.classifier.weight.shape == [10, 2048]) // 28 → pad 3 → 32 → 16 → 8 → 4
        #expect(mnist.convs[0].padding == (3, 3) && mnist.convs[1].padding == (1, 1))
        let cifar = ConvNet(channels: 3, classes: 10)
        #expect(cifar.classifier.weight.shape == [10, 2048])
        #expect(cifar.namedParameters.map(\.0).prefix(4) == ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias"])
        #expect(cifar.namedParameters.map(\.0).contains("features.8.weight"))
        #expect(cifar.parameterCount == 3 * 128 * 9 + 128 + 2 * 128 + 2 * (128 * 128 * 9 + 128 + 2 * 128) + 2048 * 10 + 10)
    }

    /// Two classes (bright top half vs bright bottom half, with noise): SGD drives the loss down and
    /// the training accuracy to 100 %.
    @Test func convNetLearnsASeparableTask() {
        var rng = SeededGenerator(seed: 3)
        let n = 16, s = 8
        var pixels: [Float] = [], labels: [Int] = []
        for i in 0..<n {
            let y = i % 2
            for r in 0..<s { for _ in 0..<s { pixels.append((r < s / 2) == (y == 0) ? 1 + Float(rng.nextNormal()) * 0.3 : Float(rng.nextNormal()) * 0.3) } }
            labels.append(y)
        }
        let x = Variable(try! Tensor(pixels, shape: [n, 1, s, s]))
        let net = ConvNet(channels: 1, classes: 2, width: 8, depth: 2, imageSize: s, seed: 1)
        let opt = SGD(net.parameters, learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4)
        var losses: [Float] = []
        for _ in 0..<30 {
            let loss = crossEntropy(net(x), labels: labels)
            losses.append(loss.scalars[0])
            opt.minimize(loss)
        }
        #expect(losses.last! < losses.first! * 0.3, "loss \(losses.first!) → \(losses.last!)")
        net.isTraining = false
        let logits = GradMode.disabled { net(x) }.scalars
        let correct = (0..<n).filter { (logits[2 * $0 + 1] > logits[2 * $0]) == (labels[$0] == 1) }.count
        #expect(correct == n)
    }

    @Test func sgdFollowsTorchsUpdateRule() {
        let p = Parameter(try! Tensor([Float(1), -2], shape: [2]))
        let opt = SGD([p], learningRate: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov: false)
        let g1: [Float] = [0.5, 1], g2: [Float] = [-1, 2]
        // By hand: d = g + wd·θ ; b1 = d1 ; θ1 = θ0 − lr·b1 ; b2 = 0.9·b1 + d2 ; θ2 = θ1 − lr·b2.
        let theta0: [Float] = [1, -2]
        let d1 = zip(g1, theta0).map { $0 + 0.01 * $1 }
        let theta1 = zip(theta0, d1).map { $0 - 0.1 * $1 }
        let d2 = zip(g2, theta1).map { $0 + 0.01 * $1 }
        let b2 = zip(d1, d2).map { 0.9 * $0 + $1 }
        let theta2 = zip(theta1, b2).map { $0 - 0.1 * $1 }
        opt.step([try! Variable(g1, shape: [2])])
        opt.step([try! Variable(g2, shape: [2])])
        #expect(zip(try! p.value.scalars(as: Float.self), theta2).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test func adamWFirstStepMovesEachCoordinateByTheLearningRate() {
        let p = Parameter(try! Tensor([Float(1), -2, 3], shape: [3]))
        let frozen = Parameter(try! Tensor([Float(5)], shape: [1]), decays: false)
        let opt = AdamW([p, frozen], learningRate: 0.01, weightDecay: 0)
        opt.step([try! Variable([0.3, -7, 0.001], shape: [3]), nil])
        let moved = zip(try! p.value.scalars(as: Float.self), [Float(1), -2, 3]).map { $0 - $1 }
        #expect(abs(moved[0] + 0.01) < 1e-5 && abs(moved[1] - 0.01) < 1e-5 && abs(moved[2] + 0.01) < 2e-4)
        #expect(try! frozen.value.scalars(as: Float.self) == [5])
        // Decoupled weight decay shrinks θ by lr·wd even with a zero gradient.
        let q = Parameter(try! Tensor([Float(2)], shape: [1]))
        AdamW([q], learningRate: 0.1, weightDecay: 0.5).step([try! Variable([0], shape: [1])])
        #expect(abs(try! q.value.scalars(as: Float.self)[0] - 2 * (1 - 0.05)) < 1e-6)
    }

    @Test func schedulesAndClipping() {
        let cos = Schedule.cosine(warmup: 10, floor: 0)
        #expect(abs(cos.rate(base: 1, step: 4, total: 110) - 0.5) < 1e-6)
        #expect(abs(cos.rate(base: 1, step: 10, total: 110) - 1) < 1e-6)
        #expect(abs(cos.rate(base: 1, step: 60, total: 110) - 0.5) < 1e-6)
        #expect(cos.rate(base: 1, step: 110, total: 110) < 1e-6)
        let step = Schedule.step(milestones: [150], gamma: 0.1)
        #expect(step.rate(base: 0.01, step: 149, total: 300) == 0.01 && abs(step.rate(base: 0.01, step: 150, total: 300) - 0.001) < 1e-9)
        var grads: [Variable?] = [try! Variable([3, 0], shape: [2]), nil, try! Variable([4], shape: [1])]
        let norm = clipGradients(&grads, maxNorm: 1)
        #expect(norm == 5)
        #expect(abs(grads[0]!.scalars[0] - 0.6) < 1e-5 && abs(grads[2]!.scalars[0] - 0.8) < 1e-5)
    }

    @Test func batchNormTrainsOnBatchStatisticsAndEvaluatesOnRunningOnes() {
        var rng = SeededGenerator(seed: 9)
        let x = Variable(try! Tensor((0..<(8 * 2 * 3 * 3)).map { i in Float(rng.nextNormal()) * 3 + (i % 18 < 9 ? 5 : -1) }, shape: [8, 2, 3, 3]))
        let bn = BatchNorm(2)
        let y = bn(x).scalars
        for c in 0..<2 {
            let values = (0..<8).flatMap { b in (0..<9).map { y[(b * 2 + c) * 9 + $0] } }
            let mean = values.reduce(0, +) / Float(values.count)
            let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(values.count)
            #expect(abs(mean) < 1e-4 && abs(variance - 1) < 1e-3)
        }
        let running: [Float] = try! bn.runningMean.scalars()
        #expect(running[0] > 0.3 && running[1] < 0) // 0.1 × batch mean after one step
        bn.isTraining = false
        let e = bn(x).scalars
        #expect(abs(e[0] - y[0]) > 0.1) // evaluation uses the running statistics
        #expect(bn.namedBuffers.map(\.0) == ["running_mean", "running_var", "num_batches_tracked"])
    }

    @Test func dropoutScalesInTrainingAndIsIdentityInEvaluation() {
        let x = Variable(Tensor.filled(1, shape: [10000]))
        let d = Dropout(0.25, seed: 4)
        let y = d(x).scalars
        let zeros = y.filter { $0 == 0 }.count
        #expect(abs(Float(zeros) / 10000 - 0.25) < 0.02)
        #expect(abs(y.reduce(0, +) / 10000 - 1) < 0.03)
        d.isTraining = false
        #expect(d(x).scalars == x.scalars)
    }

    @Test func checkpointsRoundTripAndMismatchesAreNamed() throws {
        let dir = TempDir("ckpt")
        let net = ConvNet(channels: 3, classes: 4, width: 8, depth: 2, imageSize: 8, seed: 5)
        try net.save(to: dir.path + "/net.safetensors", metadata: ["model": "convnet"])
        let other = ConvNet(channels: 3, classes: 4, width: 8, depth: 2, imageSize: 8, seed: 6)
        let x = Variable(Tensor.filled(0.5, shape: [1, 3, 8, 8]))
        #expect(GradMode.disabled { other(x).scalars } != GradMode.disabled { net(x).scalars })
        try other.load(from: SafeTensorsCheckpoint(path: dir.path + "/net.safetensors"))
        #expect(GradMode.disabled { other(x).scalars } == GradMode.disabled { net(x).scalars })
        let wrong = ConvNet(channels: 3, classes: 5, width: 8, depth: 2, imageSize: 8)
        do {
            try wrong.load(from: SafeTensorsCheckpoint(path: dir.path + "/net.safetensors"))
            Issue.record("a 4-class checkpoint loaded into a 5-class net")
        } catch {
            #expect("\(error)".contains("classifier.weight: shape [4, 32] in the checkpoint, [5, 32] expected"))
        }
    }

    /// The address of a parameter's elements (to tell an in-place update from a copy).
    private func address(_ p: Parameter) -> UInt { p.value.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) } }

    @Test func optimizerStepsMatchHandValuesAndUpdateInPlace() throws {
        // SGD, momentum 0.9, weight decay 0.1, Nesterov, lr 0.1, θ0 = [1, −2, 0.5, 4], g = [0.5, −1, 2, 0]:
        // d = g + 0.1·θ = [0.6, −1.2, 2.05, 0.4] ; b = d ; d' = d + 0.9·b = 1.9·d ; θ1 = θ0 − 0.1·d'.
        let p = Parameter(Tensor(shape: [4], scalars: [Float(1), -2, 0.5, 4]))
        let before = address(p)
        let snapshot = p.value // a copy a caller kept: must not change
        let sgd = SGD([p], learningRate: 0.1, momentum: 0.9, weightDecay: 0.1, nesterov: true)
        sgd.step([Variable(Tensor(shape: [4], scalars: [Float(0.5), -1, 2, 0]))])
        let theta1: [Float] = [0.886, -1.772, 0.1105, 3.924]
        #expect(zip(try p.value.scalars(as: Float.self), theta1).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(try snapshot.scalars(as: Float.self) == [1, -2, 0.5, 4])
        // The snapshot shared the storage, so the first step wrote a fresh buffer; the second,
        // with nothing else holding it, writes in place.
        let afterFirst = address(p)
        #expect(afterFirst != before)
        sgd.step([Variable(Tensor(shape: [4], scalars: [Float(0), 0, 0, 0]))])
        #expect(address(p) == afterFirst)

        // AdamW, lr 0.1, no decay, the same gradient twice: m̂ = g and v̂ = g² after each step (bias
        // correction), so each coordinate moves by lr against the sign of its gradient.
        let q = Parameter(Tensor(shape: [2], scalars: [Float(1), -2]))
        let adam = AdamW([q], learningRate: 0.1, weightDecay: 0)
        let start = address(q)
        let g = Tensor(shape: [2], scalars: [Float(0.5), -0.25])
        adam.step([Variable(g)])
        #expect(zip(try q.value.scalars(as: Float.self), [Float(0.9), -1.9]).allSatisfy { abs($0 - $1) < 1e-6 })
        adam.step([Variable(g)])
        #expect(zip(try q.value.scalars(as: Float.self), [Float(0.8), -1.8]).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(address(q) == start) // owned and unshared: updated in place
    }

    @Test func aMemoryMappedCheckpointIsCopiedOnceAndNeverWrittenThrough() throws {
        let dir = TempDir("mapped")
        let path = dir.path + "/linear.safetensors"
        var rng = SeededGenerator(seed: 3)
        try Linear(3, 2, rng: &rng).save(to: path)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        var rng2 = SeededGenerator(seed: 4)
        let layer = Linear(3, 2, rng: &rng2)
        try layer.load(from: SafeTensorsCheckpoint(path: path))
        #expect(!layer.weight.value.storage.isOwned) // borrowed from the mapping
        let loaded = try layer.weight.value.scalars(as: Float.self)
        let sgd = SGD(layer.parameters, learningRate: 0.5)
        let ones = layer.parameters.map { Variable(Tensor.filled(1, shape: $0.shape)) }
        sgd.step(ones)
        #expect(layer.weight.value.storage.isOwned) // copied on the first update
        #expect(try layer.weight.value.scalars(as: Float.self) == loaded.map { $0 - 0.5 })
        let copied = address(layer.weight)
        sgd.step(ones)
        #expect(address(layer.weight) == copied) // and only once
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == original)
    }
}
