import DistillationKit
import Foundation
import MenagerieKit
import NN
import Tensors

/// `diffusion-dd`: plain class-conditional DDIM sampling with classifier-free guidance, from noise,
/// as a distiller — the baseline of D^3HR and CONCORD. It drives the diffusion backbone named by
/// `generator` through the host, as they do.
struct PlainDiffusionComponent: DiffusionDistiller {
    typealias Options = DiffusionDistillOptions
    static let id = "diffusion-dd"
    static let summary = "Plain diffusion sampling as distillation: IPC images per class by DDIM with classifier-free guidance from noise"

    static func generate(_ o: DiffusionDistillOptions, host: PluginHost, log: inout [String: JSONValue]) throws -> DistilledSet {
        let client = try DiffusionClient(host, id: o.generator, model: o.model, neededBy: "diffusion-dd")
        let c = client.config, d = c.latentDimension
        let mapping = try ClassMapping(o, backboneClasses: c.classes)
        let chosen = try chosenClasses(o, classes: mapping.count)
        let labels = chosen.flatMap { [Int](repeating: $0, count: o.ipc) }
        let backboneLabels = mapping.map(labels)
        var rng = SeededGenerator(seed: host.seed)
        let start = (0..<(labels.count * d)).map { _ in Float(rng.nextNormal()) }
        let top = try client.ddim(steps: o.steps).timesteps.last ?? 0
        let began = Date()
        var latents: [Float] = []
        for chunk in stride(from: 0, to: labels.count, by: o.batch) {
            let range = chunk..<min(labels.count, chunk + o.batch)
            latents += try client.sample(
                Array(start[(range.lowerBound * d)..<(range.upperBound * d)]), classes: Array(backboneLabels[range]), steps: o.steps, guidance: o.guidance,
                fromStep: top)
            host.progress(range.upperBound, of: labels.count, Self.id)
        }
        log["generation_seconds"] = .number(Date().timeIntervalSince(began))
        log["images_per_s"] = .number(Double(labels.count) / max(Date().timeIntervalSince(began), 1e-9))
        log["classes"] = .number(Double(chosen.count))
        let images = try client.decode(latents, count: labels.count)
        let names = o.class_ids.isEmpty ? client.classNames : o.class_ids.map { client.classNames[$0] }
        return try generatedSet(images: images, labels: labels, classes: names, method: Self.id, options: o, realStats: nil)
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`).
public enum LatentDiffusionPlugin: Plugin {
    public static let name = "latent-diffusion"
    public static let version = "0.3.0"
    public static let summary =
        "A class-conditional latent diffusion backbone (autoencoder + DiT, CFG, DDIM sampling and inversion, decoder VJP) with its embedded synthetic-tol model, and plain sampling as a distiller"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [LatentDiffusionComponent.self, PlainDiffusionComponent.self]
}

extension PlainDiffusionComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "diffusion.generate", unit: "images/s",
            summary: "diffusion-dd generating 16 images (4 classes × IPC 4, 50 steps, CFG 4), the backbone through the host")
    ]
    func benchmark(_ run: BenchmarkRun) throws { try run.generationBenchmark("diffusion.generate", component: Self.id) }
}
