import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// Similarity-guided CoreInfer. Offline (`cluster`): each corpus text's signature is the binary
/// vector of its top-m neurons by frequency at one deep layer (m = `signature` · d_ff; the reference's
/// 3000 of 11008 is 0.27); KMeans (k-means++ seeding from seed 42, Lloyd iterations) for k = 1…10,
/// and k = the k at which the inertia's second difference peaks (np.argmax(np.diff(inertia, 2)) + 2),
/// at least 4 (capped by the number of texts); per cluster and converted layer, the int(β · d_ff) neurons most often in its members'
/// sentence core sets (ties to the lower index; statistics start empty for every cluster — the
/// reference's accumulate across clusters). Online (`mode=similarity`): the prompt's signature picks
/// the nearest centroid, whose neurons the decoding uses.
struct ClusterFile: Codable {
    var layer: Int
    var signatureSize: Int
    var dff: Int
    var centroids: [[Double]]
    /// Per cluster, per converted layer (as a string key), the kept neurons.
    var neurons: [[String: [Int]]]
    var assignments: [Int]
}

extension CoreInferComponent {
    /// The layer the signatures are read at: the last converted one.
    func signatureLayer(_ layers: Range<Int>) -> Int { max(layers.lowerBound, layers.upperBound - 1) }

    func signature(_ counts: [Int], size m: Int) -> [Double] {
        let top = (0..<counts.count).sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }.prefix(m)
        var v = [Double](repeating: 0, count: counts.count)
        for n in top { v[n] = 1 }
        return v
    }

    func cluster(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let (model, tokenizer) = try load(o.model_dir)
        let corpus = try loadCorpus(o)
        let layers = try nonEmptyLayers(o, model)
        let dff = model.config.intermediateSize, deep = signatureLayer(layers)
        let m = max(1, Int(o.signature * Double(dff)))
        var signatures: [[Double]] = [], cores: [[Int: [Int]]] = [], topics: [String] = []
        for t in corpus.topics {
            for text in t.texts {
                let ids = tokenizer.encode(text)
                guard !ids.isEmpty else { continue }
                var acts: [Int: [Float]] = [:]
                model.activationHook = { l, a, _ in if layers.contains(l) { acts[l] = a } }
                _ = try model.forward(ids, cache: model.makeCache())
                model.activationHook = nil
                signatures.append(signature(tokenCoreCounts(acts[deep]!, tokens: ids.count, dff: dff, alpha: o.alpha), size: m))
                cores.append(Dictionary(uniqueKeysWithValues: layers.map { l in (l, tokenCoreCounts(acts[l]!, tokens: ids.count, dff: dff, alpha: o.alpha)) }))
                topics.append(t.name)
            }
        }
        guard signatures.count >= 2 else { throw MenagerieError.invalidArgument("the corpus needs at least two texts") }
        // Inertia for k = 1…10 (at most the number of texts), then the elbow rule.
        let maxK = min(10, signatures.count)
        let runs = (1...maxK).map { kMeans(signatures, k: $0, seed: 42) }
        var k = 4
        if runs.count >= 3 {
            var best = -Double.infinity, at = 1
            for i in 1..<(runs.count - 1) {
                let second = runs[i + 1].inertia - 2 * runs[i].inertia + runs[i - 1].inertia
                if second > best { (best, at) = (second, i + 1) } // k = i + 1
            }
            k = max(4, at)
        }
        k = min(k, signatures.count)
        let final = kMeans(signatures, k: k, seed: 42)
        let keep = max(1, Int(o.beta * Double(dff)))
        var neurons: [[String: [Int]]] = []
        for c in 0..<k {
            let members = final.assignments.indices.filter { final.assignments[$0] == c }
            var perLayer: [String: [Int]] = [:]
            for l in layers {
                var counts = [Int](repeating: 0, count: dff)
                for i in members { for (n, v) in cores[i][l]!.enumerated() { counts[n] += v } }
                perLayer["\(l)"] = (0..<dff).sorted { counts[$0] > counts[$1] || (counts[$0] == counts[$1] && $0 < $1) }.prefix(keep).sorted()
            }
            neurons.append(perLayer)
        }
        let file = ClusterFile(layer: deep, signatureSize: m, dff: dff, centroids: final.centroids, neurons: neurons, assignments: final.assignments)
        let data = try JSONEncoder().encode(file)
        try AtomicFile.write(String(decoding: data, as: UTF8.self) + "\n", to: request.host.scratchDirectory + "/clusters.json")
        // How well clusters follow topics: the share of texts whose cluster's majority topic is theirs.
        var agree = 0
        for c in 0..<k {
            let members = final.assignments.indices.filter { final.assignments[$0] == c }
            let majority = Dictionary(grouping: members, by: { topics[$0] }).max { $0.value.count < $1.value.count }?.value.count ?? 0
            agree += majority
        }
        return Response(
            result: [
                "clusters": .number(Double(k)), "texts": .number(Double(signatures.count)), "signature_layer": .number(Double(deep)),
                "signature_size": .number(Double(m)), "inertia": .array(runs.map { .number($0.inertia) }),
                "topic_purity": .number(Double(agree) / Double(signatures.count)),
            ],
            artifacts: ["clusters.json"])
    }

    /// The neurons of the cluster nearest to the prompt's signature.
    func similarityNeurons(_ clustersPath: String, activations: [Int: [Float]], tokens: Int, alpha: Double, dff: Int) throws -> (
        cluster: Int, neurons: [Int: [Int]]
    ) {
        let path = (clustersPath as NSString).expandingTildeInPath
        let data: Data
        do { data = try RegularFile.read(path, limit: 1 << 28) } catch {
            throw MenagerieError.invalidArgument("clusters: \(error) (make it with the cluster operation)")
        }
        let file: ClusterFile
        do { file = try JSONDecoder().decode(ClusterFile.self, from: data) } catch {
            throw MenagerieError.invalidArgument("clusters: \(path) is not a clusters file: \(error)")
        }
        guard file.dff == dff, let acts = activations[file.layer] else {
            throw MenagerieError.invalidArgument("clusters: \(path) was made for another model (d_ff \(file.dff), layer \(file.layer))")
        }
        // Every number of the file is checked before it sizes, slices or indexes anything.
        guard (0...dff).contains(file.signatureSize) else {
            throw MenagerieError.invalidArgument("clusters: \(path): 'signatureSize' = \(file.signatureSize) must lie in 0…\(dff) (d_ff)")
        }
        guard !file.centroids.isEmpty, file.neurons.count == file.centroids.count else {
            throw MenagerieError.invalidArgument(
                "clusters: \(path): \(file.centroids.count) centroids but \(file.neurons.count) neuron lists (one per centroid needed)")
        }
        for (c, lists) in file.neurons.enumerated() {
            for (layer, list) in lists {
                guard Int(layer) != nil else {
                    throw MenagerieError.invalidArgument("clusters: \(path): neurons[\(c)] has a layer key '\(layer)' that is not an integer")
                }
                if let bad = list.first(where: { !(0..<dff).contains($0) }) {
                    throw MenagerieError.invalidArgument("clusters: \(path): neurons[\(c)][\"\(layer)\"] holds neuron \(bad), outside 0..<\(dff) (d_ff)")
                }
            }
        }
        let sig = signature(tokenCoreCounts(acts, tokens: tokens, dff: dff, alpha: alpha), size: file.signatureSize)
        let nearest = file.centroids.indices.min { a, b in distance(sig, file.centroids[a]) < distance(sig, file.centroids[b]) }!
        var out: [Int: [Int]] = [:]
        for (key, list) in file.neurons[nearest] { if let l = Int(key) { out[l] = list } }
        return (nearest, out)
    }
}

func distance(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } }

/// KMeans: k-means++ seeding from `seed`, then Lloyd iterations until assignments settle (≤ 100).
func kMeans(_ points: [[Double]], k: Int, seed: UInt64) -> (centroids: [[Double]], assignments: [Int], inertia: Double) {
    var rng = SeededGenerator(seed: seed)
    var centroids = [points[Int(rng.next() % UInt64(points.count))]]
    while centroids.count < k {
        let d = points.map { p in centroids.map { distance(p, $0) }.min()! }
        let total = d.reduce(0, +)
        var u = rng.nextUniform() * total, pick = points.count - 1
        for (i, v) in d.enumerated() {
            u -= v
            if u <= 0 {
                pick = i
                break
            }
        }
        centroids.append(points[pick])
    }
    var assignments = [Int](repeating: -1, count: points.count)
    for _ in 0..<100 {
        let next = points.map { p in centroids.indices.min { distance(p, centroids[$0]) < distance(p, centroids[$1]) }! }
        if next == assignments { break }
        assignments = next
        for c in 0..<k {
            let members = points.indices.filter { assignments[$0] == c }
            guard !members.isEmpty else { continue }
            centroids[c] = (0..<points[0].count).map { j in members.reduce(0) { $0 + points[$1][j] } / Double(members.count) }
        }
    }
    let inertia = points.indices.reduce(0) { $0 + distance(points[$1], centroids[assignments[$1]]) }
    return (centroids, assignments, inertia)
}
