import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Text

/// Task evaluation (`evaluate`): the paper's claim is accuracy kept at a speed-up, so each task runs
/// densely and on core neurons side by side, with accuracy, tokens/s and the FFN's share of the time.
///
/// Multiple choice, as lm-evaluation-harness's `loglikelihood` requests and `multiple_choice`
/// metrics: a line {"context", "choices", "gold"}; per choice the pair is encoded as the harness's
/// `_encode_pair` (the context's trailing whitespace moves to the front of the continuation; the
/// continuation's ids are encode(context + continuation) after the first |encode(context)| ids; no
/// special tokens, an empty context becomes [BOS], else [EOS]); loglikelihood = Σ log-softmax of the
/// continuation's ids given everything before; acc = [argmax ll == gold]; acc_norm = [argmax ll / len
/// == gold] with len the choice's length in Unicode scalars (the harness's Python len of the choice
/// string). The context is run once and each choice continues from its cached keys and values.
///
/// Generation: a line {"input", "target"} (optionally a first header line {"template", "examples",
/// "target_delimiter", "fewshot_delimiter", "num_fewshot"}); prompt = the few-shot examples, each
/// template(input) + target_delimiter + target, joined and followed by fewshot_delimiter, then
/// template(input); greedy decoding until max_new_tokens, an end-of-sequence id or a stop string
/// (the prediction is the text before it, as the harness's `until`); exact match, ROUGE-L, BLEU
/// (`TextMetrics`).
///
/// Sparse modes: the prompt (the context) runs densely and chooses the core set of that example,
/// which then runs every later token: the generated ones, and in multiple choice the continuation's.
struct ChoiceItem {
    var context: String, choices: [String], gold: Int, line: Int
}

struct GenerationItem {
    var input: String, target: String, line: Int
}

struct FewShot {
    var template = "{input}"
    var examples: [(input: String, target: String)] = []
    var targetDelimiter = " ", fewshotDelimiter = "\n\n"
    /// The header's default number of examples used (nil: all).
    var shots: Int?

    func prompt(_ input: String, shots: Int) -> String {
        let fill = { (s: String) in template.replacingOccurrences(of: "{input}", with: s) }
        let used = examples.prefix(shots)
        if used.isEmpty { return fill(input) }
        return used.map { fill($0.input) + targetDelimiter + $0.target }.joined(separator: fewshotDelimiter) + fewshotDelimiter + fill(input)
    }
}

struct EvalTask {
    enum Kind {
        case choice([ChoiceItem])
        case generation([GenerationItem], FewShot)
    }
    var name: String, path: String, kind: Kind
}

/// Reads task files: one JSONL file, or every `*.jsonl` of a folder (sorted by name). Every line is
/// checked; an error names file:line and the expected shape.
enum TaskFiles {
    static let choiceShape = "{\"context\": string, \"choices\": [string, …], \"gold\": integer index of the right choice}"
    static let generationShape = "{\"input\": string, \"target\": string}"

    static func load(_ given: String) throws -> [EvalTask] {
        let path = (given as NSString).expandingTildeInPath
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw MenagerieError.invalidArgument("task: \(path) does not exist (a .jsonl file or a folder of them)")
        }
        var files = [path]
        if isFolder.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            files = names.filter { $0.hasSuffix(".jsonl") }.sorted().map { path + "/" + $0 }
            guard !files.isEmpty else { throw MenagerieError.invalidArgument("task: the folder \(path) holds no .jsonl file") }
        }
        return try files.map(loadFile)
    }

    static func lines(_ path: String) throws -> [(number: Int, value: JSONValue)] {
        let text: String
        do { text = try RegularFile.text(path, limit: 1 << 28) } catch { throw MenagerieError.invalidArgument("task: \(error)") }
        var out: [(Int, JSONValue)] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            let value: JSONValue
            do { value = try JSONValue.parse(line, source: "\(path):\(i + 1)") } catch {
                throw MenagerieError.invalidArgument("\(path):\(i + 1): not valid JSON (\(error)); each line must be one JSON object")
            }
            guard value.objectValue != nil else { throw MenagerieError.invalidArgument("\(path):\(i + 1): a JSON object is expected on each line") }
            out.append((i + 1, value))
        }
        guard !out.isEmpty else { throw MenagerieError.invalidArgument("\(path): no task lines (JSONL: one JSON object per line)") }
        return out
    }

    static func isHeader(_ v: JSONValue) -> Bool {
        v["input"] == nil && v["context"] == nil
            && (v["template"] != nil || v["examples"] != nil || v["target_delimiter"] != nil || v["fewshot_delimiter"] != nil
                || v["num_fewshot"] != nil)
    }

    static func loadFile(_ path: String) throws -> EvalTask {
        var rows = try lines(path)
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        var fewShot = FewShot()
        var header = false
        if let first = rows.first, isHeader(first.value) {
            fewShot = try parseHeader(first.value, at: "\(path):\(first.number)")
            rows.removeFirst()
            header = true
        }
        guard let first = rows.first else { throw MenagerieError.invalidArgument("\(path): only a header line, no task lines") }
        if first.value["choices"] != nil || first.value["context"] != nil {
            guard !header else {
                throw MenagerieError.invalidArgument("\(path):\(first.number): a few-shot header belongs to a generation task ({\"input\", \"target\"} lines)")
            }
            return EvalTask(name: name, path: path, kind: .choice(try rows.map { try choiceItem($0.value, at: "\(path):\($0.number)", line: $0.number) }))
        }
        return EvalTask(
            name: name, path: path, kind: .generation(try rows.map { try generationItem($0.value, at: "\(path):\($0.number)", line: $0.number) }, fewShot))
    }

    static func choiceItem(_ v: JSONValue, at place: String, line: Int) throws -> ChoiceItem {
        guard let context = v["context"]?.stringValue else {
            throw MenagerieError.invalidArgument("\(place): 'context' must be a string; a line is \(choiceShape)")
        }
        guard let raw = v["choices"]?.arrayValue, !raw.isEmpty else {
            throw MenagerieError.invalidArgument("\(place): 'choices' must be a non-empty list of strings; a line is \(choiceShape)")
        }
        let choices = raw.compactMap(\.stringValue)
        guard choices.count == raw.count, !choices.contains(where: \.isEmpty) else {
            throw MenagerieError.invalidArgument("\(place): every choice must be a non-empty string")
        }
        guard let gold = v["gold"]?.intValue, gold >= 0, gold < choices.count else {
            throw MenagerieError.invalidArgument(
                "\(place): 'gold' must be an integer index in 0..<\(choices.count) (the right choice); a line is \(choiceShape)")
        }
        return ChoiceItem(context: context, choices: choices, gold: gold, line: line)
    }

    static func generationItem(_ v: JSONValue, at place: String, line: Int) throws -> GenerationItem {
        guard let input = v["input"]?.stringValue, let target = v["target"]?.stringValue else {
            throw MenagerieError.invalidArgument("\(place): 'input' and 'target' must be strings; a line is \(generationShape) (or \(choiceShape))")
        }
        return GenerationItem(input: input, target: target, line: line)
    }

    static func parseHeader(_ v: JSONValue, at place: String) throws -> FewShot {
        var f = FewShot()
        if let t = v["template"] {
            guard let s = t.stringValue, s.contains("{input}") else {
                throw MenagerieError.invalidArgument("\(place): 'template' must be a string containing {input}")
            }
            f.template = s
        }
        for (key, set) in [("target_delimiter", { (s: String) in f.targetDelimiter = s }), ("fewshot_delimiter", { f.fewshotDelimiter = $0 })] {
            if let d = v[key] {
                guard let s = d.stringValue else { throw MenagerieError.invalidArgument("\(place): '\(key)' must be a string") }
                set(s)
            }
        }
        if let n = v["num_fewshot"] {
            guard let k = n.intValue, k >= 0 else { throw MenagerieError.invalidArgument("\(place): 'num_fewshot' must be an integer ≥ 0") }
            f.shots = k
        }
        if let e = v["examples"] {
            guard let list = e.arrayValue else { throw MenagerieError.invalidArgument("\(place): 'examples' must be a list of \(generationShape)") }
            f.examples = try list.enumerated().map { i, x in
                let item = try generationItem(x, at: "\(place) examples[\(i)]", line: 0)
                return (item.input, item.target)
            }
        }
        return f
    }

    /// A separate few-shot file: JSONL of {"input", "target"}.
    static func examples(_ given: String) throws -> [(input: String, target: String)] {
        let path = (given as NSString).expandingTildeInPath
        return try lines(path).map { row in
            let item = try generationItem(row.value, at: "\(path):\(row.number)", line: row.number)
            return (item.input, item.target)
        }
    }
}

/// lm-evaluation-harness's `_encode_pair`: the context's trailing whitespace (Python's rstrip)
/// becomes the start of the continuation; continuation ids = encode(context + continuation) minus
/// the first |encode(context)| ids. No special tokens (the harness's causal-LM default).
func harnessEncodePair(_ context: String, _ continuation: String, tokenizer: any TextTokenizer) -> (context: [Int32], continuation: [Int32]) {
    var ctx = Array(context.unicodeScalars), cont = continuation
    let spaces = ctx.reversed().prefix { $0.properties.isWhitespace }.count
    if spaces > 0 {
        cont = String(String.UnicodeScalarView(ctx.suffix(spaces))) + cont
        ctx.removeLast(spaces)
    }
    let c = String(String.UnicodeScalarView(ctx))
    let whole = tokenizer.encode(c + cont, addSpecial: false), contextIDs = tokenizer.encode(c, addSpecial: false)
    return (contextIDs, Array(whole.dropFirst(contextIDs.count)))
}

/// log softmax(row)[target], in double precision.
func logSoftmax(_ row: ArraySlice<Float>, at target: Int) -> Double {
    let m = row.max() ?? 0
    let z = row.reduce(0.0) { $0 + Double(expf($1 - m)) }
    return Double(row[row.startIndex + target] - m) - log(z)
}

/// Timings and counts of one mode on one task.
struct ModeClock {
    var prefillTokens = 0, prefillSeconds = 0.0
    var stepTokens = 0, stepSeconds = 0.0, ffnSeconds = 0.0
    var selectSeconds = 0.0, examples = 0, keptFraction = 0.0

    func json(stepName: String) -> [String: JSONValue] {
        [
            "prefill_tokens_per_s": .number(Double(prefillTokens) / max(prefillSeconds, 1e-9)),
            stepName: .number(Double(stepTokens) / max(stepSeconds, 1e-9)),
            "ffn_share": .number(ffnSeconds / max(stepSeconds, 1e-9)),
            "core_selection_ms_per_example": .number(1000 * selectSeconds / Double(max(examples, 1))),
            "prefill_tokens": .number(Double(prefillTokens)), "step_tokens": .number(Double(stepTokens)),
            "seconds": .number(prefillSeconds + selectSeconds + stepSeconds),
        ]
    }
}

extension CoreInferComponent {
    func evaluate(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.beta > 0 && o.beta <= 1, o.alpha > 0 && o.alpha <= 1 else { throw MenagerieError.invalidArgument("alpha and beta must be in (0, 1]") }
        guard o.limit >= 0, o.max_new_tokens >= 1 else { throw MenagerieError.invalidArgument("limit must be ≥ 0 and max_new_tokens ≥ 1") }
        var modes = o.modes.isEmpty ? ["dense", "stability"] + (o.clusters.isEmpty ? [] : ["similarity"]) : o.modes
        modes = modes.map { $0.trimmingCharacters(in: .whitespaces) }
        for m in modes where !["dense", "stability", "similarity"].contains(m) {
            throw MenagerieError.invalidArgument("modes: '\(m)' is not one of dense, stability, similarity")
        }
        guard Set(modes).count == modes.count else { throw MenagerieError.invalidArgument("modes: \(modes) names a mode twice") }
        if modes.contains("similarity") && o.clusters.isEmpty {
            throw MenagerieError.invalidArgument("modes: similarity needs --set clusters=clusters.json (from the cluster operation)")
        }
        let (model, tokenizer) = try load(o.model_dir)
        let taskPath = o.task.isEmpty ? try PluginResources.path(module: "CoreInfer", item: "tasks") : o.task
        var tasks = try TaskFiles.load(taskPath)
        if !o.examples.isEmpty || !o.template.isEmpty {
            let shots = o.examples.isEmpty ? nil : try TaskFiles.examples(o.examples)
            guard o.template.isEmpty || o.template.contains("{input}") else { throw MenagerieError.invalidArgument("template must contain {input}") }
            for i in tasks.indices {
                if case .generation(let items, var f) = tasks[i].kind {
                    if let shots { f.examples = shots }
                    if !o.template.isEmpty { f.template = o.template }
                    tasks[i].kind = .generation(items, f)
                }
            }
        }
        let layers = try nonEmptyLayers(o, model)
        let stop = o.stop.isEmpty ? ["\n"] : o.stop
        defer {
            for l in 0..<model.config.layers { try? model.setSparse(layer: l, neurons: nil) }
            model.activationHook = nil
            model.ffnTimer = nil
        }
        let dir = request.host.scratchDirectory
        var taskResults: [String: JSONValue] = [:], artifacts: [String] = []
        var chartCategories: [String] = [], chartValues: [String: [Double]] = [:]
        let total =
            tasks.reduce(0) { n, t in
                switch t.kind {
                case .choice(let items): return n + min(items.count, o.limit > 0 ? o.limit : items.count)
                case .generation(let items, _): return n + min(items.count, o.limit > 0 ? o.limit : items.count)
                }
            } * modes.count
        var done = 0
        // Similarity: the clusters are read once; each example's prompt picks its nearest cluster.
        let selection = modes.contains("similarity") ? try similaritySelection(o, model: model, layers: layers) : nil
        let context = EvalContext(component: self, model: model, tokenizer: tokenizer, layers: layers, options: o, selection: selection)
        for task in tasks {
            var perMode: [String: JSONValue] = [:], csv: [String] = []
            switch task.kind {
            case .choice(let all):
                let items = o.limit > 0 ? Array(all.prefix(o.limit)) : all
                csv.append("example,line,mode,gold,prediction,prediction_norm,acc,acc_norm,loglikelihoods,continuation_tokens,choice_lengths")
                for mode in modes {
                    var clock = ModeClock(), acc = 0.0, accNorm = 0.0, accBytes = 0.0
                    for (i, item) in items.enumerated() {
                        try request.host.checkCancelled()
                        let r = try context.scoreChoices(item, mode: mode, path: task.path, clock: &clock)
                        acc += r.pred == item.gold ? 1 : 0
                        accNorm += r.predNorm == item.gold ? 1 : 0
                        accBytes += r.predBytes == item.gold ? 1 : 0
                        csv.append(
                            [
                                "\(i)", "\(item.line)", mode, "\(item.gold)", "\(r.pred)", "\(r.predNorm)", r.pred == item.gold ? "1" : "0",
                                r.predNorm == item.gold ? "1" : "0", r.lls.map { "\($0)" }.joined(separator: ";"),
                                r.tokens.map { "\($0)" }.joined(separator: ";"), item.choices.map { "\($0.unicodeScalars.count)" }.joined(separator: ";"),
                            ].joined(separator: ","))
                        done += 1
                        request.host.progress(done, of: total, "\(task.name) \(mode)")
                    }
                    var m = clock.json(stepName: "score_tokens_per_s")
                    m["acc"] = .number(acc / Double(items.count))
                    m["acc_norm"] = .number(accNorm / Double(items.count))
                    m["acc_norm_bytes"] = .number(accBytes / Double(items.count))
                    if mode != "dense" { m["kept_fraction"] = .number(clock.keptFraction / Double(max(clock.examples, 1))) }
                    perMode[mode] = .object(m)
                    chartValues[mode, default: []] += [acc / Double(items.count), accNorm / Double(items.count)]
                }
                chartCategories += ["\(task.name) acc", "\(task.name) acc_norm"]
                taskResults[task.name] = .object(["kind": "multiple_choice", "examples": .number(Double(items.count)), "modes": .object(perMode)])
            case .generation(let all, let fewShot):
                let items = o.limit > 0 ? Array(all.prefix(o.limit)) : all
                let shots = o.num_fewshot >= 0 ? o.num_fewshot : (fewShot.shots ?? fewShot.examples.count)
                guard shots <= fewShot.examples.count else {
                    throw MenagerieError.invalidArgument(
                        "num_fewshot=\(shots) but \(task.path) has \(fewShot.examples.count) few-shot examples (header 'examples' or --set examples=)")
                }
                csv.append("example,line,mode,prediction,target,exact_match,rouge_l,generated_tokens")
                for mode in modes {
                    var clock = ModeClock(), em = 0.0, rouge = 0.0, predictions: [String] = []
                    for (i, item) in items.enumerated() {
                        try request.host.checkCancelled()
                        let prompt = fewShot.prompt(item.input, shots: shots)
                        let (prediction, generated) = try context.generate(prompt, mode: mode, stop: stop, place: "\(task.path):\(item.line)", clock: &clock)
                        let e = TextMetrics.exactMatch(prediction, item.target), r = TextMetrics.rougeL(prediction, item.target)
                        em += e
                        rouge += r
                        predictions.append(prediction)
                        csv.append(
                            ["\(i)", "\(item.line)", mode, csvField(prediction), csvField(item.target), "\(e)", "\(r)", "\(generated)"].joined(separator: ","))
                        done += 1
                        request.host.progress(done, of: total, "\(task.name) \(mode)")
                    }
                    var m = clock.json(stepName: "decode_tokens_per_s")
                    m["exact_match"] = .number(em / Double(items.count))
                    m["rouge_l"] = .number(rouge / Double(items.count))
                    m["bleu"] = .number(TextMetrics.corpusBLEU(predictions, items.map(\.target)))
                    if mode != "dense" { m["kept_fraction"] = .number(clock.keptFraction / Double(max(clock.examples, 1))) }
                    perMode[mode] = .object(m)
                    chartValues[mode, default: []] += [em / Double(items.count), rouge / Double(items.count)]
                }
                chartCategories += ["\(task.name) EM", "\(task.name) ROUGE-L"]
                taskResults[task.name] = .object([
                    "kind": "generation", "examples": .number(Double(items.count)), "num_fewshot": .number(Double(shots)), "modes": .object(perMode),
                ])
            }
            // Speed-ups over dense, per mode.
            if case .object(let dense)? = perMode["dense"], var t = taskResults[task.name]?.objectValue, var ms = t["modes"]?.objectValue {
                let key = dense["decode_tokens_per_s"] != nil ? "decode_tokens_per_s" : "score_tokens_per_s"
                for (mode, v) in ms where mode != "dense" {
                    guard var m = v.objectValue, let s = m[key]?.doubleValue, let d = dense[key]?.doubleValue, d > 0 else { continue }
                    m["speedup"] = .number(s / d)
                    ms[mode] = .object(m)
                }
                t["modes"] = .object(ms)
                taskResults[task.name] = .object(t)
            }
            let name = "\(task.name).csv"
            try AtomicFile.write(csv.joined(separator: "\n") + "\n", to: dir + "/" + name)
            artifacts.append(name)
        }
        var chart = BarChart(
            title: "CoreInfer: task scores per mode", xLabel: "task and metric", yLabel: "score (fraction)", categories: chartCategories,
            series: modes.map { ($0, chartValues[$0] ?? []) })
        chart.yRange = 0...1.1
        // Room for the longest "task metric" tick label under each group (about 7.5 px a character).
        let longest = Double(chartCategories.map(\.count).max() ?? 10)
        chart.width = max(560, max(110, 7.5 * longest + 24) * Double(chartCategories.count) + 120)
        try chart.write(to: dir + "/accuracy.png")
        artifacts += Figure.files("accuracy.png")
        return Response(
            result: .object([
                "tasks": .object(taskResults), "modes": .array(modes.map { .string($0) }),
                "converted_layers": .array(layers.map { .number(Double($0)) }), "alpha": .number(o.alpha), "beta": .number(o.beta),
                "share_prefill": .bool(o.share_prefill), "stop": .array(stop.map { .string($0) }),
            ]),
            artifacts: artifacts)
    }
}

/// One model's evaluation state: dense prefill, core selection and the sparse steps of each example.
struct EvalContext {
    let component: CoreInferComponent, model: DecoderLM, tokenizer: any TextTokenizer, layers: Range<Int>
    let options: CoreInferComponent.Options
    /// The clusters and online signature rule of mode `similarity` (nil when it is not evaluated).
    let selection: SimilaritySelection?

    /// The key under which `prefill` stores the similarity signal (the signature layer's OPT fc1
    /// pre-activation or LLaMA gate_proj output) among the activations.
    static let signalKey = -1

    var dense: [DecoderLM.SparseFFN?] { Array(repeating: nil, count: model.config.layers) }

    /// Runs `ids` densely from `cache`, recording the activations the mode needs.
    func prefill(_ ids: [Int32], cache: DecoderLM.Cache, mode: String, clock: inout ModeClock) throws -> ([Float], [Int: [Float]]) {
        model.sparse = dense
        var acts: [Int: [Float]] = [:]
        let wanted = layers
        if mode == "stability" { model.activationHook = { l, a, _ in if wanted.contains(l) { acts[l] = a } } }
        if mode == "similarity", let selection {
            let layer = selection.layer
            if model.config.architecture == .llama {
                model.gateHook = { l, g, _ in if l == layer { acts[Self.signalKey] = g } }
            } else {
                model.activationHook = { l, a, _ in if l == layer { acts[Self.signalKey] = a } }
            }
        }
        defer { model.gateHook = nil }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let logits = try model.forward(ids, cache: cache)
        clock.prefillSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        clock.prefillTokens += ids.count
        model.activationHook = nil
        return (logits, acts)
    }

    /// Chooses and gathers the example's core neurons (nothing in dense mode); returns the sparse state.
    func select(_ acts: [Int: [Float]], tokens: Int, mode: String, clock: inout ModeClock) throws -> [DecoderLM.SparseFFN?] {
        guard mode != "dense" else { return dense }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let dff = model.config.intermediateSize
        var core: [Int: [Int]] = [:]
        if mode == "stability" {
            for l in layers {
                guard let a = acts[l] else { continue }
                core[l] = sentenceCoreNeurons(a, tokens: tokens, dff: dff, alpha: options.alpha, beta: options.beta)
            }
        } else {
            guard let selection, let signal = acts[Self.signalKey] else {
                throw MenagerieError.invalidArgument("modes: similarity needs --set clusters=clusters.json (from the cluster operation)")
            }
            // The nearest cluster's stored lists, whole, as `generate` uses them.
            let c = selection.nearest(signal: signal, tokens: tokens, dff: dff).cluster
            for l in layers { if let list = selection.clusters.neurons[c][l] { core[l] = list } }
        }
        for (l, list) in core { try model.setSparse(layer: l, neurons: list) }
        clock.selectSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        clock.examples += 1
        if !core.isEmpty { clock.keptFraction += core.values.reduce(0.0) { $0 + Double($1.count) / Double(dff) } / Double(core.count) }
        let state = model.sparse
        return state
    }

    /// Teacher-forced continuation steps under the current FFN state, timed with the FFN's share.
    func steps(_ ids: [Int32], cache: DecoderLM.Cache, clock: inout ModeClock) throws -> [Float] {
        guard !ids.isEmpty else { return [] }
        var ffn = 0.0
        model.ffnTimer = { ffn += $0 }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let rows = try model.forward(ids, cache: cache, allLogits: true)
        clock.stepSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        model.ffnTimer = nil
        clock.ffnSeconds += ffn
        clock.stepTokens += ids.count
        return rows
    }

    /// The harness's per-choice log-likelihoods of one question, its argmax and length-normalised argmax.
    func scoreChoices(_ item: ChoiceItem, mode: String, path: String, clock: inout ModeClock) throws -> (
        lls: [Double], pred: Int, predNorm: Int, predBytes: Int, tokens: [Int]
    ) {
        let c = model.config, v = c.vocabSize
        let pairs = item.choices.map { harnessEncodePair(item.context, $0, tokenizer: tokenizer) }
        var contextIDs = pairs[0].context
        if contextIDs.isEmpty {
            guard let prefix = c.bosTokenID ?? c.eosTokenIDs.first else {
                throw MenagerieError.invalidArgument(
                    "\(path):\(item.line): the context is empty and the model has no bos_token_id or eos_token_id to start from")
            }
            contextIDs = [Int32(prefix)]
        }
        for (k, p) in pairs.enumerated() {
            guard !p.continuation.isEmpty else {
                throw MenagerieError.invalidArgument("\(path):\(item.line): choice \(k) encodes to no token after the context")
            }
            guard contextIDs.count + p.continuation.count - 1 <= c.maxPositions else {
                throw MenagerieError.invalidArgument(
                    "\(path):\(item.line): context and choice \(k) take \(contextIDs.count + p.continuation.count - 1) positions; the model's context is \(c.maxPositions) (not truncated here)"
                )
            }
        }
        let cache = model.makeCache()
        let (last, acts) = try prefill(contextIDs, cache: cache, mode: mode, clock: &clock)
        let sparse = try select(acts, tokens: contextIDs.count, mode: mode, clock: &clock)
        var lls: [Double] = []
        for (k, p) in pairs.enumerated() {
            let ids = p.continuation
            var stepCache = cache
            if k > 0 {
                if options.share_prefill {
                    cache.truncate(to: contextIDs.count)
                } else {
                    // The measured alternative: the context again from scratch for every choice.
                    stepCache = model.makeCache()
                    var unused = ModeClock()
                    _ = try prefill(contextIDs, cache: stepCache, mode: "dense", clock: &unused)
                    clock.prefillSeconds += unused.prefillSeconds
                    clock.prefillTokens += unused.prefillTokens
                }
            }
            model.sparse = sparse
            var ll = logSoftmax(last[0..<v], at: Int(ids[0]))
            let rows = try steps(Array(ids.dropLast()), cache: stepCache, clock: &clock)
            for j in 1..<max(ids.count, 1) { ll += logSoftmax(rows[((j - 1) * v)..<(j * v)], at: Int(ids[j])) }
            lls.append(ll)
        }
        model.sparse = dense
        // np.argmax: the first maximum.
        func argmax(_ x: [Double]) -> Int { x.indices.reduce(0) { x[$1] > x[$0] ? $1 : $0 } }
        // acc_norm as the harness computes it: by len(choice), Python's count of code points; and by
        // UTF-8 bytes (`acc_norm_bytes`), which differs for non-ASCII choices.
        let lengths = item.choices.map { Double($0.unicodeScalars.count) }, bytes = item.choices.map { Double($0.utf8.count) }
        return (
            lls, argmax(lls), argmax(zip(lls, lengths).map { $0 / $1 }), argmax(zip(lls, bytes).map { $0 / $1 }), pairs.map(\.continuation.count)
        )
    }

    /// Greedy text after `prompt` until max_new_tokens, an end-of-sequence id or a stop string; the
    /// prediction is the text before the first stop string.
    func generate(_ prompt: String, mode: String, stop: [String], place: String, clock: inout ModeClock) throws -> (String, Int) {
        var ids = tokenizer.encode(prompt, addSpecial: false)
        if ids.isEmpty, let b = model.config.bosTokenID ?? model.config.eosTokenIDs.first { ids = [Int32(b)] }
        guard !ids.isEmpty, ids.count < model.config.maxPositions else {
            throw MenagerieError.invalidArgument("\(place): the prompt has \(ids.count) tokens; the model's context is \(model.config.maxPositions)")
        }
        let cache = model.makeCache()
        var (logits, acts) = try prefill(ids, cache: cache, mode: mode, clock: &clock)
        model.sparse = try select(acts, tokens: ids.count, mode: mode, clock: &clock)
        defer { model.sparse = dense }
        let eos = Set(model.config.eosTokenIDs.map(Int32.init))
        let budget = min(options.max_new_tokens, model.config.maxPositions - ids.count)
        var out: [Int32] = [], text = ""
        for _ in 0..<budget {
            let id = Int32(logits.indices.max { logits[$0] < logits[$1] || (logits[$0] == logits[$1] && $0 > $1) } ?? 0)
            if eos.contains(id) { break }
            out.append(id)
            text = tokenizer.decode(out, skipSpecial: true)
            if let cut = stop.compactMap({ s in s.isEmpty ? nil : text.range(of: s) }).min(by: { $0.lowerBound < $1.lowerBound }) {
                text = String(text[..<cut.lowerBound])
                return (text.trimmingCharacters(in: .whitespacesAndNewlines), out.count)
            }
            if out.count == budget { break }
            logits = try steps([id], cache: cache, clock: &clock)
        }
        return (text.trimmingCharacters(in: .whitespacesAndNewlines), out.count)
    }
}
