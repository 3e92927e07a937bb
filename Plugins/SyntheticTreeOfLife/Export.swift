import Foundation
import Imaging
import MenagerieKit
import Tensors

extension SyntheticTreeOfLifeComponent {
    func describeJSON(_ d: SyntheticTreeOfLife) -> JSONValue {
        let w = d.world
        let classes: [JSONValue] = w.species.map { s in
            var lineage: [String: JSONValue] = [:]
            for (r, name) in zip(ranks, s.lineage) { lineage[r] = .string(name) }
            var traits: [String: JSONValue] = [:]
            for (name, v) in zip(World.traitNames, w.traits(s)) { traits[name] = .number(v) }
            return .object([
                "index": .number(Double(s.index)), "name": .string(s.binomial), "common_name": .string(s.commonName),
                "taxonomy": .object(lineage), "traits": .object(traits),
                "body_plan": .string(s.appearance.winged ? "winged" : "finned"),
                "distinguishing_part": .string(s.distinguishingPart.name),
            ])
        }
        return .object([
            "name": "synthetic-tol", "seed": .number(Double(w.seed)), "size": .number(Double(d.size)),
            "ranks": .array(ranks.map { .string($0) }),
            "rank_sizes": .object(Dictionary(uniqueKeysWithValues: zip(ranks, w.nodeNames.map { JSONValue.number(Double($0.count)) }))),
            "classes": .array(classes),
            "sibling_pairs": .array(w.siblingPairs.map { .object(["a": .number(Double($0.a)), "b": .number(Double($0.b)), "part": .string($0.part.name)]) }),
            "parts": .array(Part.allCases.map { .string($0.name) }),
            "variants": .object(["sex": .array(["female", "male"]), "stage": .array(["juvenile", "adult"])]),
            "traits": .array(World.traitNames.map { .string($0) }),
            "splits": .object(Dictionary(uniqueKeysWithValues: zip(splitNames, (0..<3).map { JSONValue.number(Double(d.count(split: $0))) }))),
        ])
    }

    /// Writes PNG images and masks, the CSVs and the contact sheet into the scratch folder.
    func writeExport(_ d: SyntheticTreeOfLife, splits: [Int], perSpecies cap: Int, sheetPerSpecies: Int, request: Request<Options>) throws -> Response {
        let dir = request.host.scratchDirectory
        let w = d.world
        var artifacts: [String] = []
        var metadata = "file,mask,split," + ranks.joined(separator: ",") + ",common_name," + World.traitNames.joined(separator: ",") + ",sex,stage\n"
        var written = 0
        let jobs: [(split: Int, index: Int)] = splits.flatMap { split in
            (0..<d.count(split: split)).filter { cap == 0 || $0 % d.perSpecies[split] < cap }.map { (split, $0) }
        }
        for (j, job) in jobs.enumerated() {
            if j % 64 == 0 {
                try request.host.checkCancelled()
                request.host.progress(j, of: jobs.count, "rendering")
            }
            let sample = d.sample(split: job.split, index: job.index)
            let sp = w.species[sample.species]
            let folder = "\(splitNames[job.split])/\(sp.binomial.replacingOccurrences(of: " ", with: "_"))"
            let name = String(format: "%@_%06d.png", splitNames[job.split], job.index)
            try FileManager.default.createDirectory(atPath: "\(dir)/images/\(folder)", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "\(dir)/masks/\(folder)", withIntermediateDirectories: true)
            let r = d.render(sample)
            try PNG.write(Image(width: d.size, height: d.size, channels: 3, pixels: r.rgb), to: "\(dir)/images/\(folder)/\(name)")
            try PNG.write(Image(width: d.size, height: d.size, channels: 1, pixels: r.mask), to: "\(dir)/masks/\(folder)/\(name)")
            artifacts += ["images/\(folder)/\(name)", "masks/\(folder)/\(name)"]
            metadata +=
                "images/\(folder)/\(name),masks/\(folder)/\(name),\(splitNames[job.split]),"
                + sp.lineage.map(csvField).joined(separator: ",") + "," + csvField(sp.commonName) + ","
                + w.traits(sp).map { String(format: "%.4f", $0) }.joined(separator: ",")
                + ",\(sample.variant.sex == 0 ? "female" : "male"),\(sample.variant.stage == 0 ? "juvenile" : "adult")\n"
            written += 1
        }
        request.host.progress(jobs.count, of: jobs.count, "rendering")
        var traits = "species_index,species,common_name," + World.traitNames.joined(separator: ",") + ",distinguishing_part\n"
        for s in w.species {
            traits +=
                "\(s.index),\(csvField(s.binomial)),\(csvField(s.commonName)),"
                + w.traits(s).map { String(format: "%.4f", $0) }.joined(separator: ",") + ",\(s.distinguishingPart.name)\n"
        }
        var pairs = "species_a,species_b,name_a,name_b,part\n"
        for p in w.siblingPairs { pairs += "\(p.a),\(p.b),\(csvField(w.species[p.a].binomial)),\(csvField(w.species[p.b].binomial)),\(p.part.name)\n" }
        var taxonomy = "species_index," + ranks.joined(separator: ",") + ",common_name\n"
        for s in w.species { taxonomy += "\(s.index)," + s.lineage.map(csvField).joined(separator: ",") + ",\(csvField(s.commonName))\n" }
        try AtomicFile.write(metadata, to: dir + "/metadata.csv")
        try AtomicFile.write(traits, to: dir + "/traits.csv")
        try AtomicFile.write(pairs, to: dir + "/sibling_pairs.csv")
        try AtomicFile.write(taxonomy, to: dir + "/taxonomy.csv")
        let sheetSplit = splits.first ?? 0
        try contactSheet(d, split: sheetSplit, perSpecies: max(1, sheetPerSpecies)).write(to: dir + "/contact_sheet.png")
        artifacts += ["metadata.csv", "traits.csv", "sibling_pairs.csv", "taxonomy.csv"] + Figure.files("contact_sheet.png")
        return Response(
            result: [
                "images": .number(Double(written)), "classes": .number(Double(w.species.count)),
                "splits": .array(splits.map { .string(splitNames[$0]) }), "size": .number(Double(d.size)),
                "contact_sheet": "contact_sheet.png", "metadata": "metadata.csv",
            ],
            artifacts: artifacts)
    }

    /// One row per species: its first images of `split`, then their masks in label colours.
    func contactSheet(_ d: SyntheticTreeOfLife, split: Int, perSpecies k: Int) throws -> ImageGrid {
        let per = min(k, max(1, d.perSpecies[split]))
        var tiles: [[Image?]] = []
        for s in d.world.species.indices {
            var row: [Image] = [], masks: [Image] = []
            for j in 0..<per {
                let index = s * d.perSpecies[split] + j
                let r =
                    d.perSpecies[split] > j
                    ? d.render(d.sample(split: split, index: index))
                    : Rendering(size: d.size, rgb: [UInt8](repeating: 255, count: d.size * d.size * 3), mask: [UInt8](repeating: 0, count: d.size * d.size))
                row.append(Image(width: d.size, height: d.size, channels: 3, pixels: r.rgb))
                var m = [UInt8](repeating: 0, count: d.size * d.size * 3)
                for p in 0..<(d.size * d.size) {
                    let c = r.mask[p] == 0 ? (24, 24, 24) : Overlay.labelColour(Int(r.mask[p]))
                    (m[3 * p], m[3 * p + 1], m[3 * p + 2]) = (c.0, c.1, c.2)
                }
                masks.append(Image(width: d.size, height: d.size, channels: 3, pixels: m))
            }
            tiles.append(row + masks)
        }
        let splitName = ["train", "val", "test"].indices.contains(split) ? ["train", "val", "test"][split] : "split \(split)"
        return ImageGrid(
            title: "synthetic-tol \(splitName) split: \(per) image\(per == 1 ? "" : "s") per species and their part masks",
            columnHeaders: (0..<per).map { "image \($0 + 1)" } + (0..<per).map { "parts \($0 + 1)" },
            rowHeaders: d.world.species.map(\.binomial), tiles: tiles, tileSize: Double(min(max(d.size, 48), 96)))
    }
}
