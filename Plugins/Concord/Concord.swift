import DistillationKit
import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// CONCORD's concepts: per class a name and descriptions, read from `{class_idx: [class_name,
/// [descriptions]]}` (the JSON an LLM wrote for the paper; `concord concepts` writes one from a
/// dataset's description).
public struct ConceptBook: Sendable {
    public var names: [String]
    /// Every description of each class (at least `positives`).
    public var descriptions: [[String]]
    /// How many of a class's first descriptions are its positives.
    public var positives: Int

    /// The descriptions a negative draw picks from: the first four (the released
    /// `np.random.randint(0, 4)`), or all of them when a class has fewer.
    public static let negativePool = 4

    public static func read(_ path: String, classes: Int, positives: Int) throws -> ConceptBook {
        guard FileManager.default.fileExists(atPath: path) else { throw MenagerieError.notFound("concepts file '\(path)' does not exist") }
        let data: Data
        do { data = try RegularFile.read(path, limit: 256 << 20) } catch { throw MenagerieError.invalidArgument("concepts file: \(error)") }
        guard (0...Limits.vocabulary.upperBound).contains(classes), positives >= 0 else {
            throw MenagerieError.invalidArgument("concepts file '\(path)': \(classes) classes and \(positives) positives are out of range")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(String(decoding: data, as: UTF8.self), source: path) } catch {
            throw MenagerieError.invalidArgument("concepts file '\(path)': \(error)")
        }
        guard let object = json.objectValue else {
            throw MenagerieError.invalidArgument("concepts file '\(path)' must be an object {\"0\": [name, [descriptions]], …}")
        }
        var names = [String](repeating: "", count: classes), descriptions = [[String]](repeating: [], count: classes)
        for k in 0..<classes {
            guard let entry = object[String(k)]?.arrayValue, entry.count == 2, let name = entry[0].stringValue, let list = entry[1].arrayValue else {
                throw MenagerieError.invalidArgument(
                    "concepts file '\(path)' has no entry \"\(k)\": [class_name, [descriptions]] (the model has \(classes) classes)")
            }
            let texts = list.compactMap(\.stringValue)
            guard texts.count >= positives, !texts.isEmpty else {
                throw MenagerieError.invalidArgument(
                    "concepts file '\(path)': class \(k) ('\(name)') has \(texts.count) descriptions, \(max(positives, 1)) asked (positives=)")
            }
            names[k] = name
            descriptions[k] = texts
        }
        return ConceptBook(names: names, descriptions: descriptions, positives: positives)
    }

    /// "{name} with {description}" for each of the class's positive descriptions.
    public func prompts(_ k: Int) -> [String] { descriptions[k].prefix(positives).map { "\(names[k]) with \($0)" } }

    /// The texts a negative draw of class k may pick: "{name} with {description}" for its first
    /// `negativePool` descriptions.
    public func negativePrompts(_ k: Int) -> [String] {
        descriptions[k].prefix(Self.negativePool).map { "\(names[k]) with \($0)" }
    }
}

/// How the K negative classes of each sample are drawn, as the released `sample()`:
/// `weighted` (`random.choices(classes, weights = neighbors[c], k = K)`: with replacement, weights the
/// CLIP-text cosine similarities of the class names minus the identity, so the class itself weighs
/// ≈ 0; a negative similarity weighs 0 here), `similar` (`argsort(neighbors[c])[-K:]`, the K most similar names, no replacement), `random`
/// (`random.choices(classes, k = K)`: uniform with replacement, the class itself included).
public enum NegativePolicy: String, Sendable, CaseIterable { case weighted, similar, random }

public struct NegativeDrawError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// Python's `random.choices(range(n), weights, k)` with this generator: cumulative weights, then for
/// each draw `bisect_right(cum_weights, u·total, 0, n − 1)` with u uniform in [0, 1). Python's rule
/// for a total that is not positive and finite (a ValueError) is an error here too; a negative
/// weight is used as Python uses it (its class is then never drawn, its share goes to the next).
public func pythonChoices(weights: [Double], count k: Int, rng: inout SeededGenerator) throws -> [Int] {
    guard !weights.isEmpty else { throw NegativeDrawError(description: "no classes to draw negatives from") }
    var cumulative: [Double] = []
    cumulative.reserveCapacity(weights.count)
    var total = 0.0
    for w in weights {
        total += w
        cumulative.append(total)
    }
    guard total > 0, total.isFinite else {
        throw NegativeDrawError(description: "the negative weights total \(total); a positive, finite total is needed (Python's random.choices refuses it too)")
    }
    let hi = weights.count - 1
    return (0..<max(k, 0)).map { _ in
        let x = rng.nextUniform() * total
        var lo = 0, top = hi
        while lo < top {
            let mid = (lo + top) / 2
            if x < cumulative[mid] { top = mid } else { lo = mid + 1 }
        }
        return lo
    }
}

/// The K negative classes for class `k` under `policy`, given the class-name cosine similarity
/// matrix [C, C] (unit embeddings: the diagonal ≈ 1; the released `neighbors` subtract the identity).
public func negativeClasses(for k: Int, count: Int, policy: NegativePolicy, similarity: [[Double]], rng: inout SeededGenerator) throws -> [Int] {
    let classes = similarity.count
    let neighbors = similarity[k].enumerated().map { j, v in j == k ? v - 1 : v }
    switch policy {
    case .similar:
        // np.argsort(neighbors)[-K:]: ascending, the last K (ties in index order here).
        let order = (0..<classes).sorted { neighbors[$0] != neighbors[$1] ? neighbors[$0] < neighbors[$1] : $0 < $1 }
        return Array(order.suffix(count))
    case .random:
        return (0..<max(count, 0)).map { _ in min(Int(rng.nextUniform() * Double(classes)), classes - 1) }
    case .weighted:
        // A CLIP's name similarities are positive in the released setting (LAION ViT-L/14 on ImageNet
        // names), where clipping at 0 changes nothing; a small CLIP can give negative ones, on which
        // Python's choices misdraws (a negative weight hands its share to the next class) or raises
        // (a negative total). Ours: negatives weigh 0; no positive weight left → uniform over the others.
        let clipped = neighbors.map { max($0, 0) }
        if clipped.reduce(0, +) > 0 { return try pythonChoices(weights: clipped, count: count, rng: &rng) }
        return try pythonChoices(weights: (0..<classes).map { $0 == k ? 0 : 1 }, count: count, rng: &rng)
    }
}

/// One negative text per drawn class: the index of one of its first `pool` descriptions, uniform
/// (the released `np.random.randint(0, 4)`).
public func negativeDescription(pool: Int, rng: inout SeededGenerator) -> Int {
    min(Int(rng.nextUniform() * Double(max(pool, 1))), max(pool, 1) - 1)
}

/// The concept loss of one image and its gradient with respect to the UNNORMALISED image embedding e:
/// f = e/‖e‖, s_k = f·t_k (t unit text embeddings),
/// L = −(1/|P|) Σ_p [ s_p/τ − log Σ_{n∈N} exp(s_n/τ) ] (the denominator holds the negatives only).
public func conceptLoss(embedding e: [Float], positives: [[Float]], negatives: [[Float]], temperature tau: Double) -> (loss: Double, gradient: [Float]) {
    let d = e.count
    let norm = max(e.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot(), 1e-12)
    let f = e.map { Double($0) / norm }
    func dot(_ t: [Float]) -> Double { zip(f, t).reduce(0.0) { $0 + $1.0 * Double($1.1) } }
    let sp = positives.map(dot), sn = negatives.map(dot)
    let top = sn.max() ?? 0
    let z = sn.reduce(0.0) { $0 + exp(($1 - top) / tau) }
    let logDenominator = top / tau + log(z)
    let loss = -sp.reduce(0.0) { $0 + $1 / tau - logDenominator } / Double(max(positives.count, 1))
    // dL/df = −(1/τ)·mean_p t_p + (1/τ)·Σ_n softmax(s_n/τ)·t_n
    var gf = [Double](repeating: 0, count: d)
    for t in positives { for j in 0..<d { gf[j] -= Double(t[j]) / tau / Double(positives.count) } }
    for (i, t) in negatives.enumerated() {
        let w = exp((sn[i] - top) / tau) / z / tau
        for j in 0..<d { gf[j] += w * Double(t[j]) }
    }
    // Through f = e/‖e‖: dL/de = (gf − (gf·f)·f)/‖e‖
    let along = zip(gf, f).reduce(0.0) { $0 + $1.0 * $1.1 }
    return (loss, (0..<d).map { Float((gf[$0] - along * f[$0]) / norm) })
}

/// The CLIP side of CONCORD, through the host: text embeddings (unit) of prompts, and image
/// embeddings with the vector-Jacobian product back to the CLIP input (`embed` with
/// `grad_embedding`). `bioclip2` serves both for any open_clip folder.
struct CLIPBridge {
    let component: BackboneProxy
    let options: [String: JSONValue]
    let imageSize: Int
    let mean: [Float]
    let std: [Float]
    let dimension: Int

    init(host: PluginHost, id: String, options: [String: JSONValue]) throws {
        component = try BackboneProxy(host, id: id)
        self.options = options
        var o = options
        o["texts"] = .array([.string("a")])
        let probe = try component.embed(options: .object(o), inputs: [])
        guard let info = probe.result.objectValue, info["image_size"] != nil, let e = probe.tensors["embedding"] else {
            throw MenagerieError.invalidArgument(
                "backbone '\(id)' does not embed texts with its image size and mean/std (use bioclip2 or an equivalent CLIP backbone)")
        }
        // The response of another plugin: its numbers are checked like a file's.
        do {
            imageSize = try Limits.int(info["image_size"], key: "image_size", in: 1...65536, source: "the response of backbone '\(id)'")
        } catch { throw MenagerieError.invalidArgument("\(error)") }
        mean = info["mean"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.481, 0.458, 0.408]
        std = info["std"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) } ?? [0.269, 0.261, 0.276]
        guard mean.count == 3, std.count == 3, (mean + std).allSatisfy(\.isFinite), std.allSatisfy({ $0 > 0 }) else {
            throw MenagerieError.invalidArgument("backbone '\(id)' answered mean \(mean) and std \(std): 3 finite values each, std positive, are needed")
        }
        dimension = e.shape.last ?? 0
        guard dimension > 0 else { throw MenagerieError.invalidArgument("backbone '\(id)' returned an empty embedding") }
    }

    /// Unit text embeddings [T][E].
    func texts(_ prompts: [String]) throws -> [[Float]] {
        var o = options
        o["texts"] = .array(prompts.map { .string($0) })
        let r = try component.embed(options: .object(o), inputs: [])
        guard let e = r.tensors["embedding"], e.rank == 2, e.shape[0] == prompts.count else {
            throw MenagerieError.failed("the CLIP backbone returned no text embeddings")
        }
        guard e.shape[1] == dimension else {
            throw MenagerieError.invalidArgument(
                "the CLIP backbone's text embeddings have \(e.shape[1]) dimensions, its image embeddings \(dimension): they must match")
        }
        let v = try e.scalars(as: Float.self), d = e.shape[1]
        return (0..<prompts.count).map { i in
            let row = Array(v[(i * d)..<((i + 1) * d)])
            let n = max(row.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            return row.map { $0 / n }
        }
    }

    /// Image embeddings of normalised CLIP inputs [N, 3, S, S], and (with `upstream` [N, E]) the
    /// gradient of Σ upstream·embedding with respect to the inputs.
    func images(_ inputs: Tensor, upstream: Tensor?) throws -> (embedding: Tensor, gradient: Tensor?) {
        var tensors: [(name: String, tensor: Tensor)] = [("input", inputs)]
        if let upstream { tensors.append(("grad_embedding", upstream)) }
        let r = try component.embed(options: .object(options), inputs: tensors)
        guard let e = r.tensors["embedding"] else { throw MenagerieError.failed("the CLIP backbone returned no image embedding") }
        guard e.shape.last == dimension else {
            throw MenagerieError.invalidArgument(
                "the CLIP backbone's image embeddings have \(e.shape.last ?? 0) dimensions, its text embeddings \(dimension): they must match")
        }
        return (e, r.tensors["grad_input"])
    }
}

/// CONCORD's guidance at one DDIM step for a batch, every model through the host: decode(x_t) by the
/// diffusion backbone → CLIP's image embedding → concept loss per sample; then back: CLIP's input
/// gradient, the resize and normalisation here, the decoder's vector–Jacobian product by the backbone;
/// g = −λ∇_{x_t}L; ε̂ = ε − √(1−ᾱ_t)·g.
struct ConceptGuidance {
    let client: DiffusionClient
    let clip: CLIPBridge
    let lambda: Double
    let temperature: Double
    /// Per sample: its positive and negative unit text embeddings.
    let positives: [[[Float]]]
    let negatives: [[[Float]]]

    func slice(_ range: Range<Int>) -> ConceptGuidance {
        ConceptGuidance(
            client: client, clip: clip, lambda: lambda, temperature: temperature, positives: Array(positives[range]),
            negatives: Array(negatives[range]))
    }

    /// Returns the guided ε and the mean concept loss.
    func guide(_ x: [Float], epsilon e: [Float], alphaBar: Double) throws -> (epsilon: [Float], loss: Double) {
        let c = client.config, n = positives.count
        let decoded = Variable(try client.decode(x, count: n, retainGraph: true), requiresGrad: true)
        var images = decoded
        if clip.imageSize != c.imageSize { images = images.upsampleBilinear(height: clip.imageSize, width: clip.imageSize) }
        if images.shape[1] == 1 { images = concat([images, images, images], axis: 1) }
        let meanT = Variable(try Tensor(clip.mean, shape: [1, 3, 1, 1])), invStd = Variable(try Tensor(clip.std.map { 1 / $0 }, shape: [1, 3, 1, 1]))
        let normalised = (images - meanT) * invStd
        let (embedding, _) = try clip.images(normalised.value, upstream: nil)
        let ev = try embedding.scalars(as: Float.self), d = clip.dimension
        var upstream = [Float](repeating: 0, count: n * d), total = 0.0
        for i in 0..<n {
            let (l, g) = conceptLoss(embedding: Array(ev[(i * d)..<((i + 1) * d)]), positives: positives[i], negatives: negatives[i], temperature: temperature)
            total += l
            for j in 0..<d { upstream[i * d + j] = g[j] }
        }
        let (_, gradInput) = try clip.images(normalised.value, upstream: try Tensor(upstream, shape: [n, d]))
        guard let gradInput, gradInput.shape == normalised.shape else {
            throw MenagerieError.failed("the CLIP backbone returned no input gradient (grad_input)")
        }
        guard let gradImages = Autograd.gradients(of: (normalised * Variable(gradInput)).sum(), wrt: [decoded])[0] else {
            throw MenagerieError.failed("no gradient reached the decoded images")
        }
        let grad = try client.decodeGradient(x, count: n, upstream: gradImages.value)
        let s = Float((1 - alphaBar).squareRoot() * lambda)
        // ε̂ = ε − √(1−ᾱ)·g with g = −λ∇L, i.e. ε + λ√(1−ᾱ)∇L.
        return (zip(e, grad).map { $0 + s * $1 }, total / Double(n))
    }
}
