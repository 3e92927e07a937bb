import CoreInfer
import Formats
import Foundation
import NN
import Tensors
import TestSupport
import Testing

/// Similarity-guided CoreInfer against `Tests/Fixtures/coreinfer-clusters` (make_fixture.py: the
/// released selection of wangqinsi1/CoreInfer re-implemented in Python with the released bugs fixed as
/// ours, scikit-learn 1.9.1 KMeans, torch-pickled lists in the released directory layout). Every
/// expected number below comes from that script's expected.json, never from our own output.
@Suite struct SimilarityTests {
    struct Text: Decodable {
        let text: String
        let input_ids: [Int32]
        let signature: [Int]
    }
    struct Prompt: Decodable {
        let text: String
        let input_ids: [Int32]
        let signature: [Int]
        let cluster: Int
    }
    struct Expected: Decodable {
        let architecture: String
        let d_ff: Int
        let layers: Int
        let signature_layer: Int
        let signature_size: Int
        let binarizer_width: Int
        let k: Int
        let labels: [Int]
        let texts: [Text]
        let cluster_neurons: [String: [String: [Int]]]
        let prompts: [Prompt]
    }
    static let root = TestPaths.fixtures + "/coreinfer-clusters"

    func expected(_ name: String) throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: Self.root + "/\(name)/expected.json")))
    }

    /// The released signal: OPT's fc1 pre-activation, LLaMA's gate_proj output (not down_proj's input).
    func signals(_ model: DecoderLM, _ ids: [Int32]) throws -> [Int: [Float]] {
        var acts: [Int: [Float]] = [:]
        if model.config.architecture == .llama {
            model.gateHook = { l, g, _ in acts[l] = g }
        } else {
            model.activationHook = { l, a, _ in acts[l] = a }
        }
        defer { (model.gateHook, model.activationHook) = (nil, nil) }
        _ = try model.forward(ids, cache: model.makeCache())
        return acts
    }

    /// Offline signatures (per-token round(0.4 · positives), top m counted neurons) and online ones
    /// (one int(0.4 · mean positives) for every token) equal the script's, at the scaled signature
    /// layer and size (round(25/32 · 3) = 2; min(3000, round(d_ff · 3000/11008)) = 70 and 52).
    @Test(arguments: ["opt-tiny", "llama-tiny"])
    func signaturesMatchTheReleasedRule(_ name: String) throws {
        let e = try expected(name)
        let model = try DecoderLM(folder: TestPaths.fixtures + "/" + name)
        let dff = model.config.intermediateSize
        #expect(defaultSignatureLayer(total: model.config.layers) == e.signature_layer)
        #expect(defaultSignatureSize(dff: dff) == e.signature_size)
        #expect(defaultSignatureLayer(total: 32) == 25 && defaultSignatureSize(dff: 14336) == 3000 && defaultSignatureSize(dff: 11008) == 3000)
        for t in e.texts {
            let a = try signals(model, t.input_ids)[e.signature_layer]!
            let ours = offlineSignature(a, tokens: t.input_ids.count, dff: dff, alpha: 0.4, size: e.signature_size)
            #expect(ours == t.signature, "\(name) '\(t.text)'")
        }
        for p in e.prompts {
            let a = try signals(model, p.input_ids)[e.signature_layer]!
            #expect(onlineSignature(a, tokens: p.input_ids.count, dff: dff, alpha: 0.4, size: e.signature_size) == p.signature, "\(name) '\(p.text)'")
        }
    }

    /// Per-cluster lists with fresh statistics per cluster equal the script's for every cluster and
    /// layer (in ranked order). The released pooling bug (cluster c counts clusters 0…c) gives other
    /// lists on this fixture: the test would see it.
    @Test(arguments: ["opt-tiny", "llama-tiny"])
    func clusterListsMatchTheReleasedRule(_ name: String) throws {
        let e = try expected(name)
        let model = try DecoderLM(folder: TestPaths.fixtures + "/" + name)
        let dff = model.config.intermediateSize
        let acts = try e.texts.map { try signals(model, $0.input_ids) }
        var pooledDiffers = false
        for c in 0..<e.k {
            let members = e.labels.indices.filter { e.labels[$0] == c }
            let pooled = e.labels.indices.filter { e.labels[$0] <= c }
            for l in 0..<e.layers {
                let x = members.flatMap { acts[$0][l]! }, rows = members.reduce(0) { $0 + e.texts[$1].input_ids.count }
                #expect(
                    clusterNeuronList(x, rows: rows, dff: dff, alpha: 0.4, beta: 0.4) == e.cluster_neurons["\(c)"]?["\(l)"], "\(name) cluster \(c) layer \(l)")
                let px = pooled.flatMap { acts[$0][l]! }, prows = pooled.reduce(0) { $0 + e.texts[$1].input_ids.count }
                if clusterNeuronList(px, rows: prows, dff: dff, alpha: 0.4, beta: 0.4) != e.cluster_neurons["\(c)"]?["\(l)"] { pooledDiffers = true }
            }
        }
        #expect(pooledDiffers)
    }

    /// `generate --set clusters=DIR` on the released layout (torch-pickled lists, a pickled
    /// scikit-learn KMeans; OPT's binarizer one neuron short): the predicted cluster of each prompt
    /// equals scikit-learn's `predict`, and the converted layers decode on that cluster's stored lists.
    @Test(arguments: ["opt-tiny", "llama-tiny"])
    func releasedDirectoryPredictsTheFixtureClusters(_ name: String) throws {
        let e = try expected(name)
        let dir = TempDir("coreinfer-released")
        #expect(e.binarizer_width == (e.architecture == "opt" ? e.d_ff - 1 : e.d_ff))
        for (i, p) in e.prompts.enumerated() {
            let r = try CLI().run(
                "run", "coreinfer", "generate", "--set", "model_dir=\(TestPaths.fixtures)/\(name)", "--set", "mode=similarity",
                "--set", "clusters=\(Self.root)/\(name)", "--set", "prompt=\(p.text)", "--set", "start=0", "--set", "end=3",
                "--set", "save_core=true", "--set", "max_new_tokens=4", "--set", "stream=false", "--out", dir.sub("g\(i)"), "--json")
            #expect(r.status == 0, "\(r.stderr)")
            let m = try JSONValue.parse(r.stdout)["result"]!
            #expect(m["prompt_ids"]?.arrayValue?.map { Int32($0.intValue!) } == p.input_ids)
            #expect(m["cluster"]?.intValue == p.cluster, "\(name) '\(p.text)'")
            #expect(m["signature_layer"]?.intValue == e.signature_layer)
            for l in ["1", "2"] {
                #expect(m["core_neurons"]?[l]?.arrayValue?.map { $0.intValue! } == e.cluster_neurons["\(p.cluster)"]?[l], "\(name) layer \(l)")
            }
        }
    }

    /// Our `cluster` operation on the fixture's twelve texts: its signatures are the script's, and its
    /// lists are the released rule applied to its own assignments (its KMeans is not scikit-learn's).
    @Test(arguments: ["opt-tiny", "llama-tiny"])
    func clusterOperationUsesTheReleasedRules(_ name: String) throws {
        let e = try expected(name)
        let dir = TempDir("coreinfer-cluster-op")
        let corpus = dir.sub("c") + "/corpus.json"
        let texts = e.texts.map { JSONValue.string($0.text) }
        try JSONValue.object(["topics": .object(["all": .array(texts)])]).compactText.write(toFile: corpus, atomically: true, encoding: .utf8)
        let r = try CLI().run(
            "run", "coreinfer", "cluster", "--set", "model_dir=\(TestPaths.fixtures)/\(name)", "--set", "corpus=\(corpus)", "--out", dir.sub("o"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let file = try JSONValue.parse(String(contentsOfFile: dir.sub("o") + "/clusters.json", encoding: .utf8))
        #expect(file["layer"]?.intValue == e.signature_layer && file["signatureSize"]?.intValue == e.signature_size)
        let signatures = file["signatures"]?.arrayValue?.map { $0.arrayValue!.map { $0.intValue! } }
        #expect(signatures == e.texts.map(\.signature))
        let assignments = file["assignments"]!.arrayValue!.map { $0.intValue! }
        let model = try DecoderLM(folder: TestPaths.fixtures + "/" + name)
        let acts = try e.texts.map { try signals(model, $0.input_ids) }
        for (c, lists) in file["neurons"]!.arrayValue!.enumerated() {
            let members = assignments.indices.filter { assignments[$0] == c }
            for l in 0..<e.layers {
                let x = members.flatMap { acts[$0][l]! }, rows = members.reduce(0) { $0 + e.texts[$1].input_ids.count }
                let want = clusterNeuronList(x, rows: rows, dff: e.d_ff, alpha: 0.4, beta: 0.4)
                #expect(lists["\(l)"]?.arrayValue?.map { $0.intValue! } == want, "\(name) cluster \(c) layer \(l)")
            }
        }
    }

    /// MultiLabelBinarizer.transform ignores classes it does not know (the release's OPT binarizer
    /// omits neuron d_ff − 1), and KMeans.predict takes the first of equal distances. By hand:
    /// signature [3, 1] → [0, 1, 0, 1] at width 4, [0, 1, 0] at width 3 (3 unknown); [0,1,0,0] is
    /// nearer [0,1,0,0] (0) than [0,1,0,1] (1); [1,0,0,0] is at distance 2 from both one-hot
    /// centroids → the first.
    @Test func binarizerAndPredictByHand() {
        #expect(binarize([3, 1], width: 4) == [0, 1, 0, 1])
        #expect(binarize([3, 1], width: 3) == [0, 1, 0])
        #expect(nearestCentroid([0, 1, 0, 0], [[0, 1, 0, 1], [0, 1, 0, 0]]) == 1)
        #expect(nearestCentroid([1, 0, 0, 0], [[0, 1, 0, 0], [0, 0, 1, 0]]) == 0)
        // Per-token k in the offline signature: token 0 has 5 positives → round(2.0) = 2, token 1 has
        // 1 → round(0.4) = 0 (the online rule's shared k = int(0.4 · 6/2) = 1 would count token 1 too).
        let x: [Float] = [5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 9, 0]
        #expect(offlineSignature(x, tokens: 2, dff: 6, alpha: 0.4, size: 10) == [0, 1])
        #expect(onlineSignature(x, tokens: 2, dff: 6, alpha: 0.4, size: 10) == [0, 4])
        #expect(onlineSignature(x, tokens: 2, dff: 6, alpha: 0.4, size: 1) == [0])
    }

    /// The pickles the release writes read through the restricted unpickler: a torch tensor pickled
    /// with pickle.dump (a view into a legacy-format storage), and a KMeans whose state dict's
    /// cluster_centers_ is read only when the caller names the class.
    @Test func releasedPicklesReadThroughTheRestrictedUnpickler() throws {
        let view = try TorchFile(path: Self.root + "/bad/good-view.pkl")
        #expect(view.names == ["tensor"])
        #expect(try view.tensor("tensor").scalars(as: Int64.self) == [191, 7, 3]) // ranked_ids[1:4] in make_fixture.py
        #expect(try TorchFile(path: Self.root + "/bad/good-view-p2.pkl").tensor("tensor").scalars(as: Int64.self) == [191, 7, 3])
        // The legacy storage's element count (6, before the 48 data bytes 5, 191, 7, 3, 0, 9) patched to 7.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.root + "/bad/good-view.pkl")))
        let data = [Int64(5), 191, 7, 3, 0, 9].flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        let at = (0...(bytes.count - data.count)).first { Array(bytes[$0..<($0 + data.count)]) == data }!
        #expect(bytes[at - 8] == 6)
        bytes[at - 8] = 7
        let patchDir = TempDir("coreinfer-patch")
        let patched = patchDir.path + "/patched.pkl"
        try Data(bytes).write(to: URL(fileURLWithPath: patched))
        do {
            _ = try TorchFile(path: patched)
            Issue.record("a storage whose count disagrees with its persistent id was read")
        } catch { #expect("\(error)".contains("the storage holds 7 elements, its header says 6"), "\(error)") }
        let e = try expected("llama-tiny")
        let list = try TorchFile(path: Self.root + "/llama-tiny/neuron_activation/2/cluster_1.pkl")
        #expect(try list.tensor("tensor").scalars(as: Int64.self).map(Int.init) == e.cluster_neurons["1"]?["2"])
        let kmeansPath = Self.root + "/llama-tiny/cluster_activation/kmeans.pkl"
        do {
            _ = try TorchFile(path: kmeansPath)
            Issue.record("a KMeans pickle was read without its class being allowed")
        } catch { #expect("\(error)".contains("refusing global 'sklearn.cluster._kmeans.KMeans'"), "\(error)") }
        let kmeans = try TorchFile(path: kmeansPath, objectClasses: ["sklearn.cluster._kmeans.KMeans"])
        #expect(kmeans.tensors["cluster_centers_"]?.shape == [e.k, e.binarizer_width])
        // The binarizer pickle is another class: refused by name even with KMeans allowed.
        do {
            _ = try TorchFile(path: Self.root + "/llama-tiny/cluster_activation/mlb_model.pkl", objectClasses: ["sklearn.cluster._kmeans.KMeans"])
            Issue.record("mlb_model.pkl was read")
        } catch { #expect("\(error)".contains("refusing global 'sklearn.preprocessing._label.MultiLabelBinarizer'"), "\(error)") }
        // Cut anywhere, a pickled tensor is refused with a FormatError, never a crash.
        let whole = try Data(contentsOf: URL(fileURLWithPath: Self.root + "/llama-tiny/neuron_activation/0/cluster_0.pkl"))
        let temp = TempDir("coreinfer-cut")
        for cut in stride(from: 1, to: whole.count, by: max(1, whole.count / 97)) {
            let path = temp.path + "/cut\(cut).pkl"
            try whole.prefix(cut).write(to: URL(fileURLWithPath: path))
            #expect(throws: FormatError.self, "cut at \(cut)") { _ = try TorchFile(path: path) }
        }
    }

    /// Damaged cluster directories are refused naming the file and the fault.
    @Test func damagedClusterDirectoriesAreNamed() throws {
        let dir = TempDir("coreinfer-bad-clusters")
        let source = Self.root + "/llama-tiny"
        func run(_ clusters: String, _ extra: [String] = []) throws -> CommandResult {
            try CLI().run(
                [
                    "run", "coreinfer", "generate", "--set", "model_dir=\(TestPaths.fixtures)/llama-tiny", "--set", "mode=similarity",
                    "--set", "clusters=\(clusters)", "--set", "prompt=The planets move", "--set", "start=0", "--set", "end=3",
                    "--set", "max_new_tokens=2", "--set", "stream=false",
                ] + extra)
        }
        func copy(_ name: String) throws -> String {
            let to = dir.path + "/" + name
            try FileManager.default.copyItem(atPath: source, toPath: to)
            return to
        }
        let bad = Self.root + "/bad"
        let cases: [(String, String, String)] = [
            ("out-of-range.pkl", "holds neuron 192, outside 0..<192", "out"),
            ("negative.pkl", "holds neuron -1, outside 0..<192", "neg"),
            ("duplicate.pkl", "holds neuron 5 twice", "dup"),
            ("float.pkl", "integers are needed", "float"),
            ("matrix.pkl", "a 1-D list is needed", "matrix"),
            ("list.pkl", "holds no tensor", "list"),
        ]
        for (file, message, name) in cases {
            let d = try copy(name)
            let target = d + "/neuron_activation/2/cluster_1.pkl"
            try FileManager.default.removeItem(atPath: target)
            try FileManager.default.copyItem(atPath: bad + "/" + file, toPath: target)
            let r = try run(d)
            #expect(r.status != 0 && r.stderr.contains(target) && r.stderr.contains(message), "\(file): \(r.stderr)")
        }
        let truncated = try copy("truncated")
        let cut = truncated + "/neuron_activation/1/cluster_0.pkl"
        try Data(contentsOf: URL(fileURLWithPath: cut)).prefix(300).write(to: URL(fileURLWithPath: cut))
        let t = try run(truncated)
        #expect(t.status != 0 && t.stderr.contains(cut) && t.stderr.contains("truncated"), "\(t.stderr)")
        let layerName = try copy("layer-name")
        try FileManager.default.createDirectory(atPath: layerName + "/neuron_activation/two", withIntermediateDirectories: true)
        let n = try run(layerName)
        #expect(n.status != 0 && n.stderr.contains("neuron_activation/two: is not a layer directory"), "\(n.stderr)")
        let missing = try copy("missing")
        try FileManager.default.removeItem(atPath: missing + "/neuron_activation/2/cluster_3.pkl")
        let m = try run(missing)
        #expect(m.status != 0 && m.stderr.contains("has no cluster_3.pkl"), "\(m.stderr)")
        let extra = try copy("extra")
        try FileManager.default.copyItem(atPath: extra + "/neuron_activation/2/cluster_0.pkl", toPath: extra + "/neuron_activation/2/cluster_4.pkl")
        let x = try run(extra)
        #expect(x.status != 0 && x.stderr.contains("cluster_4.pkl: is a list for cluster 4, but"), "\(x.stderr)")
        let width = try run(source, ["--set", "kmeans=\(bad)/centroids-wrong-width.npy"])
        #expect(width.status != 0 && width.stderr.contains("centroids are 100 wide; this model's d_ff is 192"), "\(width.stderr)")
        let mlb = try run(source, ["--set", "kmeans=\(source)/cluster_activation/mlb_model.pkl"])
        #expect(mlb.status != 0 && mlb.stderr.contains("refusing global 'sklearn.preprocessing._label.MultiLabelBinarizer'"), "\(mlb.stderr)")
        // A .npy of centroids works as the KMeans: 4 one-hot centroids on neurons 0…3.
        let npy = try run(source, ["--set", "kmeans=\(bad)/centroids.npy", "--json"])
        #expect(npy.status == 0, "\(npy.stderr)")
    }
}
