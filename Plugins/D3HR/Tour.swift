import DistillationKit
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

extension D3HRComponent {
    static var inTour: Bool { true }

    /// Eight synthetic-tol species (of different genera), four images each, by the embedded latent
    /// diffusion model: real images, plain DDIM sampling with CFG (`diffusion-dd`), D^3HR, and CONCORD
    /// on plain sampling (`concord`) — the other two methods called through the host, each skipped with
    /// a note when its plugin is not installed; plus the DDIM inversion round trip of real latents to
    /// t = 760.
    func tour(_ request: Request<DiffusionDistillOptions>) throws -> Response {
        let host = request.host, dir = host.scratchDirectory
        var o = DiffusionDistillOptions()
        o.ipc = 4
        o.classes = [0, 8, 16, 24, 32, 40, 48, 56]
        o.candidates = 500
        var result: [String: JSONValue] = [:], artifacts: [String] = [], missing: [String] = []
        let client = try DiffusionClient(host, id: o.generator, model: o.model, neededBy: "the d3hr tour")
        let c = client.config
        let train = try RealData.load(host, dataset: o.dataset, options: o.dataset_options, split: "train", size: c.imageSize, attribute: "")
        // Real images of the same classes, for comparison.
        let realIndex = o.classes.flatMap { train.byClass[$0].prefix(o.ipc) }
        let real = DistilledSet(
            images: train.batch(realIndex), labels: realIndex.map { train.labels[$0] }, classes: train.classes,
            method: "real", dataset: o.dataset, ipc: o.ipc)
        try real.grid().write(to: dir + "/real.png")
        artifacts += Figure.files("real.png")
        for (name, id) in [("plain", "diffusion-dd"), ("d3hr", "d3hr"), ("concord", "concord")] {
            var log: [String: JSONValue] = [:]
            let t0 = Date()
            let set: DistilledSet
            if id == Self.id {
                set = try Self.generate(o, host: host, log: &log)
            } else {
                guard let proxy = try? host.resolve(id, kind: .distiller) else {
                    missing.append(id)
                    continue
                }
                let r = try proxy.invoke("distill", options: try JSONValue(encoding: o))
                set = try DistilledSet(response: r, from: id, classes: client.classNames, dataset: o.dataset, ipc: o.ipc)
                for key in ["generation_seconds", "images_per_s", "final_concept_loss"] where r.result[key] != nil { log[key] = r.result[key] }
            }
            log["seconds"] = .number(Date().timeIntervalSince(t0))
            try set.grid().write(to: dir + "/\(name).png")
            artifacts += Figure.files("\(name).png")
            result[name] = .object(log)
        }
        // The inversion round trip on 16 real images.
        let idx = Array(realIndex.prefix(16))
        let clean = try client.encode(train.batch(idx))
        let labels = idx.map { train.labels[$0] }
        let z = try client.invert(
            clean, classes: labels, steps: o.steps, guidance: o.guidance, toStep: o.inversion_step, recordStep: o.inversion_step)
        let back = try client.sample(z, classes: labels, steps: o.steps, guidance: o.guidance, fromStep: o.inversion_step)
        let err = zip(back, clean).map { Double(($0 - $1) * ($0 - $1)) }.reduce(0, +), power = clean.map { Double($0 * $0) }.reduce(0, +)
        result["inversion_relative_error_760"] = .number((err / power).squareRoot())
        let roundTrip = DistilledSet(
            images: try client.decode(back, count: idx.count), labels: labels, classes: train.classes, method: "inverted", dataset: o.dataset, ipc: o.ipc)
        try roundTrip.grid().write(to: dir + "/inversion_round_trip.png")
        artifacts += Figure.files("inversion_round_trip.png")
        if !missing.isEmpty {
            result["missing"] = .array(missing.map { .string($0) })
            host.log(.warning, "d3hr tour: \(missing.joined(separator: ", ")) not installed; its row is left out")
        }
        result["note"] =
            "real.png: training images; plain/d3hr/concord.png: 4 generated images per species (plain and concord through the host); inversion_round_trip.png: real latents inverted to t=760 and sampled back (compare with real.png)"
        return Response(result: .object(result), artifacts: artifacts)
    }
}
