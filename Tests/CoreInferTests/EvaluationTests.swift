import CoreInfer
import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing
import Text

/// `evaluate`: multiple-choice log-likelihoods against the test's own computation from full-sequence
/// logits, the harness's whitespace split, the text metrics on hand-worked strings, bad lines named,
/// β = 1 stability equal to dense.
@Suite struct CoreInferEvaluationTests {
    static let folder = TestPaths.sourceRoot + "/Plugins/CoreInfer/Resources/tiny-llama"

    /// Two questions for the embedded model (it memorised "The planets move around the sun …" and
    /// "Knead the dough for ten minutes and leave it to rise in a warm place for an hour."). Question 0
    /// has a context with a trailing space (the harness moves it into the continuation). Question 1's
    /// gold is a long, less likely continuation against a two-character one: its sum of log-probs is
    /// lower (acc picks the short one) but per character higher (acc_norm picks gold).
    static let questions = [
        (context: "The planets move around the ", choices: ["sun", "oven"], gold: 0),
        (context: "Knead the dough for ten minutes and leave it to", choices: [" x", " bake in a hot oven until the edges turn brown and crisp"], gold: 1),
    ]

    func writeTask(_ dir: TempDir) throws -> String {
        let path = dir.path + "/two.jsonl"
        let lines = try Self.questions.map { q -> String in
            let data = try JSONSerialization.data(withJSONObject: ["context": q.context, "choices": q.choices, "gold": q.gold], options: [.sortedKeys])
            return String(decoding: data, as: UTF8.self)
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The CSV rows of one mode: (loglikelihoods, continuation token counts, acc, acc_norm).
    func rows(_ csvPath: String, mode: String) throws -> [(lls: [Double], tokens: [Int], acc: Int, accNorm: Int)] {
        let text = try String(contentsOfFile: csvPath, encoding: .utf8)
        var out: [(lls: [Double], tokens: [Int], acc: Int, accNorm: Int)] = []
        for line in text.split(separator: "\n").dropFirst() {
            let f: [String] = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard f.count == 11, f[2] == mode else { continue }
            let lls: [Double] = f[8].split(separator: ";").compactMap { Double($0) }
            let tokens: [Int] = f[9].split(separator: ";").compactMap { Int($0) }
            out.append((lls, tokens, Int(f[6]) ?? -1, Int(f[7]) ?? -1))
        }
        return out
    }

    /// Expected values computed here: the harness's `_encode_pair` by hand (context "…the " →
    /// context "…the", continuation " sun"), one forward of the whole sequence context + continuation
    /// from an empty cache, and Σ log-softmax over the continuation's positions in double precision.
    @Test func multipleChoiceMatchesHandComputedLogProbs() throws {
        let dir = TempDir("coreinfer-eval")
        let task = try writeTask(dir)
        let model = try DecoderLM(folder: Self.folder)
        let tokenizer = try Tokenizers.load(folder: Self.folder)
        let v = model.config.vocabSize
        var expected: [[Double]] = [], expectedTokens: [[Int]] = []
        for q in Self.questions {
            var lls: [Double] = [], counts: [Int] = []
            for choice in q.choices {
                // The harness's whitespace rule, written out: a trailing space of the context goes to the continuation.
                var context = q.context, continuation = choice
                while context.hasSuffix(" ") {
                    context.removeLast()
                    continuation = " " + continuation
                }
                let contextIDs = tokenizer.encode(context, addSpecial: false)
                let whole = tokenizer.encode(context + continuation, addSpecial: false)
                let ids = Array(whole.dropFirst(contextIDs.count))
                let logits = try model.forward(contextIDs + ids, cache: model.makeCache(), allLogits: true)
                var sum = 0.0
                for (j, target) in ids.enumerated() {
                    let row = Array(logits[((contextIDs.count - 1 + j) * v)..<((contextIDs.count + j) * v)]).map(Double.init)
                    let m = row.max()!
                    sum += row[Int(target)] - m - log(row.reduce(0) { $0 + exp($1 - m) })
                }
                lls.append(sum)
                counts.append(ids.count)
            }
            expected.append(lls)
            expectedTokens.append(counts)
        }
        // The split moved the space: the scored ids are those of " sun" (space-led), not of "sun".
        let sun = tokenizer.encode(" sun", addSpecial: false)
        #expect(expectedTokens[0][0] == sun.count && sun != tokenizer.encode("sun", addSpecial: false))
        #expect(Array(tokenizer.encode("The planets move around the sun", addSpecial: false).suffix(sun.count)) == sun)
        // acc and acc_norm disagree on question 1 (the point of choosing it), agree on question 0.
        func argmax(_ x: [Double]) -> Int { x.indices.reduce(0) { x[$1] > x[$0] ? $1 : $0 } }
        let norm1 = zip(expected[1], Self.questions[1].choices).map { $0 / Double($1.unicodeScalars.count) }
        #expect(argmax(expected[1]) == 0 && argmax(norm1) == 1, "question 1: lls \(expected[1]), per character \(norm1)")
        #expect(argmax(expected[0]) == 0)

        for share in ["true", "false"] {
            let out = dir.sub("run-\(share)")
            let r = try CLI().run(
                "run", "coreinfer", "evaluate", "--set", "task=\(task)", "--set", "modes=dense", "--set", "share_prefill=\(share)", "--out", out, "--json")
            #expect(r.status == 0, "\(r.stderr)")
            let got = try rows(out + "/two.csv", mode: "dense")
            #expect(got.count == 2)
            for (q, row) in got.enumerated() {
                #expect(row.tokens == expectedTokens[q])
                for (a, b) in zip(row.lls, expected[q]) { #expect(abs(a - b) < 2e-4, "question \(q): \(row.lls) vs \(expected[q])") }
            }
            #expect(got[0].acc == 1 && got[0].accNorm == 1)
            #expect(got[1].acc == 0 && got[1].accNorm == 1)
            let m = try JSONValue.parse(r.stdout)["result"]!["tasks"]!["two"]!["modes"]!["dense"]!
            #expect(m["acc"]?.doubleValue == 0.5 && m["acc_norm"]?.doubleValue == 1)
            // ASCII choices: bytes = characters, so the byte-normalised accuracy is the same.
            #expect(m["acc_norm_bytes"]?.doubleValue == 1)
            #expect(FileManager.default.fileExists(atPath: out + "/accuracy.png"))
        }
    }

    /// β = 1 keeps every counted neuron; with α = 1 every neuron of these contexts is counted (the run
    /// reports kept_fraction 1), so the sparse FFN is the dense one: identical log-likelihoods.
    @Test func fullStabilityEqualsDense() throws {
        let dir = TempDir("coreinfer-eval-full")
        let task = try writeTask(dir)
        let r = try CLI().run(
            "run", "coreinfer", "evaluate", "--set", "task=\(task)", "--set", "modes=dense,stability", "--set", "beta=1", "--set", "alpha=1",
            "--set", "start=0", "--set", "end=4", "--out", dir.sub("o"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let m = try JSONValue.parse(r.stdout)["result"]!["tasks"]!["two"]!["modes"]!
        #expect(m["stability"]?["kept_fraction"]?.doubleValue == 1)
        let dense = try rows(dir.sub("o") + "/two.csv", mode: "dense"), sparse = try rows(dir.sub("o") + "/two.csv", mode: "stability")
        #expect(dense.map(\.lls) == sparse.map(\.lls))
        // And a real core set (β = 0.4) changes them: the comparison above can fail.
        let s = try CLI().run(
            "run", "coreinfer", "evaluate", "--set", "task=\(task)", "--set", "modes=dense,stability", "--set", "start=0", "--set", "end=4",
            "--out", dir.sub("s"), "--json")
        #expect(s.status == 0, "\(s.stderr)")
        #expect(try rows(dir.sub("s") + "/two.csv", mode: "dense").map(\.lls) != rows(dir.sub("s") + "/two.csv", mode: "stability").map(\.lls))
    }

    /// The shipped tasks on the embedded model: both kinds run in both modes, the scores are fractions,
    /// the memorised corpus is mostly answered.
    @Test func shippedTasksRun() throws {
        let dir = TempDir("coreinfer-eval-shipped")
        let r = try CLI().run("run", "coreinfer", "evaluate", "--set", "start=0", "--set", "end=4", "--out", dir.sub("o"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let t = try JSONValue.parse(r.stdout)["result"]!["tasks"]!
        let acc = t["corpus_choice"]?["modes"]?["dense"]?["acc"]?.doubleValue ?? -1
        #expect(acc >= 0.6 && acc <= 1, "dense acc \(acc)")
        for mode in ["dense", "stability"] {
            let g = t["corpus_completion"]?["modes"]?[mode]
            for key in ["exact_match", "rouge_l"] { #expect((0...1).contains(g?[key]?.doubleValue ?? -1), "\(mode) \(key)") }
            #expect((0...100).contains(g?["bleu"]?.doubleValue ?? -1))
            #expect((g?["decode_tokens_per_s"]?.doubleValue ?? 0) > 0 && (0...1).contains(g?["ffn_share"]?.doubleValue ?? -1))
        }
        #expect(t["corpus_completion"]?["modes"]?["stability"]?["speedup"]?.doubleValue != nil)
        let csv = try String(contentsOfFile: dir.sub("o") + "/corpus_completion.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 1 + 2 * 10)
    }

    /// Mode similarity through `evaluate`: clusters from the `cluster` operation on the embedded
    /// corpus, then each question's context picks its cluster; the continuation is scored on that
    /// cluster's neurons (a fraction of d_ff, so the log-likelihoods differ from dense's).
    @Test func similarityModeUsesTheClusters() throws {
        let dir = TempDir("coreinfer-eval-sim")
        let cli = CLI()
        let c = try cli.run("run", "coreinfer", "cluster", "--set", "start=0", "--set", "end=4", "--out", dir.sub("c"))
        #expect(c.status == 0, "\(c.stderr)")
        let path = try writeTask(dir)
        let r = try cli.run(
            "run", "coreinfer", "evaluate", "--set", "task=\(path)", "--set", "modes=dense,similarity", "--set", "clusters=\(dir.sub("c"))/clusters.json",
            "--set", "start=0", "--set", "end=4", "--out", dir.sub("e"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let m = try JSONValue.parse(r.stdout)["result"]!["tasks"]!["two"]?["modes"]?["similarity"]
        let kept = m?["kept_fraction"]?.doubleValue ?? -1
        #expect(kept > 0 && kept < 1, "kept fraction \(kept)")
        #expect((0...1).contains(m?["acc"]?.doubleValue ?? -1))
        #expect(try rows(dir.sub("e") + "/two.csv", mode: "dense").map(\.lls) != rows(dir.sub("e") + "/two.csv", mode: "similarity").map(\.lls))
    }

    /// Generation on the embedded model: the stop string cuts the prediction before it ("." here, as the
    /// release), the few-shot header and options are honoured (asking for more examples than given is
    /// refused), and the memorised completions score EM 1 with ROUGE-L 1.
    @Test func generationStopsAndFewShotOptions() throws {
        let dir = TempDir("coreinfer-eval-gen")
        let cli = CLI()
        let path = dir.path + "/gen.jsonl"
        try """
        {"template": "{input}", "examples": [{"input": "Slice the bread thinly,", "target": "brush it with oil and toast it under the grill."}], "num_fewshot": 0}
        {"input": "The planets move around the sun", "target": "in orbits that are nearly circles"}
        {"input": "Knead the dough for ten minutes", "target": "and leave it to rise in a warm place for an hour"}

        """.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try cli.run("run", "coreinfer", "evaluate", "--set", "task=\(path)", "--set", "modes=dense", "--set", "stop=.", "--out", dir.sub("o"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let m = try JSONValue.parse(r.stdout)["result"]!["tasks"]!["gen"]!
        #expect(m["num_fewshot"]?.intValue == 0)
        #expect(m["modes"]?["dense"]?["exact_match"]?.doubleValue == 1 && m["modes"]?["dense"]?["rouge_l"]?.doubleValue == 1)
        let csv = try String(contentsOfFile: dir.sub("o") + "/gen.csv", encoding: .utf8)
        #expect(csv.contains(",dense,in orbits that are nearly circles,in orbits that are nearly circles,1.0,1.0,"), "\(csv)")
        let tooMany = try cli.run("run", "coreinfer", "evaluate", "--set", "task=\(path)", "--set", "modes=dense", "--set", "num_fewshot=2")
        #expect(tooMany.status != 0 && tooMany.stderr.contains("num_fewshot=2 but \(path) has 1 few-shot examples"))
        let shots = dir.path + "/shots.jsonl"
        try "{\"input\": \"a\", \"target\": \"b\"}\n{\"input\": \"c\"}\n".write(toFile: shots, atomically: true, encoding: .utf8)
        let badShots = try cli.run("run", "coreinfer", "evaluate", "--set", "task=\(path)", "--set", "examples=\(shots)")
        #expect(badShots.status != 0 && badShots.stderr.contains(shots + ":2: 'input' and 'target' must be strings"))
    }

    @Test func badLinesAreNamedByFileAndLine() throws {
        let dir = TempDir("coreinfer-eval-bad")
        let cli = CLI()
        let cases: [(String, String)] = [
            (
                "{\"context\": \"a\", \"choices\": [\" b\"], \"gold\": 0}\n{\"context\": \"a\", \"choices\": [\" b\", \" c\"]}\n",
                ":2: 'gold' must be an integer"
            ),
            ("{\"context\": \"a\", \"choices\": [\" b\"], \"gold\": 0}\n\n{not json\n", ":3: not valid JSON"),
            ("{\"context\": \"a\", \"choices\": [\" b\"], \"gold\": 3}\n", ":1: 'gold' must be an integer index in 0..<1"),
            ("{\"input\": \"a\", \"target\": \"b\"}\n{\"input\": \"a\"}\n", ":2: 'input' and 'target' must be strings"),
            ("{\"template\": \"no placeholder\"}\n{\"input\": \"a\", \"target\": \"b\"}\n", ":1: 'template' must be a string containing {input}"),
        ]
        for (i, (text, message)) in cases.enumerated() {
            let path = dir.path + "/bad\(i).jsonl"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let r = try cli.run("run", "coreinfer", "evaluate", "--set", "task=\(path)", "--set", "modes=dense")
            #expect(r.status != 0 && r.stderr.contains(path + message), "case \(i): \(r.stderr)")
        }
        let sim = try cli.run("run", "coreinfer", "evaluate", "--set", "modes=dense,similarity")
        #expect(sim.status != 0 && sim.stderr.contains("similarity needs --set clusters="))
    }

    /// SQuAD normalisation: lowercase, punctuation out, articles out as words, spaces collapsed.
    @Test func exactMatchByHand() {
        #expect(TextMetrics.normalizeAnswer("  The Sun, in ORBIT! ") == "sun in orbit")
        #expect(TextMetrics.normalizeAnswer("an apple a day; theater") == "apple day theater") // "theater" keeps its "the"
        #expect(TextMetrics.exactMatch("the sun.", "Sun") == 1)
        #expect(TextMetrics.exactMatch("a sun", "suns") == 0)
    }

    /// ROUGE-L by hand. "the cat sat on the mat" vs "the cat is on the mat": LCS = the cat on the mat = 5
    /// of 6 and 6 tokens, P = R = F = 5/6. "Cats, dogs!" → [cats, dogs] vs "dogs and cats" → [dogs,
    /// and, cats]: LCS = 1, P = 1/2, R = 1/3, F = 2·(1/6)/(5/6) = 0.4. Non-alphanumerics split words:
    /// "e-mail" → [e, mail].
    @Test func rougeLByHand() {
        #expect(abs(TextMetrics.rougeL("the cat sat on the mat", "the cat is on the mat") - 5.0 / 6) < 1e-12)
        #expect(abs(TextMetrics.rougeL("Cats, dogs!", "dogs and cats") - 0.4) < 1e-12)
        #expect(TextMetrics.rougeTokens("E-mail me at 9am.") == ["e", "mail", "me", "at", "9am"])
        #expect(TextMetrics.rougeL("", "x") == 0 && TextMetrics.rougeL("a", "b") == 0)
    }

    /// 13a tokens and corpus BLEU by hand (sacrebleu's defaults).
    ///   - "the cat sat on the mat" vs "the cat sat on a mat": 1-grams 5/6 (one "the" clipped), 2-grams
    ///     3/5 (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3, c = r = 6 (BP 1):
    ///     BLEU = 100·(5/6 · 3/5 · 2/4 · 1/3)^(1/4) = 100·(1/12)^(1/4) = 53.7284965…
    ///   - "the dog sat on a mat" vs "the cat sat on the mat": 1-grams 4/6, 2-grams 1/5, 3-grams 0/4 →
    ///     exp smoothing 100/(2·4) = 12.5, 4-grams 0/3 → 100/(4·3): BLEU = (66.67·20·12.5·8.333)^(1/4) =
    ///     (1,388,888.9/10)^(1/4) = 19.3049…
    ///   - "the cat sat on" vs "the cat sat on the mat": every precision 100, c = 4 < r = 6:
    ///     BP = exp(1 − 6/4) = 0.6065307: BLEU = 60.65307.
    @Test func bleuByHand() {
        #expect(
            TextMetrics.tokenize13a("Hello, world. It's 3.14 and 1,000 (e-mail) 5-3") == [
                "Hello", ",", "world", ".", "It's", "3.14", "and", "1,000", "(", "e-mail", ")", "5", "-", "3",
            ])
        #expect(abs(TextMetrics.corpusBLEU(["the cat sat on the mat"], ["the cat sat on a mat"]) - 100 * pow(1.0 / 12, 0.25)) < 1e-9)
        let smoothed = pow((100.0 * 4 / 6) * (100.0 / 5) * 12.5 * (100.0 / 12), 0.25)
        #expect(abs(TextMetrics.corpusBLEU(["the dog sat on a mat"], ["the cat sat on the mat"]) - smoothed) < 1e-9)
        #expect(abs(smoothed - 19.3049) < 1e-3)
        #expect(abs(TextMetrics.corpusBLEU(["the cat sat on"], ["the cat sat on the mat"]) - 100 * exp(-0.5)) < 1e-9)
        // A corpus pools the counts: the two sentences above together are not the mean of their scores.
        let s = TextMetrics.bleuStatistics(["the cat sat on the mat", "the cat sat on"], ["the cat sat on a mat", "the cat sat on the mat"])
        #expect(s.correct == [9, 6, 4, 2] && s.total == [10, 8, 6, 4] && s.hypothesisLength == 10 && s.referenceLength == 12)
    }
}
