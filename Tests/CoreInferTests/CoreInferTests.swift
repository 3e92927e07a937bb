import CoreInfer
import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing
import Text

/// CoreInfer's stability-guided core sets against the fixtures (α = 0.2, β = 0.4, every layer), and
/// `generate` through the CLI: dense greedy text equals transformers', sparse decoding keeps the
/// chosen fraction of neurons, bad inputs are named.
@Suite struct CoreInferTests {
    struct Prompt: Decodable {
        let input_ids: [Int32]
        let core_neurons: [String: [Int]]
        let greedy_text: String
        let text: String
    }
    struct ShortPrompt: Decodable {
        let input_ids: [Int32]
        let core_neurons: [String: [Int]]
        let core_neurons_padded: [String: [Int]]
    }
    struct Expected: Decodable {
        let prompts: [Prompt]
        let short_prompt: ShortPrompt
    }

    func expected(_ name: String) throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/\(name)/expected.json")))
    }

    @Test(arguments: ["opt-tiny", "llama-tiny"])
    func coreSetsMatchTheFixture(_ name: String) throws {
        let model = try DecoderLM(folder: TestPaths.fixtures + "/" + name)
        let dff = model.config.intermediateSize
        for p in try expected(name).prompts {
            var activations: [Int: [Float]] = [:]
            model.activationHook = { l, a, _ in activations[l] = a }
            _ = try model.forward(p.input_ids, cache: model.makeCache())
            for (layer, want) in p.core_neurons {
                let ours = sentenceCoreNeurons(activations[Int(layer)!]!, tokens: p.input_ids.count, dff: dff, alpha: 0.2, beta: 0.4)
                #expect(ours == want, "\(name) layer \(layer): \(ours.count) vs \(want.count) neurons")
            }
        }
    }

    /// A 4-token prompt counts fewer distinct neurons than int(β · d_ff): the released rule keeps only
    /// the counted ones (fixture `short_prompt.core_neurons`, made with the reference's selection), the
    /// earlier padded rule fills up with uncounted ones (`core_neurons_padded`). Both are checked, and
    /// that they differ, so the fixture really exercises the difference.
    @Test(arguments: ["opt-tiny", "llama-tiny"])
    func shortPromptKeepsOnlyCountedNeurons(_ name: String) throws {
        let model = try DecoderLM(folder: TestPaths.fixtures + "/" + name)
        let dff = model.config.intermediateSize
        let p = try expected(name).short_prompt
        var activations: [Int: [Float]] = [:]
        model.activationHook = { l, a, _ in activations[l] = a }
        _ = try model.forward(p.input_ids, cache: model.makeCache())
        for (layer, want) in p.core_neurons {
            let acts = activations[Int(layer)!]!
            let ours = sentenceCoreNeurons(acts, tokens: p.input_ids.count, dff: dff, alpha: 0.2, beta: 0.4)
            #expect(ours == want, "\(name) layer \(layer): \(ours.count) vs \(want.count) neurons")
            #expect(ours.count < Int(0.4 * Double(dff)))
            let padded = sentenceCoreNeurons(acts, tokens: p.input_ids.count, dff: dff, alpha: 0.2, beta: 0.4, padded: true)
            #expect(padded == p.core_neurons_padded[layer], "\(name) layer \(layer) (padded)")
        }
    }

    /// The documented tie rule, "lower index wins", on hand-made activations (OPT's ReLU zeros make
    /// such ties common). Token 0 = [1, 3, 3, 0], token 1 = [0, 0, 5, 0]: 4 positive values over 2
    /// tokens. α = 0.5 → k = 1: token 0's top 1 is the tie 3@1 / 3@2 → neuron 1; token 1's is neuron 2:
    /// counts [0, 1, 1, 0]. α = 1.5 → k = 3: token 0 → {1, 2, 0}; token 1 → 2, then the zeros tie at
    /// 0, 1, 3 → {2, 0, 1}: counts [2, 2, 2, 0]. Sentence core sets (β = 0.25 → 1 neuron) break the count
    /// tie 1 / 2 (α = 0.5) to neuron 1, and (β = 0.5 → 2 neurons) the tie 0 / 1 / 2 (α = 1.5) to [0, 1].
    @Test func tiesGoToTheLowerIndex() {
        let x: [Float] = [1, 3, 3, 0, 0, 0, 5, 0]
        #expect(tokenCoreCounts(x, tokens: 2, dff: 4, alpha: 0.5) == [0, 1, 1, 0])
        #expect(tokenCoreCounts(x, tokens: 2, dff: 4, alpha: 1.5) == [2, 2, 2, 0])
        #expect(sentenceCoreNeurons(x, tokens: 2, dff: 4, alpha: 0.5, beta: 0.25) == [1])
        #expect(sentenceCoreNeurons(x, tokens: 2, dff: 4, alpha: 1.5, beta: 0.5) == [0, 1])
        // β = 1 asks for all 4, but only neurons 1 and 2 were counted at α = 0.5: the released rule
        // keeps those two; the padded rule fills up with 0 and 3.
        #expect(sentenceCoreNeurons(x, tokens: 2, dff: 4, alpha: 0.5, beta: 1) == [1, 2])
        #expect(sentenceCoreNeurons(x, tokens: 2, dff: 4, alpha: 0.5, beta: 1, padded: true) == [0, 1, 2, 3])
    }

    /// Keeping every neuron (β = 1) reproduces the dense logits: the gathered path is the same FFN.
    @Test func fullCoreSetIsTheDenseModel() throws {
        let model = try DecoderLM(folder: TestPaths.fixtures + "/llama-tiny")
        let ids: [Int32] = [49, 351, 273, 333, 337]
        let dense = try model.forward(ids, cache: model.makeCache())
        for l in 0..<model.config.layers { try model.setSparse(layer: l, neurons: Array(0..<model.config.intermediateSize)) }
        let sparse = try model.forward(ids, cache: model.makeCache())
        #expect(zip(dense, sparse).map { abs($0 - $1) }.max()! < 1e-5)
        // An empty core set (a prompt whose activations are all ≤ 0 counts no neuron) runs: the FFN
        // adds nothing, so decoding equals a model whose down projection is zero — finite logits.
        for l in 0..<model.config.layers { try model.setSparse(layer: l, neurons: []) }
        let empty = try model.forward(ids, cache: model.makeCache())
        #expect(empty.count == dense.count && empty.allSatisfy(\.isFinite))
        #expect(convertedLayers(total: 32, start: nil, end: nil) == 6..<27)
        #expect(convertedLayers(total: 3, start: 0, end: 3) == 1..<3)
    }

    @Test func generateThroughTheCLI() throws {
        let dir = TempDir("coreinfer")
        let cli = CLI()
        let folder = TestPaths.fixtures + "/llama-tiny"
        let p = try expected("llama-tiny").prompts[0]
        let dense = try cli.run(
            "run", "coreinfer", "generate", "--set", "model_dir=\(folder)", "--set", "prompt=\(p.text)", "--set", "mode=dense",
            "--set", "max_new_tokens=16", "--set", "stream=false", "--out", dir.sub("dense"), "--json")
        #expect(dense.status == 0, "\(dense.stderr)")
        let result = try JSONValue.parse(dense.stdout)["result"]!
        #expect(result["text"]?.stringValue == p.greedy_text)
        #expect(result["prompt_ids"]?.arrayValue?.map { Int32($0.intValue!) } == p.input_ids)
        let sparse = try cli.run(
            "run", "coreinfer", "generate", "--set", "model_dir=\(folder)", "--set", "prompt=\(p.text)", "--set", "beta=0.4",
            "--set", "start=0", "--set", "end=3", "--set", "save_core=true", "--set", "max_new_tokens=8", "--set", "stream=false", "--out", dir.sub("sparse"),
            "--json")
        #expect(sparse.status == 0, "\(sparse.stderr)")
        let s = try JSONValue.parse(sparse.stdout)["result"]!
        #expect(s["kept_neurons_per_layer"]?["1"]?.intValue == Int(0.4 * 192))
        #expect(s["core_neurons"]?["2"]?.arrayValue?.map { $0.intValue! } == p.core_neurons["2"])
        #expect((s["speedup"]?.doubleValue ?? 0) > 0 && s["generated_ids"]?.arrayValue?.count == 8)
        let tokens = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: dir.sub("sparse") + "/tokens.npy")))
        #expect(tokens.shape == [p.input_ids.count + 8])
    }

    /// ABI 1.2 `emit_text`: the streamed text reaches stdout in text mode; with --json stdout stays
    /// one JSON document (the stream goes to stderr), in process and isolated alike.
    @Test func streamedTextGoesThroughTheHost() throws {
        let cli = CLI()
        let folder = TestPaths.fixtures + "/llama-tiny"
        let p = try expected("llama-tiny").prompts[0]
        let args = [
            "run", "coreinfer", "generate", "--set", "model_dir=\(folder)", "--set", "prompt=\(p.text)", "--set", "mode=dense",
            "--set", "max_new_tokens=16", "--set", "stream=true",
        ]
        let text = try cli.run(args)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.hasPrefix(p.greedy_text + "\n"), "\(text.stdout)")
        for extra in [["--json"], ["--json", "--isolate"]] {
            let json = try cli.run(args + extra)
            #expect(json.status == 0, "\(json.stderr)")
            let parsed = try JSONValue.parse(json.stdout)
            #expect(parsed["result"]?["text"]?.stringValue == p.greedy_text)
            #expect(json.stderr.contains(p.greedy_text), "\(extra): \(json.stderr)")
        }
    }

    @Test func badInputsAreNamed() throws {
        let dir = TempDir("coreinfer-bad")
        let cli = CLI()
        let folder = TestPaths.fixtures + "/llama-tiny"
        let beta = try cli.run("run", "coreinfer", "generate", "--set", "model_dir=\(folder)", "--set", "prompt=x", "--set", "beta=1.5")
        #expect(beta.status != 0 && beta.stderr.contains("beta must be in (0, 1]"))
        let long = try cli.run(
            "run", "coreinfer", "generate", "--set", "model_dir=\(folder)", "--set", "prompt=" + String(repeating: "free software ", count: 200))
        #expect(long.status != 0 && long.stderr.contains("context is 256"))
        // An unknown architecture and a missing tensor.
        let gpt2 = dir.sub("gpt2")
        for f in ["model.safetensors", "tokenizer.json"] { try FileManager.default.copyItem(atPath: folder + "/" + f, toPath: gpt2 + "/" + f) }
        let config = try String(contentsOfFile: folder + "/config.json", encoding: .utf8).replacingOccurrences(
            of: "\"model_type\": \"llama\"", with: "\"model_type\": \"gpt2\"")
        try config.write(toFile: gpt2 + "/config.json", atomically: true, encoding: .utf8)
        let arch = try cli.run("run", "coreinfer", "generate", "--set", "model_dir=\(gpt2)", "--set", "prompt=x")
        #expect(arch.status != 0 && arch.stderr.contains("model_type 'gpt2' is not supported"))
        let partial = dir.sub("partial")
        for f in ["config.json", "tokenizer.json"] { try FileManager.default.copyItem(atPath: folder + "/" + f, toPath: partial + "/" + f) }
        let full = try SafeTensorsFile(path: folder + "/model.safetensors")
        try SafeTensors.write(
            try full.names.filter { $0 != "model.layers.1.mlp.up_proj.weight" }.map { ($0, try full.tensor($0)) }, to: partial + "/model.safetensors")
        let missing = try cli.run("run", "coreinfer", "generate", "--set", "model_dir=\(partial)", "--set", "prompt=x")
        #expect(missing.status != 0 && missing.stderr.contains("model.layers.1.mlp.up_proj.weight"))
    }

    /// The analyses on the embedded corpus: a sentence's full prefix has exactly its final core set,
    /// Jaccard values are proportions, perplexities are finite.
    @Test func analysesOnTheEmbeddedCorpus() throws {
        let dir = TempDir("coreinfer-analyze")
        let r = try CLI().run(
            "run", "coreinfer", "analyze", "--set", "model_dir=\(TestPaths.fixtures)/opt-tiny", "--set", "start=0", "--set", "end=3",
            "--out", dir.sub("a"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let m = try JSONValue.parse(r.stdout)["result"]!
        let curve = try String(contentsOfFile: dir.sub("a") + "/stability.csv", encoding: .utf8).split(separator: "\n").dropFirst()
        #expect(curve.count == 10 && curve.last! == "1.0,1.0")
        for key in ["jaccard_within_topic", "jaccard_across_topics", "greedy_agreement", "stability_overlap_at_50pct"] {
            let v = m[key]?.doubleValue ?? -1
            #expect(v >= 0 && v <= 1, "\(key) = \(v)")
        }
        #expect((m["perplexity_dense"]?.doubleValue ?? .nan).isFinite && m["texts"]?.intValue == 32)
    }

    /// `train` writes a Hugging Face folder: the loaded DecoderLM's fast path (KV cache) reproduces
    /// its differentiable logits, a fresh model loads the file by name, and the loss falls.
    @Test func trainWritesAFolderTheRuntimeReads() throws {
        let dir = TempDir("coreinfer-train")
        let r = try CLI().run(
            "run", "coreinfer", "train", "--set", "hidden=32", "--set", "layers=2", "--set", "heads=4", "--set", "kv_heads=2",
            "--set", "ffn=64", "--set", "context=16", "--set", "batch=4", "--set", "steps=30", "--out", dir.sub("t"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let m = try JSONValue.parse(r.stdout)["result"]!
        #expect((m["final_loss"]?.doubleValue ?? 99) < (m["first_loss"]?.doubleValue ?? 0))
        let folder = dir.sub("t") + "/model"
        let runtime = try DecoderLM(folder: folder)
        let module = DecoderLM(config: runtime.config)
        try module.load(from: SafeTensorsCheckpoint(path: folder + "/model.safetensors"))
        let ids = [5, 77, 300, 12, 9, 41]
        let reference = try GradMode.disabled { try module([ids]) }.scalars
        let ours = try runtime.forward(ids.map(Int32.init), cache: runtime.makeCache(), allLogits: true)
        let err = zip(reference, ours).map { abs($0 - $1) }.max()!
        #expect(err < 1e-4, "differentiable vs fast path logits max |Δ| \(err)")
    }

    /// `train --set tokenizer=` with LLaMA-2's SentencePiece-style tokenizer.json (the llama-spm-tiny
    /// fixture's): the model's vocabulary is that tokenizer's, the folder's tokenizer encodes as the
    /// fixture says, and `generate` runs on the folder.
    @Test func trainWithASentencePieceTokenizer() throws {
        let dir = TempDir("coreinfer-train-spm")
        let spm = TestPaths.fixtures + "/llama-spm-tiny/tokenizer.json"
        let r = try CLI().run(
            "run", "coreinfer", "train", "--set", "tokenizer=\(spm)", "--set", "hidden=32", "--set", "layers=2", "--set", "heads=4", "--set", "kv_heads=2",
            "--set", "ffn=64", "--set", "context=16", "--set", "batch=4", "--set", "steps=5", "--out", dir.sub("t"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let folder = dir.sub("t") + "/model"
        let reference = try Tokenizers.load(path: spm), trained = try Tokenizers.load(folder: folder)
        #expect(try DecoderLM(folder: folder).config.vocabSize == reference.vocabularySize)
        let text = "Café 東京 — naïve  spaces"
        #expect(trained.encode(text) == reference.encode(text) && trained is SentencePieceBPETokenizer)
        let g = try CLI().run(
            "run", "coreinfer", "generate", "--set", "model_dir=\(folder)", "--set", "prompt=The planets", "--set", "max_new_tokens=4",
            "--set", "mode=dense", "--set", "stream=false")
        #expect(g.status == 0, "\(g.stderr)")
    }

    /// Similarity-guided: `cluster` writes centroids and per-cluster neurons; `generate` with
    /// mode=similarity decodes on the nearest cluster's stored neurons.
    @Test func similarityGuidedClustersAndDecoding() throws {
        let dir = TempDir("coreinfer-cluster")
        let cli = CLI()
        let c = try cli.run("run", "coreinfer", "cluster", "--set", "start=0", "--set", "end=4", "--out", dir.sub("c"), "--json")
        #expect(c.status == 0, "\(c.stderr)")
        let m = try JSONValue.parse(c.stdout)["result"]!
        let k = m["clusters"]?.intValue ?? 0
        #expect(k >= 4 && m["texts"]?.intValue == 32)
        let inertia = m["inertia"]?.arrayValue?.map { $0.doubleValue! } ?? []
        #expect(inertia.count == 10 && inertia.first! >= inertia.last!) // more clusters never fit worse here
        let g = try cli.run(
            "run", "coreinfer", "generate", "--set", "mode=similarity", "--set", "clusters=\(dir.sub("c"))/clusters.json",
            "--set", "start=0", "--set", "end=4", "--set", "prompt=The planets move", "--set", "max_new_tokens=8",
            "--set", "stream=false", "--out", dir.sub("g"), "--json")
        #expect(g.status == 0, "\(g.stderr)")
        let r = try JSONValue.parse(g.stdout)["result"]!
        let cluster = r["cluster"]?.intValue ?? -1
        #expect((0..<k).contains(cluster))
        // The cluster's stored list is used whole: int(#distinct counted · β) neurons, as clusters.json holds them.
        let file = try JSONValue.parse(String(contentsOfFile: dir.sub("c") + "/clusters.json", encoding: .utf8))
        let stored = file["neurons"]?.arrayValue?[max(cluster, 0)]["2"]?.arrayValue?.count ?? -1
        #expect(r["kept_neurons_per_layer"]?["2"]?.intValue == stored && stored > 0 && stored <= Int(0.4 * 384))
        let missing = try cli.run("run", "coreinfer", "generate", "--set", "mode=similarity", "--set", "prompt=x")
        #expect(missing.status != 0 && missing.stderr.contains("needs --set clusters="))
    }
}
