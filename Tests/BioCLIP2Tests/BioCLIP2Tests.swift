import BioCLIP2
import Formats
import Foundation
import Imaging
import NN
import Tensors
import TestSupport
import Testing

/// BioCLIP 2's inference path against open_clip 3.3.0 on `openclip-tiny` (the architecture scaled
/// down, random weights), pybioclip's output shapes, rank aggregation and bad inputs.
@Suite struct BioCLIP2Tests {
    let folder = TestPaths.fixtures + "/openclip-tiny"

    func expected() throws -> JSONValue { try JSONValue.parse(String(contentsOfFile: folder + "/expected.json", encoding: .utf8)) }
    func matrix(_ v: JSONValue?) -> [[Float]] { v!.arrayValue!.map { $0.arrayValue!.map { Float($0.doubleValue!) } } }
    func relativeError(_ ours: [Float], _ reference: [[Float]]) -> Float {
        let flat = reference.flatMap { $0 }
        return zip(ours, flat).map { abs($0 - $1) }.max()! / flat.map(abs).max()!
    }

    /// Token ids exact, image and text features within 1e-4 relative, probabilities within 1e-5.
    @Test func parityWithOpenCLIP() throws {
        let bio = try BioCLIP(folder: folder)
        let e = try expected()
        let labels = e["labels"]!.arrayValue!.map { $0.stringValue! }
        let ids = bio.tokenizer.tokenize(labels)
        for (row, want) in zip(ids, e["token_ids"]!.arrayValue!) {
            let w = want.arrayValue!.map { Int64($0.intValue!) }
            #expect(Array(row.prefix(w.count)) == w && row.dropFirst(w.count).allSatisfy { $0 == 0 })
        }
        let images = try e["images"]!.arrayValue!.map { try PNG.read(path: folder + "/" + $0.stringValue!) }
        let features = try bio.imageFeatures(try bio.preprocess(images))
        let imageError = relativeError(try features.scalars(as: Float.self), matrix(e["image_features"]))
        #expect(imageError < 1e-4, "image features: relative error \(imageError)")
        let text = try bio.textFeatures(labels)
        let textError = relativeError(text, matrix(e["text_features"]))
        #expect(textError < 1e-4, "text features: relative error \(textError)")
        // Probabilities against the five labels as classes (normalised text features).
        let d = bio.config.embedDim
        var classes = text
        for r in 0..<labels.count {
            let norm = (0..<d).map { classes[r * d + $0] * classes[r * d + $0] }.reduce(0, +).squareRoot()
            for j in 0..<d { classes[r * d + j] /= norm }
        }
        let probs = try bio.probabilities(imageFeatures: features, classes: classes, count: labels.count)
        let probError = zip(probs, matrix(e["probs"]).flatMap { $0 }).map { abs($0 - $1) }.max()!
        #expect(probError < 1e-5, "probabilities: max |Δ| \(probError)")
    }

    /// bf16 inference (`GEMM.withPrecision(.bf16)`): the linear layers' products in bfloat16 through
    /// oneDNN. Image and text features keep cosine ≥ 0.999 to fp32 and to open_clip's, yet differ
    /// from fp32 by more than fp32 rounding (the bf16 path really ran); the thread's precision is
    /// fp32 again afterwards. Skipped where bf16 cannot run (no oneDNN or no native BF16).
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func bf16FeaturesStayCloseToFP32() throws {
        let bio = try BioCLIP(folder: folder)
        let e = try expected()
        let labels = e["labels"]!.arrayValue!.map { $0.stringValue! }
        let images = try bio.preprocess(try e["images"]!.arrayValue!.map { try PNG.read(path: folder + "/" + $0.stringValue!) })
        let fp32Image = try bio.imageFeatures(images).scalars(as: Float.self), fp32Text = try bio.textFeatures(labels)
        let before = OneDNNBackend.counters.executed
        let (bf16Image, bf16Text) = try GEMM.withPrecision(.bf16) { (try bio.imageFeatures(images).scalars(as: Float.self), try bio.textFeatures(labels)) }
        #expect(GEMM.precision == .fp32)
        #expect(OneDNNBackend.counters.executed > before, "no product went through oneDNN")
        let d = bio.config.embedDim
        func rowCosines(_ x: [Float], _ y: [Float]) -> [Float] {
            stride(from: 0, to: x.count, by: d).map { r in
                let a = x[r..<(r + d)], b = y[r..<(r + d)]
                let dot = zip(a, b).map { $0 * $1 }.reduce(0, +)
                return dot / (a.map { $0 * $0 }.reduce(0, +).squareRoot() * b.map { $0 * $0 }.reduce(0, +).squareRoot())
            }
        }
        for (name, bf16, fp32, reference) in [
            ("image", bf16Image, fp32Image, matrix(e["image_features"]).flatMap { $0 }),
            ("text", bf16Text, fp32Text, matrix(e["text_features"]).flatMap { $0 }),
        ] {
            #expect(rowCosines(bf16, fp32).min()! >= 0.999, "\(name): \(rowCosines(bf16, fp32))")
            #expect(rowCosines(bf16, reference).min()! >= 0.999, "\(name) vs open_clip")
            #expect(zip(bf16, fp32).map { abs($0 - $1) }.max()! > 1e-4 * fp32.map(abs).max()!, "\(name): bf16 equals fp32")
        }
    }

    /// `run --precision bf16` reaches the plugin (in process and in an isolated child): text
    /// embeddings within cosine 0.999 of fp32's but not equal to them; a wrong value is a usage error.
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func precisionFlagReachesThePlugin() throws {
        let dir = TempDir("precision")
        let cli = CLI()
        var embeddings: [String: [Float]] = [:]
        for (name, extra) in [("fp32", ["--precision", "fp32"]), ("bf16", ["--precision", "bf16"]), ("bf16-isolated", ["--precision", "bf16", "--isolate"])] {
            let r = try cli.run(
                ["run", "bioclip2", "--set", "model=\(folder)", "--set", "texts=[\"a bird\",\"a fish\",\"an oak\"]", "--out", dir.sub(name)] + extra)
            #expect(r.status == 0, "\(name): \(r.stderr)")
            embeddings[name] = try NPY.read(path: dir.sub(name) + "/embedding.npy").scalars(as: Float.self)
        }
        let fp32 = embeddings["fp32"]!
        for name in ["bf16", "bf16-isolated"] {
            let bf16 = embeddings[name]!
            let dot: Float = zip(bf16, fp32).map { $0 * $1 }.reduce(0, +)
            let normB: Float = bf16.map { $0 * $0 }.reduce(0, +).squareRoot()
            let normF: Float = fp32.map { $0 * $0 }.reduce(0, +).squareRoot()
            let cosine = dot / (normB * normF)
            #expect(cosine > 0.999 && bf16 != fp32, "\(name): cosine \(cosine)")
        }
        let bad = try cli.run("run", "bioclip2", "--set", "model=\(folder)", "--set", "texts=[\"a\"]", "--precision", "fp8")
        #expect(bad.status == 2 && bad.stderr.contains("--precision must be fp32 or bf16"), "\(bad.stderr)")
    }

    /// The bf16 path keeps the embedded model's decisions: 1,024 synthetic-tol test images (16 per
    /// species, exported as PNGs), zero-shot `predict` through the CLI in fp32 and in bf16, the
    /// top-1 species agree on ≥ 99 % of them (measured 99.5 %, 2026-12-06: the flips are near-ties),
    /// while the scores differ (bf16 ran).
    @Test(.enabled(if: GEMM.bf16Unavailable() == nil)) func bf16KeepsTopOnePredictions() throws {
        let dir = TempDir("agreement")
        let cli = CLI()
        let export = try cli.run(
            "run", "synthetic-tol", "export", "--set", "splits=test", "--set", "test_per_species=16", "--set", "sheet_per_species=1", "--out",
            dir.sub("tol"))
        #expect(export.status == 0, "\(export.stderr)")
        // predict reads one folder: link the per-species folders' images into one.
        let flat = dir.sub("flat")
        try FileManager.default.createDirectory(atPath: flat, withIntermediateDirectories: true)
        let test = dir.sub("tol") + "/images/test"
        for species in try FileManager.default.contentsOfDirectory(atPath: test) {
            for file in try FileManager.default.contentsOfDirectory(atPath: test + "/" + species) where file.hasSuffix(".png") {
                try FileManager.default.createSymbolicLink(atPath: flat + "/\(species)_\(file)", withDestinationPath: test + "/" + species + "/" + file)
            }
        }
        var top: [String: [String: (species: String, score: Double)]] = [:]
        for precision in ["fp32", "bf16"] {
            let r = try cli.run("run", "bioclip2", "predict", "--set", "images=\(flat)", "--set", "k=1", "--precision", precision, "--out", dir.sub(precision))
            #expect(r.status == 0, "\(precision): \(r.stderr)")
            let lines = try String(contentsOfFile: dir.sub(precision) + "/predictions.csv", encoding: .utf8).split(separator: "\n").map(String.init)
            let header = lines[0].split(separator: ",").map(String.init)
            let (file, species, score) = (header.firstIndex(of: "file_name")!, header.firstIndex(of: "species")!, header.firstIndex(of: "score")!)
            for line in lines.dropFirst() {
                let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                if top[precision, default: [:]][f[file]] == nil { top[precision, default: [:]][f[file]] = (f[species], Double(f[score]) ?? .nan) }
            }
        }
        let fp32 = top["fp32"] ?? [:], bf16 = top["bf16"] ?? [:]
        #expect(fp32.count == 1024 && Set(fp32.keys) == Set(bf16.keys), "\(fp32.count) and \(bf16.count) images predicted")
        let agree = fp32.filter { bf16[$0.key]?.species == $0.value.species }.count
        #expect(Double(agree) >= 0.99 * Double(fp32.count), "top-1 agreement \(agree)/\(fp32.count)")
        #expect(fp32.contains { abs((bf16[$0.key]?.score ?? 0) - $0.value.score) > 1e-6 }, "bf16 scores equal fp32's")
    }

    /// A small Tree-of-Life label set written in pybioclip's layout ([E, N] npy + names json).
    func writeTreeOfLife(in dir: String, dimension e: Int) throws -> [[Float]] {
        let names: [([String], String)] = [
            (["Animalia", "Chordata", "Aves", "Passeriformes", "Fringillidae", "Geospiza", "fortis"], "medium ground finch"),
            (["Animalia", "Chordata", "Aves", "Passeriformes", "Fringillidae", "Geospiza", "magnirostris"], "large ground finch"),
            (["Animalia", "Chordata", "Aves", "Accipitriformes", "Accipitridae", "Buteo", "jamaicensis"], "red-tailed hawk"),
            (["Plantae", "Tracheophyta", "Magnoliopsida", "Fagales", "Fagaceae", "Quercus", "alba"], "white oak"),
        ]
        var rng = SystemRandomNumberGenerator()
        let rows: [[Float]] = names.map { _ in
            let v = (0..<e).map { _ in Float.random(in: -1...1, using: &rng) }
            let n = v.map { $0 * $0 }.reduce(0, +).squareRoot()
            return v.map { $0 / n }
        }
        let columns = (0..<e).flatMap { j in rows.map { $0[j] } }
        try NPY.encode(try Tensor(columns, shape: [e, names.count])).write(to: URL(fileURLWithPath: dir + "/txt_emb_species.npy"))
        let json = "[" + names.map { "[[" + $0.0.map { "\"\($0)\"" }.joined(separator: ", ") + "], \"\($0.1)\"]" }.joined(separator: ", ") + "]"
        try json.write(toFile: dir + "/txt_emb_species.json", atomically: true, encoding: .utf8)
        return rows
    }

    /// Higher ranks sum the species probabilities of each rank prefix; species rows carry
    /// pybioclip's columns.
    @Test func rankAggregationSumsSpeciesProbabilities() throws {
        let dir = TempDir("tol")
        _ = try writeTreeOfLife(in: dir.path, dimension: 32)
        let labels = try TreeOfLifeLabels(npy: dir.path + "/txt_emb_species.npy", json: dir.path + "/txt_emb_species.json", dimension: 32)
        let probs: [Float] = [0.3, 0.25, 0.4, 0.05]
        let genus = rankPredictions(file: "x.png", probs: probs, labels: labels, rank: .genus, k: 5)
        #expect(genus.map(\.score).map { ($0 * 1e6).rounded() / 1e6 } == [0.55, 0.4, 0.05])
        #expect(genus[0].columns.map(\.column) == ["kingdom", "phylum", "class", "order", "family", "genus"])
        let kingdom = rankPredictions(file: "x.png", probs: probs, labels: labels, rank: .kingdom, k: 1)
        #expect(kingdom.count == 1 && kingdom[0].columns[0].value == "Animalia" && abs(kingdom[0].score - 0.95) < 1e-6)
        let species = rankPredictions(file: "x.png", probs: probs, labels: labels, rank: .species, k: 2)
        #expect(species.map { $0.columns.first { $0.column == "species" }!.value } == ["Buteo jamaicensis", "Geospiza fortis"])
        #expect(species[0].columns.map(\.column) == ["kingdom", "phylum", "class", "order", "family", "genus", "species_epithet", "species", "common_name"])
        // Species at or below min_prob are left out of the sums.
        let floor = rankPredictions(file: "x.png", probs: probs, labels: labels, rank: .family, k: 5, minProb: 0.1)
        #expect(floor.map(\.score).map { ($0 * 1e6).rounded() / 1e6 } == [0.55, 0.4])
        // A subset keeps the labels of the given genus values and refuses unknown ones.
        #expect(try labels.subset(column: "genus", values: ["Geospiza"], source: "s.csv").count == 2)
        #expect(throws: FormatError.self) { try labels.subset(column: "genus", values: ["Corvus"], source: "s.csv") }
    }

    /// Through the CLI on the fixture folder: Tree-of-Life ranks, custom labels (cached on the second
    /// run), bins and embed write pybioclip's files.
    @Test func predictAndEmbedThroughTheCLI() throws {
        let dir = TempDir("bioclip-cli")
        let model = dir.sub("model")
        for f in ["open_clip_config.json", "open_clip_model.safetensors"] {
            try FileManager.default.copyItem(atPath: folder + "/" + f, toPath: model + "/" + f)
        }
        let rows = try writeTreeOfLife(in: model, dimension: 32)
        for f in ["image0.png", "image1.png", "image2.png"] { try FileManager.default.copyItem(atPath: folder + "/" + f, toPath: dir.sub("images") + "/" + f) }
        let cli = CLI()
        let r = try cli.run(
            "run", "bioclip2", "predict", "--set", "model=\(model)", "--input", "images=\(dir.sub("images"))", "--set", "k=3", "--out", dir.sub("species"))
        #expect(r.status == 0, "\(r.stderr)")
        let csv = try String(contentsOfFile: dir.sub("species") + "/predictions.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv[0] == "file_name,kingdom,phylum,class,order,family,genus,species_epithet,species,common_name,score")
        #expect(csv.count == 1 + 3 * 3)
        // The scores follow from the label embeddings: recompute the first image's top species.
        let bio = try BioCLIP(folder: model)
        let f = try bio.imageFeatures(try bio.preprocess([PNG.read(path: dir.sub("images") + "/image0.png")]))
        let probs = try bio.probabilities(imageFeatures: f, classes: rows.flatMap { $0 }, count: rows.count)
        let best = probs.indices.max { probs[$0] < probs[$1] }!
        let first = csv[1].split(separator: ",")
        #expect(abs(Double(first.last!)! - Double(probs[best])) < 1e-6)

        let labels = dir.path + "/labels.txt"
        try "Geospiza fortis\nButeo jamaicensis\nQuercus alba\n".write(toFile: labels, atomically: true, encoding: .utf8)
        let cache = dir.sub("cache")
        let c1 = try cli.run(
            "run", "bioclip2", "predict", "--set", "model=\(model)", "--input", "images=\(dir.sub("images"))", "--set", "cls=\(labels)",
            "--set", "cache=\(cache)", "--out", dir.sub("custom"), "--json")
        #expect(c1.status == 0, "\(c1.stderr)")
        #expect(c1.stdout.contains("miss (stored)"))
        let c2 = try cli.run(
            "run", "bioclip2", "predict", "--set", "model=\(model)", "--input", "images=\(dir.sub("images"))", "--set", "cls=\(labels)",
            "--set", "cache=\(cache)", "--out", dir.sub("custom2"), "--json")
        #expect(c2.stdout.contains("\"hit\""))
        let a = try String(contentsOfFile: dir.sub("custom") + "/predictions.csv", encoding: .utf8)
        #expect(a == (try String(contentsOfFile: dir.sub("custom2") + "/predictions.csv", encoding: .utf8)))
        #expect(a.hasPrefix("file_name,classification,score\n") && a.split(separator: "\n").count == 1 + 3 * 3)

        let bins = dir.path + "/bins.csv"
        try "class,bin\nGeospiza fortis,bird\nButeo jamaicensis,bird\nQuercus alba,plant\n".write(toFile: bins, atomically: true, encoding: .utf8)
        let b = try cli.run(
            "run", "bioclip2", "predict", "--set", "model=\(model)", "--input", "images=\(dir.sub("images"))", "--set", "bins=\(bins)",
            "--set", "cache=none", "--set", "format=csv", "--out", dir.sub("bins"))
        #expect(b.status == 0, "\(b.stderr)")
        let binRows = try String(contentsOfFile: dir.sub("bins") + "/predictions.csv", encoding: .utf8).split(separator: "\n").dropFirst()
        #expect(binRows.count == 6)
        let perImage = Dictionary(grouping: binRows, by: { $0.split(separator: ",")[0] }).mapValues {
            $0.map { Double($0.split(separator: ",").last!)! }.reduce(0, +)
        }
        #expect(perImage.values.allSatisfy { abs($0 - 1) < 1e-5 })
        #expect(b.stdout.contains("file_name,classification,score"))

        let e = try cli.run("run", "bioclip2", "embed", "--set", "model=\(model)", "--input", "images=\(dir.sub("images"))", "--out", dir.sub("embed"))
        #expect(e.status == 0, "\(e.stderr)")
        let json = try JSONValue.parse(String(contentsOfFile: dir.sub("embed") + "/embeddings.json", encoding: .utf8))
        let embedded = json["embeddings"]!.objectValue!
        #expect(json["model"]?.stringValue == model && embedded.count == 3)
        let vector = embedded[dir.sub("images") + "/image0.png"]!.arrayValue!.map { Float($0.doubleValue!) }
        #expect(zip(vector, try f.scalars(as: Float.self)).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    /// Bad inputs are named: a config without vision_cfg, a checkpoint missing tensors, a label file
    /// with blank lines, a subset column that is not a rank, mutually exclusive options.
    @Test func badInputsAreNamed() throws {
        let dir = TempDir("bioclip-bad")
        let noVision = dir.sub("novision")
        try FileManager.default.copyItem(atPath: folder + "/open_clip_model.safetensors", toPath: noVision + "/open_clip_model.safetensors")
        try #"{"model_cfg": {"embed_dim": 32, "text_cfg": {"width": 64, "layers": 2}}}"#.write(
            toFile: noVision + "/open_clip_config.json", atomically: true, encoding: .utf8)
        #expect { try BioCLIP(folder: noVision) } throws: { "\($0)".contains("vision_cfg") && "\($0)".contains("open_clip_config.json") }

        let partial = dir.sub("partial")
        try FileManager.default.copyItem(atPath: folder + "/open_clip_config.json", toPath: partial + "/open_clip_config.json")
        let full = try SafeTensorsFile(path: folder + "/open_clip_model.safetensors")
        try SafeTensors.write(
            try full.names.filter { $0 != "visual.proj" && $0 != "ln_final.weight" }.map { ($0, try full.tensor($0)) },
            to: partial + "/open_clip_model.safetensors")
        #expect { try BioCLIP(folder: partial) } throws: { "\($0)".contains("visual.proj") && "\($0)".contains("ln_final.weight") }

        let labels = dir.path + "/labels.txt"
        try "Geospiza fortis\n\nQuercus alba\n".write(toFile: labels, atomically: true, encoding: .utf8)
        #expect { try readLabels(labels) } throws: { "\($0)".contains("line 2 is blank") }
        try "Geospiza fortis\nQuercus alba\n\n".write(toFile: labels, atomically: true, encoding: .utf8)
        #expect(try readLabels(labels) == ["Geospiza fortis", "Quercus alba"])
        #expect(try readLabels("a, b ,c") == ["a", "b", "c"])

        let cli = CLI()
        let r = try cli.run(
            "run", "bioclip2", "predict", "--set", "model=\(folder)", "--input", "images=\(folder)/image0.png", "--set", "cls=\(labels)x",
            "--set", "bins=b.csv")
        #expect(r.status != 0 && r.stderr.contains("at most one of cls, bins or subset"))
        let noTol = try cli.run("run", "bioclip2", "predict", "--set", "model=\(folder)", "--input", "images=\(folder)/image0.png")
        #expect(noTol.status != 0 && noTol.stderr.contains("txt_emb_species.npy"))
    }

    /// `train` writes an open_clip folder that the same loader as the fixture reads, with
    /// pybioclip's label files; `emergent` runs on it and its numbers stay in their ranges.
    @Test func trainWritesAnOpenCLIPFolderAndEmergentRuns() throws {
        let dir = TempDir("bioclip-train")
        let cli = CLI()
        let small = #"dataset_options=["species_per_genus=2","genera_per_family=1","train_per_species=8","val_per_species=1","test_per_species=6"]"#
        let r = try cli.run(
            "run", "bioclip2", "train", "--set", "epochs=3", "--set", "size=16", "--set", "patch=8", "--set", "width=32", "--set", "layers=1",
            "--set", "text_width=32", "--set", "text_layers=1", "--set", "embed_dim=48", "--set", "train_batch=32", "--set", "lr=0.002",
            "--set", small, "--out", dir.sub("run"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let model = dir.sub("run") + "/model"
        let bio = try BioCLIP(folder: model)
        #expect(bio.config.vision.imageSize == 16 && bio.config.vision.width == 32 && bio.config.text.width == 32 && bio.config.embedDim == 48)
        let labels = try TreeOfLifeLabels(npy: model + "/txt_emb_species.npy", json: model + "/txt_emb_species.json", dimension: 48)
        #expect(labels.count == 16 && labels.names[0].taxa.count == 7)
        let manifest = try JSONValue.parse(r.stdout)
        let accuracy = manifest["result"]?["zero_shot_accuracy"]?.objectValue ?? [:]
        #expect(Set(accuracy.keys) == Set(Rank.allCases.map(\.label)))
        #expect(accuracy["kingdom"]?.doubleValue == 1) // one kingdom
        let curve = try String(contentsOfFile: dir.sub("run") + "/curve.csv", encoding: .utf8).split(separator: "\n").dropFirst()
        let losses = curve.map { Double($0.split(separator: ",")[1])! }
        #expect(losses.count == 3 && losses.last! < losses.first!, "loss per epoch \(losses)")

        let e = try cli.run("run", "bioclip2", "emergent", "--set", "model=\(model)", "--set", small, "--out", dir.sub("emergent"), "--json")
        #expect(e.status == 0, "\(e.stderr)")
        let m = try JSONValue.parse(e.stdout)["result"]!
        #expect(m["species"]?.doubleValue == 16 && m["embedding_dim"]?.doubleValue == 48)
        for key in ["variant_sex_orthogonality", "variant_stage_orthogonality", "intra_variance_in_inter_subspace"] {
            let v = m[key]?.doubleValue ?? -1
            #expect(v >= 0 && v <= 1, "\(key) = \(v)")
        }
        #expect((m["species_fisher_ratio"]?.doubleValue ?? -1) > 0)
        #expect(FileManager.default.fileExists(atPath: dir.sub("emergent") + "/species_means.png"))
    }

    /// The statistics the analyses are built from, on cases with known answers.
    @Test func spearmanRidgeAndEigen() throws {
        #expect(abs(spearman([1, 2, 3, 4], [10, 20, 30, 40]) - 1) < 1e-12)
        #expect(abs(spearman([1, 2, 3, 4], [4, 3, 2, 1]) + 1) < 1e-12)
        #expect(abs(spearman([1, 2, 2, 3], [1, 2, 2, 3]) - 1) < 1e-12) // ties share ranks
        // y is a linear function of x: leave-one-out ridge predictions nearly recover it.
        let x: [[Double]] = (0..<12).map { i in [Double(i), Double(i % 3), 1] }
        let y = x.map { 2 * $0[0] - $0[1] }
        let loo = ridgeLOO(x, y, lambda: 1e-6)
        #expect(zip(loo, y).allSatisfy { abs($0 - $1) < 1e-3 }, "\(loo)")
        let (values, vectors) = try LinearAlgebra.symmetricEigen([2, 1, 1, 2], n: 2)
        #expect(abs(values[0] - 3) < 1e-12 && abs(values[1] - 1) < 1e-12)
        #expect(abs(abs(vectors[0][0]) - 0.5.squareRoot()) < 1e-12 && abs(vectors[0][0] - vectors[0][1]) < 1e-12)
    }
}
