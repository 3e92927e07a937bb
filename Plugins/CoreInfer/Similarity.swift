import Formats
import Foundation
import MenagerieKit
import NN
import Tensors

/// Similarity-guided CoreInfer as released (REFERENCES.md §4.2; the rules are in `Selection.swift`).
/// Offline (`cluster`): per corpus text, the signature at the signature layer; binarized; KMeans over
/// k = 1…10 and the elbow rule; per cluster and layer a neuron list from its members' tokens.
/// Online (`mode=similarity`): the prompt's signature → the nearest centroid → that cluster's lists,
/// used whole at decode time. `clusters` is our `clusters.json` or a directory in the released layout.
struct ClusterFile: Codable {
    var format: String
    var layer: Int
    var signatureSize: Int
    var signatureAlpha: Double
    var dff: Int
    var centroids: [[Double]]
    /// Per cluster, per layer (as a string key), the kept neurons in ranked order.
    var neurons: [[String: [Int]]]
    var assignments: [Int]
    /// Each corpus text's signature (ranked neuron ids), in corpus order.
    var signatures: [[Int]]
    static let currentFormat = "menagerie-coreinfer-clusters-2"
}

/// Clusters ready for the online step, from either source.
struct Clusters {
    var centroids: [[Double]]
    /// The binarizer's width: d_ff, or d_ff − 1 for the release's OPT files.
    var width: Int
    /// Per cluster: layer → neurons.
    var neurons: [[Int: [Int]]]
    /// Signature layer and size stored in our file (nil for the released layout: options / defaults).
    var layer: Int?, signatureSize: Int?, signatureAlpha: Double?
}

/// The online step: the prompt's signal at `layer` → its signature → the nearest centroid.
struct SimilaritySelection {
    let clusters: Clusters
    let layer: Int, size: Int, alpha: Double

    func nearest(signal: [Float], tokens: Int, dff: Int) -> (cluster: Int, signature: [Int]) {
        let signature = onlineSignature(signal, tokens: tokens, dff: dff, alpha: alpha, size: size)
        return (nearestCentroid(binarize(signature, width: clusters.width), clusters.centroids), signature)
    }
}

extension CoreInferComponent {
    /// The similarity signal of every layer for one forward pass: OPT's fc1 pre-activation, LLaMA's
    /// gate_proj output (the release hooks the activation module's input).
    func similaritySignals(_ model: DecoderLM, _ ids: [Int32], layers: Set<Int>) throws -> [Int: [Float]] {
        var acts: [Int: [Float]] = [:]
        let keep: (Int, [Float], Int) -> Void = { l, a, _ in if layers.contains(l) { acts[l] = a } }
        if model.config.architecture == .llama { model.gateHook = keep } else { model.activationHook = keep }
        defer { (model.gateHook, model.activationHook) = (nil, nil) }
        _ = try model.forward(ids, cache: model.makeCache())
        return acts
    }

    func signatureOptions(_ o: Options, _ model: DecoderLM) throws -> (layer: Int, size: Int) {
        let total = model.config.layers, dff = model.config.intermediateSize
        let layer = o.signature_layer >= 0 ? o.signature_layer : defaultSignatureLayer(total: total)
        guard layer < total else { throw MenagerieError.invalidArgument("signature_layer \(layer) is beyond the model's \(total) layers") }
        let size = o.signature_size >= 0 ? o.signature_size : defaultSignatureSize(dff: dff)
        guard (1...dff).contains(size) else { throw MenagerieError.invalidArgument("signature_size \(size) must lie in 1…\(dff) (d_ff)") }
        return (layer, size)
    }

    func cluster(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.beta > 0 && o.beta <= 1 else { throw MenagerieError.invalidArgument("beta must be in (0, 1], got \(o.beta)") }
        let (model, tokenizer) = try load(o.model_dir)
        let corpus = try loadCorpus(o)
        let dff = model.config.intermediateSize, total = model.config.layers
        let (deep, m) = try signatureOptions(o, model)
        let all = Set(0..<total)
        // Pass 1: signatures, and each text's positive count and rows per layer (for the lists' k).
        var signatures: [[Double]] = [], ranked: [[Int]] = [], texts: [[Int32]] = [], topics: [String] = []
        var observed: [[Int: (positives: Int, rows: Int)]] = []
        for t in corpus.topics {
            for text in t.texts {
                let ids = tokenizer.encode(text)
                guard !ids.isEmpty else { continue }
                try request.host.checkCancelled()
                let acts = try similaritySignals(model, ids, layers: all)
                ranked.append(offlineSignature(acts[deep]!, tokens: ids.count, dff: dff, alpha: o.signature_alpha, size: m))
                signatures.append(binarize(ranked[ranked.count - 1], width: dff))
                observed.append(acts.mapValues { (positiveCount($0[...]), ids.count) })
                texts.append(ids)
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
        // Pass 2: per cluster (fresh statistics) and layer, counts of each row's top k.
        var counters = (0..<k).map { _ in (0..<total).map { _ in ClusterNeuronCounter(dff: dff) } }
        for i in texts.indices {
            let c = final.assignments[i]
            for (l, p) in observed[i] { counters[c][l].observe(positives: p.positives, rows: p.rows) }
        }
        let ks = counters.map { $0.map { $0.k(alpha: o.cluster_alpha) } }
        for (i, ids) in texts.enumerated() {
            try request.host.checkCancelled()
            let c = final.assignments[i]
            for (l, a) in try similaritySignals(model, ids, layers: all) { counters[c][l].count(a, rows: ids.count, k: ks[c][l]) }
        }
        let neurons = counters.map { perLayer in
            Dictionary(uniqueKeysWithValues: perLayer.enumerated().map { ("\($0.offset)", $0.element.list(beta: o.beta)) })
        }
        let file = ClusterFile(
            format: ClusterFile.currentFormat, layer: deep, signatureSize: m, signatureAlpha: o.signature_alpha, dff: dff,
            centroids: final.centroids, neurons: neurons, assignments: final.assignments, signatures: ranked)
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
                "neurons_per_cluster_layer_\(deep)": .array(neurons.map { .number(Double($0["\(deep)"]?.count ?? 0)) }),
            ],
            artifacts: ["clusters.json"])
    }

    /// The clusters of `clusters=` and the online signature's layer, size and share (our file fixes
    /// them; for the released layout they come from the options or their scaled defaults).
    func similaritySelection(_ o: Options, model: DecoderLM, layers: Range<Int>) throws -> SimilaritySelection {
        guard !o.clusters.isEmpty else {
            throw MenagerieError.invalidArgument(
                "mode=similarity needs --set clusters=clusters.json (from the cluster operation) or clusters=DIR (a released cluster directory)")
        }
        let dff = model.config.intermediateSize
        let path = (o.clusters as NSString).expandingTildeInPath
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw MenagerieError.invalidArgument(
                "clusters: \(path) does not exist (a clusters.json from the cluster operation, or a released cluster directory)")
        }
        let clusters: Clusters
        do {
            clusters =
                isDirectory.boolValue
                ? try ReleasedClusters.load(directory: path, kmeans: o.kmeans, dff: dff, layers: layers)
                : try loadClusterFile(path, dff: dff, layers: layers)
        } catch let e as FormatError { throw MenagerieError.invalidArgument("clusters: \(e)") }
        let defaults = try signatureOptions(o, model)
        let layer = clusters.layer ?? defaults.layer
        guard layer < model.config.layers else {
            throw MenagerieError.invalidArgument("clusters: \(path) was made at layer \(layer); the model has \(model.config.layers)")
        }
        return SimilaritySelection(
            clusters: clusters, layer: layer, size: clusters.signatureSize ?? defaults.size, alpha: clusters.signatureAlpha ?? o.signature_alpha)
    }

    /// Our clusters.json, every number checked before it sizes, slices or indexes anything.
    func loadClusterFile(_ path: String, dff: Int, layers: Range<Int>) throws -> Clusters {
        let data = try RegularFile.read(path, limit: 1 << 28)
        let file: ClusterFile
        do { file = try JSONDecoder().decode(ClusterFile.self, from: data) } catch {
            throw FormatError(path: path, "is not a clusters file of this version (\(error)): make it again with the cluster operation")
        }
        guard file.format == ClusterFile.currentFormat else {
            throw FormatError(
                path: path, "has format '\(file.format.prefix(80))', not '\(ClusterFile.currentFormat)': make it again with the cluster operation")
        }
        guard file.dff == dff else { throw FormatError(path: path, "was made for d_ff \(file.dff); this model has \(dff)") }
        guard file.layer >= 0, (1...dff).contains(file.signatureSize), file.signatureAlpha > 0, file.signatureAlpha <= 1 else {
            throw FormatError(
                path: path,
                "'layer' \(file.layer), 'signatureSize' \(file.signatureSize) (1…\(dff)) or 'signatureAlpha' \(file.signatureAlpha) ((0, 1]) out of range")
        }
        guard !file.centroids.isEmpty, file.neurons.count == file.centroids.count else {
            throw FormatError(path: path, "\(file.centroids.count) centroids but \(file.neurons.count) neuron lists (one per centroid needed)")
        }
        if let c = file.centroids.firstIndex(where: { $0.count != dff || !$0.allSatisfy(\.isFinite) }) {
            throw FormatError(path: path, "centroid \(c) has \(file.centroids[c].count) values (d_ff \(dff) needed) or a non-finite one")
        }
        var neurons: [[Int: [Int]]] = []
        for (c, lists) in file.neurons.enumerated() {
            var perLayer: [Int: [Int]] = [:]
            for (key, list) in lists {
                guard let l = Int(key), l >= 0 else {
                    throw FormatError(path: path, "neurons[\(c)] has a layer key '\(key.prefix(40))' that is not a layer number")
                }
                perLayer[l] = try checkedNeurons(list, dff: dff, what: "neurons[\(c)][\"\(key)\"]", path: path)
            }
            if let missing = layers.first(where: { perLayer[$0] == nil }) {
                throw FormatError(path: path, "neurons[\(c)] has no list for converted layer \(missing)")
            }
            neurons.append(perLayer)
        }
        return Clusters(
            centroids: file.centroids, width: dff, neurons: neurons, layer: file.layer, signatureSize: file.signatureSize, signatureAlpha: file.signatureAlpha)
    }
}

/// Neuron ids checked: each in 0..<d_ff, none twice (a repeated id would count its neuron twice).
func checkedNeurons(_ list: [Int], dff: Int, what: String, path: String) throws -> [Int] {
    var seen = [Bool](repeating: false, count: dff)
    for n in list {
        guard (0..<dff).contains(n) else { throw FormatError(path: path, "\(what) holds neuron \(n), outside 0..<\(dff) (d_ff)") }
        guard !seen[n] else { throw FormatError(path: path, "\(what) holds neuron \(n) twice") }
        seen[n] = true
    }
    return list
}

/// KMeans: k-means++ seeding from `seed`, then Lloyd iterations until assignments settle (≤ 100).
/// Not scikit-learn's (its greedy k-means++ and random stream differ): inertias and clusters can differ.
func kMeans(_ points: [[Double]], k: Int, seed: UInt64) -> (centroids: [[Double]], assignments: [Int], inertia: Double) {
    var rng = SeededGenerator(seed: seed)
    var centroids = [points[Int(rng.next() % UInt64(points.count))]]
    while centroids.count < k {
        let d = points.map { p in centroids.map { squaredDistance(p, $0) }.min()! }
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
        let next = points.map { nearestCentroid($0, centroids) }
        if next == assignments { break }
        assignments = next
        for c in 0..<k {
            let members = points.indices.filter { assignments[$0] == c }
            guard !members.isEmpty else { continue }
            centroids[c] = (0..<points[0].count).map { j in members.reduce(0) { $0 + points[$1][j] } / Double(members.count) }
        }
    }
    let inertia = points.indices.reduce(0) { $0 + squaredDistance(points[$1], centroids[assignments[$1]]) }
    return (centroids, assignments, inertia)
}
