import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

extension BioCLIPComponent {
    static var inTour: Bool { true }

    /// A short training run on `synthetic-tol` (the loss falls, accuracy per rank is reported), then
    /// the embedded model: zero-shot predictions at species and genus rank for eight test images
    /// written as PNGs, and the emergent-property analysis of its embedding space.
    func tour(_ request: Request<Options>) throws -> Response {
        let dir = request.host.scratchDirectory
        var o = Options()
        o.epochs = 2
        o.datasetOptions = ["trainPerSpecies=12", "testPerSpecies=2"]
        let trained = try train(Request(options: o, inputs: request.inputs, host: request.host, component: Self.id, operation: "train"))
        // Keep the short run's curve; its weights are not needed.
        try FileManager.default.moveItem(atPath: dir + "/curve.csv", toPath: dir + "/short_training_curve.csv")
        try? FileManager.default.removeItem(atPath: dir + "/model")

        // Eight test images of different genera, as files (predict reads files, as a user's would).
        let bio = try loadModel(Options())
        let data = try DatasetOptionsProxy(request.host, id: "synthetic-tol", size: bio.imageSize, options: [])
        let described = try data.describe()
        let testPer = (described["splits"]?["test"]?.intValue ?? 0) / max(described["classes"]?.arrayValue?.count ?? 1, 1)
        try FileManager.default.createDirectory(atPath: dir + "/images", withIntermediateDirectories: true)
        var names: [String] = []
        for (i, species) in stride(from: 0, to: 64, by: 8).enumerated() {
            let b = try data.batch(options: ["split": "test", "start": .number(Double(species * testPer)), "count": 1, "shuffle": false])
            let x = try b.tensors["images"]!.scalars(as: Float.self)
            let s = bio.imageSize, plane = s * s
            let pixels = (0..<plane).flatMap { p in (0..<3).map { c in UInt8((x[c * plane + p] * 255).rounded()) } }
            let name = String(format: "images/%02d_species_%02d.png", i, species)
            try PNG.write(Image(width: s, height: s, channels: 3, pixels: pixels), to: dir + "/" + name)
            names.append(name)
        }
        var p = Options()
        p.images = dir + "/images"
        p.k = 3
        let species = try predict(Request(options: p, inputs: request.inputs, host: request.host, component: Self.id, operation: "predict"))
        try relativise(dir + "/predictions.csv", to: dir + "/predictions_species.csv", prefix: dir + "/")
        p.rank = "genus"
        _ = try predict(Request(options: p, inputs: request.inputs, host: request.host, component: Self.id, operation: "predict"))
        try relativise(dir + "/predictions.csv", to: dir + "/predictions_genus.csv", prefix: dir + "/")
        // How often the embedded model's top species is right on these eight.
        let rows = species.result["predictions"]?.arrayValue ?? []
        var hits = 0
        for (i, speciesIndex) in stride(from: 0, to: 64, by: 8).enumerated() {
            let top = rows.first { $0["file_name"]?.stringValue?.hasSuffix(names[i]) == true }?["species"]?.stringValue
            let truth = described["classes"]?.arrayValue?[speciesIndex]["taxonomy"]?["species"]?.stringValue
            if top != nil && top == truth { hits += 1 }
        }
        let report = try analyse(bio, data: data, split: "test", host: request.host, energy: 0.9)
        try AtomicFile.write("metric,value\n" + report.rows.map { "\($0.name),\($0.value)" }.joined(separator: "\n") + "\n", to: dir + "/emergent.csv")
        try plotSpecies(report).write(to: dir + "/species_means.png")
        try plotVariants(report).write(to: dir + "/variants.png")
        var result: [String: JSONValue] = [:]
        result["short_training"] = trained.result
        result["embedded_top1_on_8_images"] = .number(Double(hits) / 8)
        result["emergent"] = .object(Dictionary(uniqueKeysWithValues: report.rows.map { ($0.name, JSONValue.number($0.value)) }))
        return Response(
            result: .object(result),
            artifacts: [
                "short_training_curve.csv", "predictions_species.csv", "predictions_genus.csv", "emergent.csv",
            ] + Figure.files("species_means.png") + Figure.files("variants.png") + names)
    }

    /// The predictions with file names relative to the tour's output folder.
    func relativise(_ source: String, to target: String, prefix: String) throws {
        let text = try String(contentsOfFile: source, encoding: .utf8)
        try AtomicFile.write(text.replacingOccurrences(of: prefix, with: ""), to: target)
        try FileManager.default.removeItem(atPath: source)
    }
}
