import Foundation
import MenagerieKit
import Tensors

/// One video ready for the network: features rescaled to a fixed number of snippets, the ground
/// truth in normalised time [0, 1].
struct TADVideo: Sendable {
    var id: String
    var subset: String
    var duration: Double
    /// T × C (row-major), T = the dataset's snippet count.
    var features: [Float]
    /// T × Ca, or empty.
    var aux: [Float]
    var segments: [(start: Double, end: Double, label: Int)]
}

/// A set of videos with one class list, from an ActivityNet folder or the embedded generator.
struct TADDataset: Sendable {
    var classes: [String]
    var channels: Int
    var auxChannels: Int
    var snippets: Int
    var videos: [TADVideo]
    var groundTruth: ActivityNet.GroundTruth
    /// "synthetic-actions (seed …)" or the folder.
    var source: String

    func subset(_ name: String) -> [TADVideo] { name == "all" ? videos : videos.filter { $0.subset == name } }

    /// The embedded `synthetic-actions` videos.
    static func synthetic(_ config: SyntheticActions.Config, snippets: Int, aux: Bool) -> TADDataset {
        let data = SyntheticActions(config)
        let names = data.classNames
        var videos = [TADVideo?](repeating: nil, count: data.videos.count)
        videos.withUnsafeMutableBufferPointer { out in
            let box = UncheckedBox(out.baseAddress!)
            Parallel.chunks(data.videos.count, grain: 8) { range in
                for i in range {
                    let v = data.videos[i]
                    let f = rescaleSnippets(data.features(i), snippets: v.snippets, channels: config.channels, to: snippets)
                    let a = aux ? rescaleSnippets(data.atomicFeatures(i), snippets: v.snippets, channels: SyntheticActions.atomicChannels, to: snippets) : []
                    box.value[i] = TADVideo(
                        id: v.id, subset: v.subset, duration: v.duration, features: f, aux: a,
                        segments: v.actions.map { ($0.start / v.duration, $0.end / v.duration, $0.label) })
                }
            }
        }
        return TADDataset(
            classes: names, channels: config.channels, auxChannels: aux ? SyntheticActions.atomicChannels : 0,
            snippets: snippets, videos: videos.map { $0! }, groundTruth: data.groundTruth(),
            source: "synthetic-actions (seed \(config.seed))")
    }

    /// An ActivityNet-layout folder: the ground truth JSON, a feature folder (one T × C file per
    /// video) and optionally an auxiliary feature folder. Videos of `subsets` without features are
    /// an error naming them; `classes` (when given, e.g. from a trained model) fixes the label order.
    static func folder(
        groundTruth gtPath: String, features: String, aux: String?, subsets: [String], snippets: Int,
        classes fixed: [String]? = nil
    ) throws -> TADDataset {
        let gt = try ActivityNet.readGroundTruth(gtPath)
        let folder = try FeatureFolder(features)
        let auxFolder = try aux.map { try FeatureFolder($0) }
        let chosen = gt.videos.filter { subsets.contains("all") || subsets.contains($0.subset) }
        guard !chosen.isEmpty else {
            let present = Set(gt.videos.map(\.subset)).sorted()
            throw MenagerieError.invalidArgument(
                "'\(gtPath)' has no video in subset \(subsets.joined(separator: " or ")) (present: \(present.joined(separator: ", ")))")
        }
        var classes = fixed ?? []
        if fixed == nil {
            var seen = Set<String>()
            for v in chosen { for a in v.annotations where seen.insert(a.label).inserted { classes.append(a.label) } }
            classes.sort()
        }
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        let missing = chosen.filter { folder.file(for: $0.id) == nil }.map(\.id)
        guard missing.isEmpty else {
            throw MenagerieError.notFound(
                "\(missing.count) of \(chosen.count) videos have no features in '\(features)' (first: \(missing.prefix(5).joined(separator: ", "))); each needs <id>.npy or <id>.safetensors"
            )
        }
        var channels = -1, auxChannels = 0
        var videos: [TADVideo] = []
        for v in chosen {
            let f = try folder.load(v.id)
            if channels < 0 { channels = f.channels }
            guard f.channels == channels else {
                throw MenagerieError.invalidArgument("features of '\(v.id)' have \(f.channels) channels; earlier videos have \(channels)")
            }
            var a: [Float] = []
            if let auxFolder {
                let x = try auxFolder.load(v.id)
                if auxChannels == 0 { auxChannels = x.channels }
                guard x.channels == auxChannels else {
                    throw MenagerieError.invalidArgument("auxiliary features of '\(v.id)' have \(x.channels) channels; earlier videos have \(auxChannels)")
                }
                a = rescaleSnippets(x.values, snippets: x.snippets, channels: x.channels, to: snippets)
            }
            guard v.duration > 0 else { throw MenagerieError.invalidArgument("video '\(v.id)' in '\(gtPath)' has no positive 'duration'") }
            var segs: [(Double, Double, Int)] = []
            for ann in v.annotations {
                guard let c = index[ann.label] else {
                    throw MenagerieError.invalidArgument("video '\(v.id)' has label '\(ann.label)', which the model does not know (\(classes.count) classes)")
                }
                segs.append((max(0, ann.start / v.duration), min(1, ann.end / v.duration), c))
            }
            videos.append(
                TADVideo(
                    id: v.id, subset: v.subset, duration: v.duration,
                    features: rescaleSnippets(f.values, snippets: f.snippets, channels: f.channels, to: snippets),
                    aux: a, segments: segs))
        }
        return TADDataset(
            classes: classes, channels: channels, auxChannels: auxChannels, snippets: snippets, videos: videos,
            groundTruth: gt, source: gtPath)
    }
}

/// Packs videos into [B, C, T] (and [B, Ca, T]) tensors, the network's layout.
func packFeatures(_ videos: [TADVideo], channels c: Int, auxChannels ca: Int, snippets t: Int) -> (Tensor, Tensor?) {
    let b = videos.count
    let x = Tensor.make([b, c, t]) { o in
        for (k, v) in videos.enumerated() { for i in 0..<t { for j in 0..<c { o[(k * c + j) * t + i] = v.features[i * c + j] } } }
    }
    guard ca > 0 else { return (x, nil) }
    let a = Tensor.make([b, ca, t]) { o in
        for (k, v) in videos.enumerated() { for i in 0..<t { for j in 0..<ca { o[(k * ca + j) * t + i] = v.aux[i * ca + j] } } }
    }
    return (x, a)
}
