import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

extension FasterTADComponent {
    /// Trains a detector: AdamW with cosine decay and one warm-up epoch, batches of videos, the
    /// boundary + classification + offset losses; writes `model/`, `curve.csv` and, with
    /// `evaluate`, the evaluation subset's predictions and mAP.
    func train(_ request: Request<Options>) throws -> Response {
        let o = request.options
        // Positivity first: the model's `hidden % heads` and the batching divide by these.
        for (key, value) in [
            ("hidden", o.hidden), ("heads", o.heads), ("roi_channels", o.roi_channels), ("roi_points", o.roi_points),
            ("head_hidden", o.head_hidden),
        ] where value <= 0 {
            throw MenagerieError.invalidArgument("option '\(key)' = \(value) must be positive")
        }
        guard o.epochs > 0, o.batch > 0, o.lr > 0, o.weight_decay >= 0 else {
            throw MenagerieError.invalidArgument("epochs, batch and lr must be > 0 and weight_decay ≥ 0")
        }
        guard (8...4096).contains(o.snippets) else { throw MenagerieError.invalidArgument("snippets must lie in 8…4096, got \(o.snippets)") }
        guard o.fake_per_gt >= 0, o.fake_jitter >= 0, o.random_proposals >= 0, o.rois_per_video > 0, o.boundary_proposals >= 0,
            (0...1).contains(o.positive_iou)
        else {
            throw MenagerieError.invalidArgument(
                "fake_per_gt, fake_jitter, random_proposals, boundary_proposals ≥ 0; rois_per_video > 0; positive_iou in [0, 1]")
        }
        let seed = request.host.seed
        let subsets = o.evaluate ? [o.train_subset, o.subset] : [o.train_subset]
        let data = try dataset(o, subsets: subsets, snippets: o.snippets, classes: nil, host: request.host)
        let train = data.subset(o.train_subset)
        guard !train.isEmpty else { throw MenagerieError.invalidArgument("no video in subset '\(o.train_subset)' of \(data.source)") }
        guard !data.classes.isEmpty else { throw MenagerieError.invalidArgument("the training subset has no annotation") }

        var config = FasterTADConfig(classes: data.classes, input_channels: data.channels)
        config.aux_channels = data.auxChannels
        config.snippets = o.snippets
        config.hidden = o.hidden
        config.heads = o.heads
        config.roi_channels = o.roi_channels
        config.roi_points = o.roi_points
        config.context_points = o.context_points
        config.context = o.context
        config.head_hidden = o.head_hidden
        config.max_duration = o.max_duration
        try config.validate(source: "options")
        let net = FasterTADNet(config, seed: seed)
        var curve = "epoch,loss,boundary,classification,regression,seconds\n"
        let dir = request.host.scratchDirectory
        var artifacts: [String] = []
        let t0 = Date()
        var last = [0.0, 0.0, 0.0, 0.0]
        try fit(net, videos: train, options: o, seed: seed, host: request.host) { epoch, mean in
            last = mean
            curve += String(format: "%d,%.5f,%.5f,%.5f,%.5f,%.2f\n", epoch, mean[0], mean[1], mean[2], mean[3], Date().timeIntervalSince(t0))
            request.host.log(
                .info,
                String(
                    format: "epoch %d/%d: loss %.4f (boundary %.4f, classification %.4f, regression %.4f)",
                    epoch, o.epochs, mean[0], mean[1], mean[2], mean[3]))
            if o.checkpoint_every > 0 && epoch % o.checkpoint_every == 0 && epoch < o.epochs {
                let name = "checkpoints/epoch-\(epoch)"
                try net.save(folder: dir + "/" + name)
                artifacts.append(name)
            }
        }
        let seconds = Date().timeIntervalSince(t0)
        net.isTraining = false
        try net.save(
            folder: dir + "/model", metadata: ["source": data.source, "epochs": "\(o.epochs)"],
            dtype: o.save_dtype == "f16" ? .float16 : .float32)
        try AtomicFile.write(curve, to: dir + "/curve.csv")
        artifacts += ["model", "curve.csv"]
        var result: [String: JSONValue] = [
            "videos": .number(Double(train.count)), "classes": .array(data.classes.map { .string($0) }),
            "parameters": .number(Double(net.parameterCount)), "epochs": .number(Double(o.epochs)), "seconds": .number(seconds),
            "train_videos_per_s": .number(Double(train.count * o.epochs) / max(seconds, 1e-9)),
            "final_loss": .number(last[0]), "source": .string(data.source), "model": "model",
            "aux_channels": .number(Double(data.auxChannels)), "fake_proposals": .bool(o.fake_proposals),
        ]
        if o.evaluate {
            let evalVideos = data.subset(o.subset)
            if !evalVideos.isEmpty {
                let t1 = Date()
                let predictions = try runDetector(net, videos: evalVideos, options: try inference(o), classes: data.classes, host: request.host)
                result["detect_videos_per_s"] = .number(Double(evalVideos.count) / max(Date().timeIntervalSince(t1), 1e-9))
                try AtomicFile.write(ActivityNet.json(predictions), to: dir + "/predictions.json")
                artifacts.append("predictions.json")
                let r = try ActivityNetEvaluation.detection(groundTruth: data.groundTruth, predictions: predictions, subset: o.subset)
                result["average_mAP"] = .number(r.averageMAP)
                result["mAP"] = .array(r.mAP.map { .number($0) })
                result["tiou_thresholds"] = .array(r.thresholds.map { .number($0) })
                artifacts += try writeTimelines(data, predictions: predictions, count: o.timelines, classes: data.classes, dir: dir)
            }
        }
        return Response(result: .object(result), artifacts: artifacts)
    }
}

extension FasterTADComponent {
    /// The training loop: AdamW (cosine decay after one warm-up epoch, gradients clipped at norm 5),
    /// shuffled batches of videos; `epochEnd` gets each epoch's mean losses (total, boundary,
    /// classification, regression).
    func fit(
        _ net: FasterTADNet, videos train: [TADVideo], options o: Options, seed: UInt64, host: PluginHost,
        epochEnd: (Int, [Double]) throws -> Void
    ) throws {
        let optimizer = AdamW(net.parameters, learningRate: Float(o.lr), weightDecay: Float(o.weight_decay))
        var options = TAD.TrainingOptions()
        options.boundaryProposals = o.boundary_proposals
        options.fakePerGroundTruth = o.fake_per_gt
        options.fakeJitter = o.fake_jitter
        options.randomProposals = o.random_proposals
        options.roisPerVideo = o.rois_per_video
        options.positiveIoU = o.positive_iou
        options.fakeProposals = o.fake_proposals
        let stepsPerEpoch = (train.count + o.batch - 1) / o.batch, total = stepsPerEpoch * o.epochs
        var rng = SeededGenerator(seed: seed &+ 17)
        var step = 0
        for epoch in 1...o.epochs {
            var order = Array(train.indices)
            order.shuffle(using: &rng)
            var sums = [0.0, 0.0, 0.0, 0.0]
            for b in 0..<stepsPerEpoch {
                try host.checkCancelled()
                let picked = order[(b * o.batch)..<min(train.count, (b + 1) * o.batch)].map { train[$0] }
                optimizer.learningRate = Schedule.cosine(warmup: stepsPerEpoch, floor: 0).rate(base: Float(o.lr), step: step, total: total)
                let l = TAD.loss(
                    net, videos: picked, options: options, boundaryWeight: Float(o.boundary_weight),
                    regressionWeight: Float(o.regression_weight), rng: &rng)
                var grads = Autograd.gradients(of: l.total, wrt: optimizer.parameters.map(\.variable))
                _ = clipGradients(&grads, maxNorm: 5)
                optimizer.step(grads)
                for (k, v) in [Double(l.total.scalars[0]), Double(l.boundary), Double(l.classification), Double(l.regression)].enumerated() { sums[k] += v }
                step += 1
                host.progress(step, of: total, "train")
            }
            let means = sums.map { $0 / Double(stepsPerEpoch) }
            host.record(epoch: epoch, ["loss": means[0], "boundary_loss": means[1], "classification_loss": means[2], "regression_loss": means[3]])
            try epochEnd(epoch, means)
        }
    }
}
