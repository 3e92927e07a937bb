import Foundation
import Tensors

/// Snippet-feature videos with planted action segments, deterministic from a seed.
///
/// Every class has three "atomic" prototypes — onset, body, offset — so an action's first and last
/// snippets look different from its middle (boundaries are learnable, as in real footage where an
/// action starts and ends with characteristic motion). Classes come in pairs that share the onset
/// and offset atoms and differ only in the body, so a detector must read the whole segment to
/// name it. A video is background (its own prototype plus a slow random drift) with 1…`maxActions`
/// non-overlapping actions of varied lengths, each instance a jittered copy of its class's atoms
/// with a soft ramp at the boundaries, plus Gaussian noise on every snippet.
public struct SyntheticActions: Sendable {
    public struct Config: Sendable, Equatable {
        public init() {}
        public var seed: UInt64 = 0
        public var classes = 6
        public var channels = 64
        public var minSnippets = 64
        public var maxSnippets = 192
        public var maxActions = 3
        /// Shortest and longest action, as fractions of the video.
        public var minFraction = 0.06
        public var maxFraction = 0.45
        public var noise = 1.4
        public var drift = 0.4
        /// Seconds per snippet (ActivityNet features are commonly 16 frames at ~30 fps ≈ 0.53 s).
        public var secondsPerSnippet = 0.5
        public var trainVideos = 600
        public var validationVideos = 150
    }

    public struct Video: Sendable {
        public var id: String
        public var subset: String
        public var snippets: Int
        public var duration: Double
        /// (start, end) in seconds, class index — in time order.
        public var actions: [(start: Double, end: Double, label: Int)]
    }

    public let config: Config
    /// [class][atom 0 onset, 1 body, 2 offset] → unit vector of `channels`.
    let atoms: [[[Float]]]
    let background: [Float]
    public let videos: [Video]

    public var classNames: [String] { (0..<config.classes).map { Self.className($0) } }

    static func className(_ k: Int) -> String {
        let verbs = [
            "Jumping", "Throwing", "Climbing", "Swimming", "Dancing", "Rowing", "Juggling", "Skating",
            "Surfing", "Boxing", "Cooking", "Painting", "Sawing", "Knitting", "Diving", "Fencing",
        ]
        let pair = k / 2, member = k % 2
        let verb = verbs[pair % verbs.count] + (pair >= verbs.count ? " \(pair / verbs.count + 1)" : "")
        return verb + (member == 0 ? " (slow)" : " (fast)")
    }

    public init(_ config: Config) {
        self.config = config
        var rng = SeededGenerator(seed: config.seed &* 0x9E37_79B9_7F4A_7C15 &+ 0x5A17)
        let c = config.channels
        func unit() -> [Float] {
            var v = (0..<c).map { _ in Float(rng.nextNormal()) }
            let n = sqrt(v.reduce(0) { $0 + $1 * $1 })
            for i in 0..<c { v[i] /= n }
            return v
        }
        background = unit()
        var atoms: [[[Float]]] = []
        var shared: [[Float]] = []
        // Bodies share a common direction (every action looks a little alike), pairs share more.
        let common = unit()
        for k in 0..<config.classes {
            if k % 2 == 0 { shared = [unit(), unit(), unit()] }
            let own = unit()
            var body = (0..<c).map { 0.45 * common[$0] + 0.6 * shared[2][$0] + 0.65 * own[$0] }
            let n = sqrt(body.reduce(0) { $0 + $1 * $1 })
            for i in 0..<c { body[i] /= n }
            atoms.append([shared[0], body, shared[1]])
        }
        self.atoms = atoms
        var videos: [Video] = []
        let total = config.trainVideos + config.validationVideos
        for i in 0..<total {
            let subset = i < config.trainVideos ? "training" : "validation"
            let t = config.minSnippets + Int(rng.next() % UInt64(config.maxSnippets - config.minSnippets + 1))
            let count = 1 + Int(rng.next() % UInt64(config.maxActions))
            // Lengths first, then place them in order with random gaps.
            var lengths = (0..<count).map { _ in
                max(2, Int((config.minFraction + (config.maxFraction - config.minFraction) * rng.nextUniform()) * Double(t)))
            }
            while lengths.reduce(0, +) > t - 2 * lengths.count { lengths[lengths.indices.max { lengths[$0] < lengths[$1] }!] -= 1 }
            let free = t - lengths.reduce(0, +)
            var cuts = (0..<count).map { _ in rng.nextUniform() }
            let cutSum = cuts.reduce(0, +) + rng.nextUniform() + 1e-9
            cuts = cuts.map { $0 / cutSum * Double(free) }
            var cursor = 0.0
            var actions: [(Double, Double, Int)] = []
            for a in 0..<count {
                cursor += cuts[a]
                let s = cursor.rounded(.down)
                let e = s + Double(lengths[a])
                actions.append((s * config.secondsPerSnippet, e * config.secondsPerSnippet, Int(rng.next() % UInt64(config.classes))))
                cursor = e
            }
            videos.append(
                Video(
                    id: String(format: "v_%05d", i), subset: subset, snippets: t,
                    duration: Double(t) * config.secondsPerSnippet, actions: actions))
        }
        self.videos = videos
    }

    /// The video's T × C features (snippet i covers [i, i+1) · secondsPerSnippet).
    public func features(_ index: Int) -> [Float] {
        let v = videos[index], c = config.channels, t = v.snippets
        var rng = SeededGenerator(seed: config.seed &+ UInt64(index) &* 0xD1B5_4A32_D192_ED03 &+ 1)
        var out = [Float](repeating: 0, count: t * c)
        // Background with a slow drift: a random walk of small steps, smoothed.
        var walk = [Float](repeating: 0, count: c)
        let bgScale = Float(0.8 + 0.4 * rng.nextUniform())
        // Steps sized so the walk's stationary norm is about `drift`.
        let step = Float(config.drift) / (Float(c).squareRoot() * Float(1 / (1 - 0.97 * 0.97)).squareRoot())
        for i in 0..<t {
            for j in 0..<c { walk[j] = 0.97 * walk[j] + step * Float(rng.nextNormal()) }
            for j in 0..<c { out[i * c + j] = bgScale * background[j] + walk[j] }
        }
        let sps = config.secondsPerSnippet
        for a in v.actions {
            let s = Int((a.start / sps).rounded()), e = Int((a.end / sps).rounded()), len = e - s
            // This instance's jittered atoms and strength.
            let strength = Float(0.9 + 0.7 * rng.nextUniform())
            let inst = atoms[a.label].map { atom in atom.map { $0 + 0.5 * Float(rng.nextNormal()) / Float(c).squareRoot() } }
            let edge = max(1, min(4, len / 5))
            // Soft boundaries: the action fades in and out over 1…3 snippets.
            let fade = 1 + Int(rng.next() % 3)
            for i in s..<e {
                let p = i - s
                let atom = p < edge ? 0 : (p >= len - edge ? 2 : 1)
                let ramp = min(Float(1), Float(min(p, len - 1 - p) + 1) / Float(fade + 1))
                for j in 0..<c { out[i * c + j] = (1 - ramp * 0.7) * out[i * c + j] + ramp * strength * inst[atom][j] }
            }
        }
        let noise = Float(config.noise) / Float(c).squareRoot()
        for k in 0..<out.count { out[k] += noise * Float(rng.nextNormal()) }
        return out
    }

    /// Channels of the auxiliary "atomic" stream.
    public static let atomicChannels = 4

    /// The video's T × 4 atomic-action stream: per snippet, a noisy soft assignment to background,
    /// onset, body and offset — what an atomic-action model (AVA-style) would report, class-blind.
    public func atomicFeatures(_ index: Int) -> [Float] {
        let v = videos[index], t = v.snippets, sps = config.secondsPerSnippet
        var atom = [Int](repeating: 0, count: t)
        for a in v.actions {
            let s = Int((a.start / sps).rounded()), e = Int((a.end / sps).rounded()), len = e - s
            let edge = max(1, min(4, len / 5))
            for i in s..<e {
                let p = i - s
                atom[i] = p < edge ? 1 : (p >= len - edge ? 3 : 2)
            }
        }
        var rng = SeededGenerator(seed: config.seed &+ UInt64(index) &* 0x8CB9_2BA7_2F3D_8DD7 &+ 7)
        var out = [Float](repeating: 0, count: t * Self.atomicChannels)
        for i in 0..<t {
            var logits = (0..<Self.atomicChannels).map { ($0 == atom[i] ? 1.5 : 0) + Float(config.noise) * Float(rng.nextNormal()) }
            let m = logits.max()!
            for k in logits.indices { logits[k] = exp(logits[k] - m) }
            let z = logits.reduce(0, +)
            for k in logits.indices { out[i * Self.atomicChannels + k] = logits[k] / z }
        }
        return out
    }

    public func groundTruth() -> ActivityNet.GroundTruth {
        let names = classNames
        return ActivityNet.GroundTruth(
            videos: videos.map { v in
                ActivityNet.Video(
                    id: v.id, subset: v.subset, duration: v.duration,
                    annotations: v.actions.map { ActivityNet.Annotation(start: $0.start, end: $0.end, label: names[$0.label]) })
            })
    }
}
