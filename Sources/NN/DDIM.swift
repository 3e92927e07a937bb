import Foundation
import Tensors

/// The forward process of a diffusion model: β_t for t = 0…T−1 and ᾱ_t = Π_{s≤t} (1 − β_s).
/// `linear`: β = linspace(1e-4, 0.02, T) (DDPM, DiT); `cosine`: ᾱ(t) = cos²(((t/T) + s)/(1 + s)·π/2)
/// normalised by its value at 0, s = 0.008, β clipped at 0.999 (Nichol & Dhariwal).
public struct NoiseSchedule: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable { case linear, cosine }
    /// nil for a schedule given by its ᾱ values (another plugin's model, a diffusers scheduler).
    public let kind: Kind?
    public let steps: Int
    public let alphaBar: [Double]

    public init(_ kind: Kind, steps: Int = 1000) {
        self.kind = kind
        self.steps = steps
        var betas: [Double]
        switch kind {
        case .linear:
            betas = (0..<steps).map { 1e-4 + (0.02 - 1e-4) * Double($0) / Double(max(steps - 1, 1)) }
        case .cosine:
            func f(_ t: Double) -> Double {
                let x = (t / Double(steps) + 0.008) / 1.008 * Double.pi / 2
                return cos(x) * cos(x)
            }
            betas = (0..<steps).map { min(1 - f(Double($0 + 1)) / f(Double($0)), 0.999) }
        }
        var product = 1.0
        alphaBar = betas.map {
            product *= 1 - $0
            return product
        }
    }

    /// A schedule given by its ᾱ_t (t = 0…T−1), e.g. a diffusion backbone's `alphas_cumprod` received
    /// through the host: each value finite in (0, 1] and non-increasing, as a forward process's is.
    public init(alphaBar: [Double]) throws {
        guard !alphaBar.isEmpty, alphaBar.count <= 1_000_000 else {
            throw DiffusionError("alphas_cumprod has \(alphaBar.count) values; a schedule has 1…1000000 timesteps")
        }
        if let bad = alphaBar.firstIndex(where: { !($0.isFinite && $0 > 0 && $0 <= 1) }) {
            throw DiffusionError("alphas_cumprod[\(bad)] = \(alphaBar[bad]) is not in (0, 1]")
        }
        if let bad = alphaBar.indices.dropFirst().first(where: { alphaBar[$0] > alphaBar[$0 - 1] }) {
            throw DiffusionError("alphas_cumprod increases at t = \(bad) (\(alphaBar[bad - 1]) → \(alphaBar[bad])): ᾱ of a forward process never does")
        }
        kind = nil
        steps = alphaBar.count
        self.alphaBar = alphaBar
    }

    /// DDIM's timesteps for `count` steps ("leading" spacing: 0, T/count, 2T/count, …), ascending.
    public func ddimTimesteps(_ count: Int) -> [Int] {
        let stride = max(1, steps / max(count, 1))
        return (0..<min(count, steps)).map { $0 * stride }
    }
}

/// A noise predictor ε(x_t, t, class) on a batch of flattened latents [N, D]; `classes[i]` may be
/// the null class (classifier-free guidance's unconditional branch).
public typealias NoisePredictor = (_ x: [Float], _ t: Int, _ classes: [Int]) throws -> [Float]

/// Deterministic DDIM (η = 0) on the grid `timesteps` (ascending, e.g. 0, 20, …, 980):
/// sampling at τ_i: x̂0 = (x − √(1−ᾱ_i)·ε)/√ᾱ_i, x ← √ᾱ_{i−1}·x̂0 + √(1−ᾱ_{i−1})·ε, with ᾱ before
/// τ_0 taken as 1 (the clean latent; diffusers' `set_alpha_to_one`). Inversion runs the same map
/// backwards: from level i−1 (clean for i = 0) to τ_i with ε evaluated at the current latent and τ_i,
/// z ← (z − √(1−ᾱ_{i−1})·ε)·√(ᾱ_i/ᾱ_{i−1}) + √(1−ᾱ_i)·ε (METHODS.md's D^3HR formula).
/// Built from a diffusers scheduler config (`init(scheduler:steps:)`), "ᾱ_{i−1}" is diffusers' level
/// below (t − T/steps, `finalAlphaBar` beyond 0): DDIMScheduler's step and DDIMInverseScheduler's.
public struct DDIM: Sendable {
    public let schedule: NoiseSchedule
    /// The grid, ascending.
    public let timesteps: [Int]
    /// ᾱ before the first level (the clean end): 1 (diffusers' `set_alpha_to_one`), or ᾱ_0.
    public let finalAlphaBar: Double
    /// diffusers' rule for the level below timestep t: t − T/steps (integer division; ᾱ beyond 0 is
    /// `finalAlphaBar`), which differs from the grid's previous level for "linspace" spacing. nil:
    /// the grid's previous level (this type's original rule).
    public let previousStride: Int?
    /// What the model predicts (ε for DiT) and diffusers' `clip_sample` range for x̂0 (nil: none).
    public let prediction: DDIMSchedulerConfig.Prediction
    public let clipSample: Double?

    public init(schedule: NoiseSchedule, steps: Int) {
        self.schedule = schedule
        timesteps = schedule.ddimTimesteps(steps)
        finalAlphaBar = 1
        previousStride = nil
        prediction = .epsilon
        clipSample = nil
    }

    /// diffusers' `DDIMScheduler` (η = 0) after `set_timesteps(steps)`: its β schedule, spacing,
    /// `steps_offset`, `set_alpha_to_one`, prediction type and `clip_sample`. Inversion follows
    /// `DDIMInverseScheduler` built from the same config (leading or trailing spacing).
    public init(scheduler c: DDIMSchedulerConfig, steps: Int) throws {
        try self.init(alphaBar: c.alphasCumprod, scheduler: c, steps: steps)
    }

    /// The same on a given ᾱ table (a backbone's `alphas_cumprod`, read through the host) with the
    /// scheduler's grid settings (`c`'s β fields are not used; its `trainSteps` must equal the table's length).
    public init(alphaBar: [Double], scheduler c: DDIMSchedulerConfig, steps: Int) throws {
        guard alphaBar.count == c.trainSteps else {
            throw DiffusionError("alphas_cumprod has \(alphaBar.count) entries; num_train_timesteps is \(c.trainSteps)")
        }
        schedule = try NoiseSchedule(alphaBar: alphaBar)
        let grid = try c.timesteps(steps)
        if let bad = grid.first(where: { !(0..<c.trainSteps).contains($0) }) {
            throw DiffusionError(
                "\(steps) steps with steps_offset \(c.stepsOffset) give timestep \(bad), outside 0..<\(c.trainSteps) (num_train_timesteps)")
        }
        timesteps = grid.reversed()
        finalAlphaBar = c.setAlphaToOne ? 1 : alphaBar[0]
        previousStride = c.trainSteps / steps
        prediction = c.prediction
        clipSample = c.clipSample ? c.clipSampleRange : nil
    }

    /// ᾱ at grid level i (`finalAlphaBar` before the first level: the clean latent).
    public func alphaBar(level i: Int) -> Double { i < 0 ? finalAlphaBar : schedule.alphaBar[timesteps[i]] }

    /// ᾱ of the level a step from grid level i lands on (sampling), or starts from (inversion).
    public func previousAlphaBar(level i: Int) -> Double {
        guard let previousStride else { return alphaBar(level: i - 1) }
        let p = timesteps[i] - previousStride
        return p >= 0 ? schedule.alphaBar[p] : finalAlphaBar
    }

    /// The grid index of timestep `t` (which must lie on the grid).
    public func level(of t: Int) throws -> Int {
        guard let i = timesteps.firstIndex(of: t) else {
            throw DiffusionError(
                "timestep \(t) is not on the DDIM grid (\(timesteps.count) steps: \(timesteps.first ?? 0), \(timesteps.dropFirst().first ?? 0), …, \(timesteps.last ?? 0))"
            )
        }
        return i
    }

    /// The model output at ᾱ = a turned into (x̂0, ε) as diffusers' step does, x̂0 clipped when set.
    func prediction(_ x: [Float], _ out: [Float], alphaBar a: Double, recomputeEpsilon: Bool) -> (x0: [Float], eps: [Float]) {
        let (sa, s1a) = (Float(a.squareRoot()), Float((1 - a).squareRoot()))
        var x0 = [Float](repeating: 0, count: x.count), e = x0
        for k in x.indices {
            switch prediction {
            case .epsilon: (x0[k], e[k]) = ((x[k] - s1a * out[k]) / sa, out[k])
            case .sample: (x0[k], e[k]) = (out[k], (x[k] - sa * out[k]) / s1a)
            case .vPrediction: (x0[k], e[k]) = (sa * x[k] - s1a * out[k], sa * out[k] + s1a * x[k])
            }
        }
        if let r = clipSample.map(Float.init) {
            for k in x0.indices { x0[k] = min(max(x0[k], -r), r) }
            if recomputeEpsilon { for k in x.indices { e[k] = (x[k] - sa * x0[k]) / s1a } }
        }
        return (x0, e)
    }

    /// ε with classifier-free guidance: ε_u + w·(ε_c − ε_u), both branches in one batch; w = 1 is the
    /// conditional prediction alone (one pass).
    public static func guided(_ predict: @escaping NoisePredictor, scale w: Double, nullClass: Int) -> NoisePredictor {
        { x, t, classes in
            if w == 1 { return try predict(x, t, classes) }
            let both = try predict(x + x, t, classes + [Int](repeating: nullClass, count: classes.count))
            let half = x.count
            return (0..<half).map { both[half + $0] + Float(w) * (both[$0] - both[half + $0]) }
        }
    }

    /// One DDIM update from level i to i − 1 given ε: returns (x_{i−1}, x̂0).
    public func step(_ x: [Float], epsilon e: [Float], level i: Int) -> (next: [Float], x0: [Float]) {
        let a = alphaBar(level: i), ap = previousAlphaBar(level: i)
        if prediction != .epsilon || clipSample != nil {
            let (x0, eps) = prediction(x, e, alphaBar: a, recomputeEpsilon: true)
            let (sap, s1ap) = (Float(ap.squareRoot()), Float((1 - ap).squareRoot()))
            return ((0..<x.count).map { sap * x0[$0] + s1ap * eps[$0] }, x0)
        }
        let (sa, s1a, sap, s1ap) = (Float(a.squareRoot()), Float((1 - a).squareRoot()), Float(ap.squareRoot()), Float((1 - ap).squareRoot()))
        var x0 = [Float](repeating: 0, count: x.count), next = x0
        for k in x.indices {
            x0[k] = (x[k] - s1a * e[k]) / sa
            next[k] = sap * x0[k] + s1ap * e[k]
        }
        return (next, x0)
    }

    /// Samples from level `from` (inclusive) down to the clean latent. `guide(x, i, ε)` may replace ε
    /// at each step (CONCORD's concept guidance). `onStep` sees each level's x̂0.
    public func sample(
        _ start: [Float], from: Int, classes: [Int], predict: NoisePredictor,
        guide: ((_ x: [Float], _ level: Int, _ epsilon: [Float]) throws -> [Float])? = nil,
        cancelled: () throws -> Void = {}
    ) throws -> [Float] {
        var x = start
        for i in stride(from: from, through: 0, by: -1) {
            try cancelled()
            var e = try predict(x, timesteps[i], classes)
            if let guide { e = try guide(x, i, e) }
            x = step(x, epsilon: e, level: i).next
        }
        return x
    }

    /// Inverts clean latents up to level `to` (inclusive). `record(i, z)` sees the latent at each level.
    public func invert(
        _ clean: [Float], to: Int, classes: [Int], predict: NoisePredictor,
        record: ((Int, [Float]) throws -> Void)? = nil, cancelled: () throws -> Void = {}
    ) throws -> [Float] {
        var z = clean
        for i in 0...to {
            try cancelled()
            let e = try predict(z, timesteps[i], classes)
            let a = alphaBar(level: i), ap = previousAlphaBar(level: i)
            if prediction != .epsilon || clipSample != nil {
                // DDIMInverseScheduler: x̂0 and ε at the level below, then forward to τ_i (x̂0 clipped, ε kept).
                let (x0, eps) = prediction(z, e, alphaBar: ap, recomputeEpsilon: false)
                let (sa, s1a) = (Float(a.squareRoot()), Float((1 - a).squareRoot()))
                z = (0..<z.count).map { sa * x0[$0] + s1a * eps[$0] }
                try record?(i, z)
                continue
            }
            let (scale, s1ap, s1a) = (Float((a / ap).squareRoot()), Float((1 - ap).squareRoot()), Float((1 - a).squareRoot()))
            for k in z.indices { z[k] = (z[k] - s1ap * e[k]) * scale + s1a * e[k] }
            try record?(i, z)
        }
        return z
    }

    /// x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (training's forward noising at a raw timestep).
    public func noised(_ x0: [Float], noise: [Float], timestep t: Int) -> [Float] {
        let a = schedule.alphaBar[t]
        let (sa, s1a) = (Float(a.squareRoot()), Float((1 - a).squareRoot()))
        return zip(x0, noise).map { sa * $0 + s1a * $1 }
    }
}

public struct DiffusionError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ d: String) { description = d }
}
