import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors
import Vision

extension FinerCAMComponent {
    static var inTour: Bool { true }

    /// Grad-CAM against Finer-CAM on `synthetic-tol` test images (one per species) with the embedded
    /// classifier (asked of the `classifiers` plugin through the host): the pointing game on the part
    /// that tells each species from its siblings, relative confidence drop, deletion and insertion;
    /// overlays of the first species side by side. Grad-CAM's and Prompt-CAM's maps come from their
    /// plugins through the host; Finer-CAM's from grad-cam calling this component's score back.
    func tour(_ request: Request<Options>) throws -> Response {
        let folder =
            request.options.classifier.isEmpty
            ? try embeddedClassifierFolder(request.host, for: Self.id, hint: "--set classifier=FOLDER") : request.options.classifier
        let classifier: ViTClassifier
        do { classifier = try ViTClassifier(folder: folder) } catch let e as FormatError { throw MenagerieError.invalidArgument("\(e)") }
        // Prompt-CAM joins the comparison when its prompts were trained on this backbone (the embedded
        // one) and the prompt-cam plugin is installed.
        let prompts = folder + "/prompt-cam.safetensors"
        var notes: [String] = []
        var promptCAM: String? = nil
        if FileManager.default.fileExists(atPath: prompts) {
            if (try? request.host.resolve("prompt-cam", kind: .explainer)) != nil {
                promptCAM = prompts
            } else {
                notes.append("Prompt-CAM left out: the prompt-cam plugin is not installed")
            }
        }
        let report = try compareOnSyntheticTol(
            classifier, folder: folder, promptCAM: promptCAM, host: request.host, perSpecies: max(1, request.options.perSpecies))
        let dir = request.host.scratchDirectory
        try AtomicFile.write(report.csv, to: dir + "/metrics.csv")
        try report.sheet.write(to: dir + "/overlays.png")
        var summary = report.summary
        if !notes.isEmpty, case .object(var o) = summary {
            o["notes"] = .array(notes.map { .string($0) })
            summary = .object(o)
        }
        return Response(
            result: summary, tensors: [("maps_gradcam", report.maps[0]), ("maps_finercam", report.maps[1])],
            artifacts: ["metrics.csv"] + Figure.files("overlays.png"))
    }
}

/// The embedded classifier's folder, asked of the `classifiers` plugin through the host (operation
/// `embedded` of `vit-classifier`); a clear error naming that plugin when it is not installed.
func embeddedClassifierFolder(_ host: PluginHost, for component: String, hint: String) throws -> String {
    let proxy: ComponentProxy
    do { proxy = try host.resolve("vit-classifier") } catch let e as MenagerieError where e.status == .notFound {
        throw MenagerieError.notFound(
            "'\(component)' needs the embedded classifier of the 'classifiers' plugin (component 'vit-classifier'), which is not installed: "
                + "install libClassifiers.so with its Menagerie_Classifiers.resources folder, or pass \(hint)")
    }
    guard let folder = try proxy.invoke("embedded").result["folder"]?.stringValue else {
        throw MenagerieError.failed("vit-classifier's operation 'embedded' returned no folder")
    }
    return folder
}

struct Comparison {
    var csv: String
    var sheet: ImageGrid
    var summary: JSONValue
    var maps: [Tensor]
}

/// Runs Grad-CAM, Finer-CAM (α = 1, ranks 1–3) and Finer-CAM compare (α = 1, rank 1) on the first
/// `perSpecies` test images of every species, explaining the true class; and Prompt-CAM when given
/// its prompts file (its map: the mean over heads of the true class prompt's last-block attention,
/// scored with the Prompt-CAM model's own logits). Every map comes through the host: grad-cam (the
/// cam plugin), finer-cam over grad-cam, prompt-cam's `trait_maps` and `logits`.
func compareOnSyntheticTol(
    _ classifier: ViTClassifier, folder: String, promptCAM: String? = nil, host: PluginHost,
    perSpecies: Int
) throws -> Comparison {
    let s = classifier.config.imageSize
    let data = try DatasetProxy(host, id: "synthetic-tol")
    let described = try data.describe(options: ["size": .number(Double(s))])
    guard let classes = described["classes"]?.arrayValue, let testPer = described["splits"]?["test"]?.intValue.map({ $0 / max(classes.count, 1) }) else {
        throw MenagerieError.invalidArgument("synthetic-tol did not describe its classes")
    }
    guard classes.count == classifier.config.numClasses else {
        throw MenagerieError.invalidArgument(
            "the classifier has \(classifier.config.numClasses) classes, synthetic-tol \(classes.count): train one on it first")
    }
    let partIndex = ["head": 1, "body": 2, "wings_fins": 3, "tail": 4, "appendage": 5]
    let batch = try data.batch(options: [
        "split": "test", "start": 0, "count": .number(Double(testPer * classes.count)), "shuffle": false,
        "size": .number(Double(s)),
    ])
    let all = try batch.tensors["images"]!.scalars(as: Float.self), allMasks = try batch.tensors["masks"]!.scalars(as: UInt8.self)
    let labels = try batch.tensors["labels"]!.integers()
    var pixels: [Float] = [], masks: [[Bool]] = [], targets: [Int] = [], pictures: [Image] = [], rowNames: [String] = []
    let plane = s * s
    for species in classes.indices {
        for j in 0..<min(perSpecies, testPer) {
            let i = species * testPer + j
            let raw = Array(all[(i * 3 * plane)..<((i + 1) * 3 * plane)])
            for c in 0..<3 { pixels += raw[(c * plane)..<((c + 1) * plane)].map { ($0 - classifier.mean[c]) / classifier.std[c] } }
            let part = partIndex[classes[species]["distinguishing_part"]?.stringValue ?? ""] ?? 5
            masks.append(allMasks[(i * plane)..<((i + 1) * plane)].map { Int($0) == part })
            targets.append(labels[i])
            rowNames.append(classes[species]["name"]?.stringValue ?? "species \(species)")
            pictures.append(
                Image(
                    width: s, height: s, channels: 3,
                    pixels: (0..<plane).flatMap { p in
                        (0..<3).map { c in UInt8((raw[c * plane + p] * 255).rounded()) }
                    }))
        }
    }
    let n = targets.count
    let images = try Tensor(pixels, shape: [n, 3, s, s])
    let methods: [(String, FinerOptions?)] = [
        ("grad-cam", nil), ("finer-cam", FinerOptions(alpha: 1, ranks: [1, 2, 3])),
        ("finer-cam compare", FinerOptions(alpha: 1, ranks: [1])),
    ]
    var csv = "method,images,accuracy,pointing_game,energy_in_part,relative_drop_5pct,deletion_auc,insertion_auc\n"
    var summary: [String: JSONValue] = [:]
    var maps: [Tensor] = []
    func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(max(v.count, 1)) }
    func record(_ name: String, logits: [Float], c: Int, maps m: Tensor, metrics: (_ similar: [Int]) throws -> CAMMetrics) throws {
        let accuracy = Double((0..<n).filter { i in (0..<c).max { logits[i * c + $0] < logits[i * c + $1] }! == targets[i] }.count) / Double(n)
        // The most similar class: the closest logit to the target's.
        let similar = (0..<n).map { i in
            (0..<c).filter { $0 != targets[i] }.min {
                abs(logits[i * c + $0] - logits[i * c + targets[i]]) < abs(logits[i * c + $1] - logits[i * c + targets[i]])
            }!
        }
        let f = try metrics(similar)
        let p = try pointingGame(maps: m, masks: masks)
        let row: [Double] = [
            accuracy, Double(p.hits.filter { $0 }.count) / Double(n), mean(p.energy), mean(f.relativeDrop), mean(f.deletionAUC), mean(f.insertionAUC),
        ]
        csv += "\(name),\(n)," + row.map { String(format: "%.4f", $0) }.joined(separator: ",") + "\n"
        summary[name.replacingOccurrences(of: " ", with: "_")] = .object(
            Dictionary(
                uniqueKeysWithValues: zip(
                    ["accuracy", "pointing_game", "energy_in_part", "relative_drop_5pct", "deletion_auc", "insertion_auc"], row.map { JSONValue.number($0) })))
        maps.append(m)
    }
    let targetTensor = Tensor(targets.map(Int64.init))
    for (name, finer) in methods {
        let (m, logits): (Tensor, Tensor)
        if let finer {
            var o = FinerCAMComponent.Options()
            (o.classifier, o.alpha, o.ranks) = (folder, Double(finer.alpha), finer.ranks)
            let run = try FinerRun(host: host, base: "grad-cam", options: o, finer: finer, images: images, targets: targetTensor)
            (m, logits) = (run.maps, run.logits)
        } else {
            let r = try ExplainerProxy(host, id: "grad-cam").explain(
                options: ["classifier": .string(folder)], inputs: [("images", images), ("targets", targetTensor)])
            guard let maps = r.tensors["maps"], let l = r.tensors["logits"] else { throw MenagerieError.failed("grad-cam returned no maps or logits") }
            (m, logits) = (maps, l)
        }
        try record(name, logits: try logits.scalars(as: Float.self), c: logits.shape[1], maps: m) { similar in
            try faithfulness(classifier, images: images, maps: m, targets: targets, similar: similar)
        }
    }
    if let promptCAM {
        let prompt = try host.resolve("prompt-cam", kind: .explainer)
        let options: JSONValue = ["backbone": .string(folder), "prompts": .string(promptCAM)]
        let r = try prompt.invoke("trait_maps", options: options, inputs: [("images", images), ("query", targetTensor)])
        guard let grid = r.tensors["grid"], grid.rank == 4, grid.shape[0] == n, let logits = r.tensors["logits"], logits.rank == 2 else {
            throw MenagerieError.failed("prompt-cam's trait_maps returned no grid [N, H, g, g] or logits [N, C]")
        }
        let (h, g) = (grid.shape[1], grid.shape[2])
        // Mean over heads on the token grid, then resized and scaled as the CAMs are.
        let perHead = try grid.scalars(as: Float.self)
        var mean = [Float](repeating: 0, count: n * g * g)
        for i in 0..<n { for hh in 0..<h { for p in 0..<(g * g) { mean[i * g * g + p] += perHead[(i * h + hh) * g * g + p] / Float(h) } } }
        let m = try scaledMaps(grid: try Tensor(mean, shape: [n, g, g]), size: s)
        try record("prompt-cam", logits: try logits.scalars(as: Float.self), c: logits.shape[1], maps: m) { similar in
            try faithfulness(images: images, maps: m, targets: targets, similar: similar, classes: logits.shape[1]) { batch in
                guard let l = try prompt.invoke("logits", options: options, inputs: [("images", batch)]).tensors["logits"] else {
                    throw MenagerieError.failed("prompt-cam's operation 'logits' returned no logits")
                }
                return Variable(l)
            }
        }
    }
    // Overlays: the first 8 species, columns image | Grad-CAM | Finer-CAM | (Prompt-CAM) | part mask.
    var tiles: [[Image?]] = []
    let shown = [try maps[0].scalars(as: Float.self), try maps[1].scalars(as: Float.self)] + (promptCAM == nil ? [] : [try maps[3].scalars(as: Float.self)])
    for i in 0..<min(8, n) {
        let mask = Image(width: s, height: s, channels: 3, pixels: masks[i].flatMap { $0 ? [255, 255, 255] : [30, 30, 30] })
        tiles.append([pictures[i]] + (try shown.map { m in try Overlay.heatmap(on: pictures[i], map: Array(m[(i * plane)..<((i + 1) * plane)])) }) + [mask])
    }
    var sheet = ImageGrid(
        title: "Where each explainer looks (target: the true species)",
        columnHeaders: ["image", "Grad-CAM", "Finer-CAM"] + (promptCAM == nil ? [] : ["Prompt-CAM"]) + ["part mask"],
        rowHeaders: (0..<min(8, n)).map { rowNames.indices.contains($0) ? rowNames[$0] : "image \($0 + 1)" }, tiles: tiles, tileSize: 80)
    sheet.colorBar = (0...1, "map value (JET)", { Color.jet($0) })
    summary["images"] = .number(Double(n))
    summary["note"] =
        "pointing game: the map's peak in the part that tells the species from its siblings; relative drop masks the top 5 % pixels with 0 in normalised space"
    return Comparison(csv: csv, sheet: sheet, summary: .object(summary), maps: maps)
}
