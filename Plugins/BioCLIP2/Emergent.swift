import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// The emergent properties of BioCLIP 2's embedding space (paper §5), measured on a dataset with
/// known traits and variants. The paper released no analysis code; these formulas are a
/// reconstruction (Docs/methods/bioclip2.md says so). Embeddings are L2-normalised image features.
///
/// Inter-species: species means μ_s, centred M = μ_s − μ̄; the inter-species subspace U = the top-k
/// principal directions of M holding `energy` of its variance.
///   - trait order: |Spearman ρ| between each trait and the species means' projection on the first
///     principal direction; and a leave-one-species-out ridge probe of the trait from μ_s (Spearman ρ
///     of held-out predictions).
///   - separation: Fisher ratio of species, tr(S_b) / tr(S_w).
/// Intra-species (variants a/b of one attribute within a species, both groups non-empty):
///   - FDR = ‖μ_a − μ_b‖² / (tr Σ_a + tr Σ_b), averaged over species;
///   - orthogonality = ‖P⊥(μ_a − μ_b)‖ / ‖μ_a − μ_b‖, P⊥ projecting out U (1 = orthogonal to the
///     inter-species subspace; a random direction gives √(1 − k/D));
///   - explained-variance ratio ρ = tr(P_U Σ_w P_U) / tr(Σ_w): the share of intra-species variation
///     lying in the inter-species subspace (the paper: falls with data scale).
struct EmergentReport {
    var rows: [(name: String, value: Double)] = []
    var speciesMeans2D: [(Double, Double)] = []
    var trait: [Double] = []
    var traitName = ""
    var variantArrows: [(from: (Double, Double), to: (Double, Double))] = []
}

extension BioCLIPComponent {
    func emergent(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let bio = try loadModel(o)
        let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: bio.imageSize, options: o.datasetOptions)
        let report = try analyse(bio, data: data, split: o.split, host: request.host, energy: 0.9)
        let dir = request.host.scratchDirectory
        try AtomicFile.write("metric,value\n" + report.rows.map { "\($0.name),\($0.value)" }.joined(separator: "\n") + "\n", to: dir + "/emergent.csv")
        try plotSpecies(report).write(to: dir + "/species_means.png")
        try plotVariants(report).write(to: dir + "/variants.png")
        return Response(
            result: .object(Dictionary(uniqueKeysWithValues: report.rows.map { ($0.name, JSONValue.number($0.value)) })),
            artifacts: ["emergent.csv"] + Figure.files("species_means.png") + Figure.files("variants.png"))
    }

    func analyse(_ bio: BioCLIP, data: DatasetOptionsProxy, split: String, host: PluginHost, energy: Double) throws -> EmergentReport {
        let described = try data.describe()
        guard let classes = described["classes"]?.arrayValue, let count = described["splits"]?[split]?.intValue, count > 0 else {
            throw MenagerieError.invalidArgument("the dataset describes no classes or no '\(split)' split")
        }
        let traitNames = described["traits"]?.arrayValue?.compactMap(\.stringValue) ?? []
        // Normalised embeddings of the split, with species and variant labels.
        var z: [[Double]] = [], species: [Int] = [], variants: [String: [Int]] = [:]
        for start in stride(from: 0, to: count, by: 128) {
            try host.checkCancelled()
            let b = try data.batch(options: [
                "split": .string(split), "start": .number(Double(start)), "count": .number(Double(min(128, count - start))), "shuffle": false,
            ])
            let x = normalizeChannels(b.tensors["images"]!, mean: bio.config.mean, std: bio.config.std)
            let f = try bio.imageFeatures(x, batch: 64).scalars(as: Float.self)
            let e = bio.config.embedDim
            for i in 0..<(f.count / e) {
                let v = (0..<e).map { Double(f[i * e + $0]) }
                let n = v.map { $0 * $0 }.reduce(0, +).squareRoot()
                z.append(v.map { $0 / max(n, 1e-12) })
            }
            species += try b.tensors["labels"]!.integers()
            for key in ["sex", "stage"] { if let t = b.tensors[key] { variants[key, default: []] += try t.integers() } }
            host.progress(min(count, start + 128), of: count, "embeddings")
        }
        let d = z[0].count, s = classes.count
        func mean(_ rows: [[Double]]) -> [Double] {
            var m = [Double](repeating: 0, count: d)
            for r in rows { for j in 0..<d { m[j] += r[j] } }
            return m.map { $0 / Double(max(rows.count, 1)) }
        }
        func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).map(*).reduce(0, +) }
        let bySpecies = Dictionary(grouping: z.indices, by: { species[$0] })
        let present = (0..<s).filter { (bySpecies[$0]?.count ?? 0) > 0 }
        let means = present.map { mean(bySpecies[$0]!.map { z[$0] }) }
        let grand = mean(means)
        let centred = means.map { m in zip(m, grand).map { $0 - $1 } }
        // Principal directions of the species means via the Gram matrix (s × s).
        let k0 = centred.count
        var gram = [Double](repeating: 0, count: k0 * k0)
        for i in 0..<k0 {
            for j in 0...i {
                let v = dot(centred[i], centred[j])
                gram[i * k0 + j] = v
                gram[j * k0 + i] = v
            }
        }
        let (values, vectors) = try LinearAlgebra.symmetricEigen(gram, n: k0)
        let total = values.filter { $0 > 0 }.reduce(0, +)
        var directions: [[Double]] = [], cumulative = 0.0
        for (lambda, u) in zip(values, vectors) where lambda > 1e-12 * max(total, 1e-300) {
            // Direction in embedding space: Mᵀu / √λ.
            var dir = [Double](repeating: 0, count: d)
            for (i, c) in centred.enumerated() { for j in 0..<d { dir[j] += c[j] * u[i] } }
            let n = dir.map { $0 * $0 }.reduce(0, +).squareRoot()
            directions.append(dir.map { $0 / n })
            cumulative += lambda
            if cumulative >= energy * total { break }
        }
        let kUsed = directions.count
        func project(_ v: [Double]) -> [Double] { // P_U v
            var out = [Double](repeating: 0, count: d)
            for u in directions {
                let c = dot(u, v)
                for j in 0..<d { out[j] += c * u[j] }
            }
            return out
        }
        var report = EmergentReport()
        report.rows.append(("species", Double(present.count)))
        report.rows.append(("images", Double(z.count)))
        report.rows.append(("embedding_dim", Double(d)))
        report.rows.append(("inter_species_dims_\(Int(energy * 100))pct", Double(kUsed)))
        // Fisher ratio of species.
        var within = 0.0, between = 0.0
        for (idx, sp) in present.enumerated() {
            for i in bySpecies[sp]! { within += zip(z[i], means[idx]).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) }
            between += Double(bySpecies[sp]!.count) * centred[idx].map { $0 * $0 }.reduce(0, +)
        }
        report.rows.append(("species_fisher_ratio", between / max(within, 1e-300)))
        // Explained-variance ratio ρ of the within-species scatter in U.
        var inU = 0.0
        for (idx, sp) in present.enumerated() {
            for i in bySpecies[sp]! {
                let r = zip(z[i], means[idx]).map { $0 - $1 }
                inU += project(r).map { $0 * $0 }.reduce(0, +)
            }
        }
        report.rows.append(("intra_variance_in_inter_subspace", inU / max(within, 1e-300)))
        report.rows.append(("random_direction_baseline", Double(kUsed) / Double(d)))
        // Traits along the first principal direction, and a leave-one-species-out ridge probe.
        let pc1 = centred.map { dot($0, directions.first ?? [Double](repeating: 0, count: d)) }
        let pc2 = centred.map { dot($0, directions.count > 1 ? directions[1] : [Double](repeating: 0, count: d)) }
        report.speciesMeans2D = Array(zip(pc1, pc2))
        for name in traitNames {
            let values = present.map { classes[$0]["traits"]?[name]?.doubleValue ?? .nan }
            guard values.allSatisfy({ !$0.isNaN }), Set(values).count > 1 else { continue }
            report.rows.append(("trait_\(name)_pc1_abs_spearman", abs(spearman(pc1, values))))
            report.rows.append(("trait_\(name)_probe_spearman", spearman(ridgeLOO(centred, values, lambda: 1e-2), values)))
            if report.traitName.isEmpty || name == "beak_length" {
                report.traitName = name
                report.trait = values
            }
        }
        // Variants within species.
        let complement = 1 - Double(kUsed) / Double(d)
        for (attribute, labels) in variants.sorted(by: { $0.key < $1.key }) where labels.count == z.count {
            var fdr: [Double] = [], orth: [Double] = []
            for sp in present {
                let members = bySpecies[sp]!
                let a = members.filter { labels[$0] == 0 }, b = members.filter { labels[$0] == 1 }
                guard a.count >= 2, b.count >= 2 else { continue }
                let ma = mean(a.map { z[$0] }), mb = mean(b.map { z[$0] })
                let diff = zip(mb, ma).map { $0 - $1 }
                let norm2 = diff.map { $0 * $0 }.reduce(0, +)
                func trace(_ g: [Int], _ m: [Double]) -> Double {
                    g.map { i in zip(z[i], m).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) }.reduce(0, +) / Double(g.count)
                }
                fdr.append(norm2 / max(trace(a, ma) + trace(b, mb), 1e-300))
                let perpendicular = zip(diff, project(diff)).map { $0 - $1 }
                orth.append((perpendicular.map { $0 * $0 }.reduce(0, +) / max(norm2, 1e-300)).squareRoot())
                if attribute == "sex" {
                    let from = (dot(zip(ma, grand).map { $0 - $1 }, directions[0]), 0.0)
                    report.variantArrows.append((from, (from.0 + dot(diff, directions[0]), (norm2 - pow(dot(diff, directions[0]), 2)).squareRoot())))
                }
            }
            guard !fdr.isEmpty else { continue }
            report.rows.append(("variant_\(attribute)_species", Double(fdr.count)))
            report.rows.append(("variant_\(attribute)_fdr", fdr.reduce(0, +) / Double(fdr.count)))
            report.rows.append(("variant_\(attribute)_orthogonality", orth.reduce(0, +) / Double(orth.count)))
        }
        report.rows.append(("orthogonality_random_baseline", complement.squareRoot()))
        return report
    }

    /// Species means on their first two principal directions, coloured by the trait (viridis, with
    /// a colour bar).
    func plotSpecies(_ r: EmergentReport) -> Figure {
        var plot = ScatterPlot(title: "Species means on the first two principal components", xLabel: "PC1", yLabel: "PC2")
        plot.valued = (
            r.speciesMeans2D.map { (x: $0.0, y: $0.1) }, r.speciesMeans2D.indices.map { r.trait.indices.contains($0) ? r.trait[$0] : .nan },
            r.traitName.replacingOccurrences(of: "_", with: " ")
        )
        return plot.figure()
    }

    /// Per species, the female→male difference of mean embeddings: its component along PC1 (x) and
    /// the length of its part orthogonal to PC1 (y); the female mean sits at y = 0.
    func plotVariants(_ r: EmergentReport) -> Figure {
        var plot = ScatterPlot(
            title: "Sex variants: female → male mean difference per species",
            xLabel: "position along PC1 of the species means", yLabel: "difference orthogonal to PC1")
        plot.groups = [
            .init("female mean", points: r.variantArrows.map { (x: $0.from.0, y: $0.from.1) }, color: LinePlot.color(0)),
            .init("male mean", points: r.variantArrows.map { (x: $0.to.0, y: $0.to.1) }, color: LinePlot.color(3)),
        ]
        plot.segments = ("difference", r.variantArrows.map { ($0.from, $0.to) }, Color(170, 170, 170))
        return plot.figure()
    }
}

extension BioCLIPComponent {
    /// The data-scale experiment: the same training (every option of `train`) with
    /// `trainPerSpecies` set to each of `sizes`, then zero-shot accuracy and the emergent metrics of
    /// each model on the same held-out split. Writes `scale.csv` and `scale.png`.
    func scaleStudy(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.sizes.isEmpty, o.sizes.allSatisfy({ $0 > 0 }) else { throw MenagerieError.invalidArgument("sizes must list positive trainPerSpecies values") }
        let dir = request.host.scratchDirectory
        var header: [String] = ["train_per_species", "train_images"], lines: [String] = []
        var series: [(size: Int, accuracy: Double, rho: Double, orthogonality: Double)] = []
        for size in o.sizes {
            var t = o
            t.datasetOptions = o.datasetOptions.filter { !$0.hasPrefix("trainPerSpecies=") } + ["trainPerSpecies=\(size)"]
            let run = try train(Request(options: t, inputs: request.inputs, host: request.host, component: Self.id, operation: "train"))
            let bio = try BioCLIP(folder: dir + "/model")
            let data = try DatasetOptionsProxy(request.host, id: o.dataset, size: bio.imageSize, options: t.datasetOptions)
            let report = try analyse(bio, data: data, split: o.split, host: request.host, energy: 0.9)
            let accuracy = run.result["zero_shot_accuracy"]?.objectValue ?? [:]
            if lines.isEmpty { header += Rank.allCases.map { "zero_shot_" + $0.label } + report.rows.map(\.name) }
            let images = (run.result["classes"]?.doubleValue ?? 0) * Double(size)
            lines.append(
                (["\(size)", "\(Int(images))"] + Rank.allCases.map { "\(accuracy[$0.label]?.doubleValue ?? .nan)" }
                    + report.rows.map { "\($0.value)" }).joined(separator: ","))
            let value = { (name: String) in report.rows.first { $0.name == name }?.value ?? .nan }
            series.append((size, accuracy["species"]?.doubleValue ?? .nan, value("intra_variance_in_inter_subspace"), value("variant_sex_orthogonality")))
            try FileManager.default.removeItem(atPath: dir + "/model")
            for file in ["curve.csv"] + Figure.files("curve.png") { try? FileManager.default.removeItem(atPath: dir + "/" + file) }
        }
        try AtomicFile.write(header.joined(separator: ",") + "\n" + lines.joined(separator: "\n") + "\n", to: dir + "/scale.csv")
        // Three panels against the data size: species accuracy, ρ, sex-variant orthogonality.
        var figure = Figure(width: 960, height: 330)
        figure.title("Data-scale study: zero-shot and emergent properties vs training images per species")
        let panels: [(String, String, [Double])] = [
            ("Species zero-shot accuracy", "accuracy", series.map(\.accuracy)),
            ("Intra-species variance in the inter-species subspace", "ρ", series.map(\.rho)),
            ("Sex-variant orthogonality", "orthogonality", series.map(\.orthogonality)),
        ]
        for (p, (title, label, values)) in panels.enumerated() {
            var plot = LinePlot(
                title: title, xLabel: "training images per species", yLabel: label,
                series: [.init(label, points: zip(series.map { Double($0.size) }, values).map { ($0, $1) }, color: LinePlot.color(p))])
            plot.xTicks = series.map { (Double($0.size), "\($0.size)") }
            plot.draw(into: &figure, box: Rect(x: Double(p) * 320, y: 30, width: 320, height: 300), panelTitle: title)
        }
        try figure.write(to: dir + "/scale.png")
        return Response(
            result: [
                "sizes": .array(o.sizes.map { .number(Double($0)) }), "table": .string(header.joined(separator: ",") + "\n" + lines.joined(separator: "\n")),
            ],
            artifacts: ["scale.csv"] + Figure.files("scale.png"))
    }
}

/// Spearman rank correlation (average ranks for ties).
public func spearman(_ a: [Double], _ b: [Double]) -> Double {
    func ranks(_ v: [Double]) -> [Double] {
        let order = v.indices.sorted { v[$0] < v[$1] }
        var r = [Double](repeating: 0, count: v.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && v[order[j + 1]] == v[order[i]] { j += 1 }
            for k in i...j { r[order[k]] = Double(i + j) / 2 }
            i = j + 1
        }
        return r
    }
    let (ra, rb) = (ranks(a), ranks(b))
    let (ma, mb) = (ra.reduce(0, +) / Double(ra.count), rb.reduce(0, +) / Double(rb.count))
    let cov = zip(ra, rb).map { ($0 - ma) * ($1 - mb) }.reduce(0, +)
    let va = ra.map { ($0 - ma) * ($0 - ma) }.reduce(0, +), vb = rb.map { ($0 - mb) * ($0 - mb) }.reduce(0, +)
    return cov / max((va * vb).squareRoot(), 1e-300)
}

/// Leave-one-out predictions of kernel ridge regression (linear kernel) of y from rows x:
/// ŷ_i = k_iᵀ (K₋ᵢ + λI)⁻¹ y₋ᵢ, through the eigen decomposition of each K₋ᵢ.
public func ridgeLOO(_ x: [[Double]], _ y: [Double], lambda: Double) -> [Double] {
    let n = x.count
    func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).map(*).reduce(0, +) }
    var gram = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
    for i in 0..<n {
        for j in 0...i {
            let v = dot(x[i], x[j])
            gram[i][j] = v
            gram[j][i] = v
        }
    }
    let ybar = y.reduce(0, +) / Double(n)
    return (0..<n).map { held in
        let keep = (0..<n).filter { $0 != held }
        let m = keep.count
        var k = [Double](repeating: 0, count: m * m)
        for (a, i) in keep.enumerated() { for (b, j) in keep.enumerated() { k[a * m + b] = gram[i][j] } }
        guard let (values, vectors) = try? LinearAlgebra.symmetricEigen(k, n: m) else { return ybar }
        let yc = keep.map { y[$0] - ybar }
        // α = V diag(1/(λ_i + λ)) Vᵀ y
        var alpha = [Double](repeating: 0, count: m)
        for (lv, v) in zip(values, vectors) {
            let c = dot(v, yc) / (lv + lambda)
            for a in 0..<m { alpha[a] += c * v[a] }
        }
        return ybar + keep.enumerated().map { gram[held][$0.element] * alpha[$0.offset] }.reduce(0, +)
    }
}
