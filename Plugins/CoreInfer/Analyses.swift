import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Text

/// The paper's analyses of sentence core neurons, on a corpus of topics (the embedded one by
/// default: `Resources/corpus.json`, four topics × eight sentences):
///   - stability: the overlap |S(prefix) ∩ S(full)| / |S(full)| of the core set of a growing prefix with
///     the final one, per prefix fraction, averaged over sentences and converted layers;
///   - similarity: Jaccard of two sentences' core sets (all converted layers), within a topic vs across;
///   - quality: each sentence's first half as the prompt (its core set) and the second half
///     teacher-forced: perplexity dense vs sparse, and how many of 16 greedy tokens agree.
struct Corpus {
    var topics: [(name: String, texts: [String])]

    init(path: String) throws {
        let json: JSONValue
        do { json = try JSONValue.parse(try RegularFile.text(path), source: path) } catch let e as FormatError { throw e } catch {
            throw FormatError(path: path, "\(error)")
        }
        guard let t = json["topics"]?.objectValue, !t.isEmpty else { throw FormatError(path: path, "needs {\"topics\": {name: [texts]}}") }
        topics = try t.keys.sorted().map { name in
            guard let texts = t[name]?.arrayValue?.compactMap(\.stringValue), texts.count >= 2 else {
                throw FormatError(path: path, "topic '\(name)' needs at least two texts")
            }
            return (name, texts)
        }
    }
}

extension CoreInferComponent {
    /// `corpus=` or the embedded four-topic corpus.
    func loadCorpus(_ o: Options) throws -> Corpus {
        let path = o.corpus.isEmpty ? try PluginResources.path(module: "CoreInfer", item: "corpus.json") : (o.corpus as NSString).expandingTildeInPath
        do { return try Corpus(path: path) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
    }

    /// The converted layers of `start`/`end` (−1: CoreInfer's scaled defaults); refused when empty.
    func nonEmptyLayers(_ o: Options, _ model: DecoderLM) throws -> Range<Int> {
        let layers = convertedLayers(total: model.config.layers, start: o.start >= 0 ? o.start : nil, end: o.end >= 0 ? o.end : nil)
        guard !layers.isEmpty else { throw MenagerieError.invalidArgument("no layer lies strictly between start and end") }
        return layers
    }

    func analyze(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.beta > 0 && o.beta <= 1, o.alpha > 0 && o.alpha <= 1 else { throw MenagerieError.invalidArgument("alpha and beta must be in (0, 1]") }
        let (model, tokenizer) = try load(o.model_dir)
        let corpus = try loadCorpus(o)
        let layers = try nonEmptyLayers(o, model)
        let dff = model.config.intermediateSize
        defer { for l in 0..<model.config.layers { try? model.setSparse(layer: l, neurons: nil) } }

        func coreSets(_ ids: [Int32]) throws -> [Int: [Int]] {
            var acts: [Int: [Float]] = [:]
            model.activationHook = { l, a, _ in if layers.contains(l) { acts[l] = a } }
            defer { model.activationHook = nil }
            _ = try model.forward(ids, cache: model.makeCache())
            return Dictionary(
                uniqueKeysWithValues: layers.map { ($0, sentenceCoreNeurons(acts[$0]!, tokens: ids.count, dff: dff, alpha: o.alpha, beta: o.beta)) })
        }
        let texts = corpus.topics.flatMap { t in t.texts.map { (topic: t.name, ids: tokenizer.encode($0)) } }.filter { $0.ids.count >= 8 }
        guard texts.count >= 2 else { throw MenagerieError.invalidArgument("the corpus has fewer than two texts of 8 tokens or more") }

        // Stability: prefixes at 10 %, 20 %, … of each sentence.
        let fractions = (1...10).map { Double($0) / 10 }
        var overlap = [Double](repeating: 0, count: fractions.count)
        var finals: [[Int: [Int]]] = []
        for (i, text) in texts.enumerated() {
            try request.host.checkCancelled()
            let full = try coreSets(text.ids)
            finals.append(full)
            for (f, fraction) in fractions.enumerated() {
                let n = max(2, Int((Double(text.ids.count) * fraction).rounded()))
                let part = try coreSets(Array(text.ids.prefix(n)))
                let shared = layers.map { l in Double(Set(part[l]!).intersection(full[l]!).count) / Double(max(full[l]!.count, 1)) }
                overlap[f] += shared.reduce(0, +) / Double(layers.count)
            }
            request.host.progress(i + 1, of: texts.count * 2, "stability")
        }
        overlap = overlap.map { $0 / Double(texts.count) }

        // Similarity: Jaccard of (layer, neuron) sets.
        func jaccard(_ a: [Int: [Int]], _ b: [Int: [Int]]) -> Double {
            var inter = 0, union = 0
            for l in layers {
                let (x, y) = (Set(a[l]!), Set(b[l]!))
                inter += x.intersection(y).count
                union += x.union(y).count
            }
            return Double(inter) / Double(max(union, 1))
        }
        var within: [Double] = [], across: [Double] = []
        for i in 0..<texts.count {
            for j in (i + 1)..<texts.count {
                (texts[i].topic == texts[j].topic ? { within.append(jaccard(finals[i], finals[j])) } : { across.append(jaccard(finals[i], finals[j])) })()
            }
        }
        func mean(_ v: [Double]) -> Double { v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count) }

        // Quality: first half prompt, second half teacher-forced; 16 greedy tokens.
        var nllDense = 0.0, nllSparse = 0.0, counted = 0, agree = 0, compared = 0
        for (i, text) in texts.enumerated() {
            try request.host.checkCancelled()
            let half = text.ids.count / 2
            let prompt = Array(text.ids.prefix(half)), rest = Array(text.ids.dropFirst(half))
            func nll(sparse: [Int: [Int]]?) throws -> (Double, [Int32]) {
                for l in layers { try model.setSparse(layer: l, neurons: nil) }
                let cache = model.makeCache()
                let last = try model.forward(prompt, cache: cache) // the prompt always runs densely
                if let sparse { for l in layers { try model.setSparse(layer: l, neurons: sparse[l]!) } }
                // Teacher-forced continuation: logits of position p predict rest[p].
                var logits = last, total = 0.0
                let v = model.config.vocabSize
                let all = try model.forward(rest, cache: cache, allLogits: true)
                for (p, target) in rest.enumerated() {
                    let row = p == 0 ? logits : Array(all[((p - 1) * v)..<(p * v)])
                    let m = row.max()!
                    let z = row.reduce(0.0) { $0 + Double(expf($1 - m)) }
                    total += log(z) + Double(m) - Double(row[Int(target)])
                }
                // Greedy tokens from the prompt.
                let greedyCache = model.makeCache()
                if sparse != nil { for l in layers { try model.setSparse(layer: l, neurons: nil) } }
                logits = try model.forward(prompt, cache: greedyCache)
                if let sparse { for l in layers { try model.setSparse(layer: l, neurons: sparse[l]!) } }
                var greedy: [Int32] = []
                for _ in 0..<16 {
                    let id = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
                    greedy.append(id)
                    if model.config.maxPositions <= greedyCache.length + 1 { break }
                    logits = try model.forward([id], cache: greedyCache)
                }
                return (total, greedy)
            }
            let (dense, denseGreedy) = try nll(sparse: nil)
            let (sparse, sparseGreedy) = try nll(sparse: try coreSets(prompt))
            nllDense += dense
            nllSparse += sparse
            counted += rest.count
            agree += zip(denseGreedy, sparseGreedy).filter { $0 == $1 }.count
            compared += min(denseGreedy.count, sparseGreedy.count)
            request.host.progress(texts.count + i + 1, of: texts.count * 2, "quality")
        }
        let pplDense = exp(nllDense / Double(max(counted, 1))), pplSparse = exp(nllSparse / Double(max(counted, 1)))

        let dir = request.host.scratchDirectory
        try AtomicFile.write(
            "prefix_fraction,core_overlap_with_final\n" + zip(fractions, overlap).map { "\($0),\($1)" }.joined(separator: "\n") + "\n",
            to: dir + "/stability.csv")
        let plot = LinePlot(
            title: "Stability of sentence-level core neurons", xLabel: "fraction of the prompt seen",
            yLabel: "overlap with the final core set",
            series: [.init("core overlap", points: zip(fractions, overlap).map { ($0, $1) }, color: LinePlot.color(0))],
            xRange: 0...1.02, yRange: 0...1.02)
        try plot.write(to: dir + "/stability.png")
        let summary: [(String, Double)] = [
            ("texts", Double(texts.count)), ("converted_layers", Double(layers.count)), ("beta", o.beta), ("alpha", o.alpha),
            ("stability_overlap_at_50pct", overlap[4]), ("stability_overlap_at_80pct", overlap[7]),
            ("jaccard_within_topic", mean(within)), ("jaccard_across_topics", mean(across)),
            ("perplexity_dense", pplDense), ("perplexity_sparse", pplSparse),
            ("greedy_agreement", Double(agree) / Double(max(compared, 1))),
        ]
        try AtomicFile.write("metric,value\n" + summary.map { "\($0.0),\($0.1)" }.joined(separator: "\n") + "\n", to: dir + "/analysis.csv")
        return Response(
            result: .object(Dictionary(uniqueKeysWithValues: summary.map { ($0.0, JSONValue.number($0.1)) })),
            artifacts: ["analysis.csv", "stability.csv"] + Figure.files("stability.png"))
    }
}
