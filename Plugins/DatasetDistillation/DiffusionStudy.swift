import DistillationKit
import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// The comparison of Docs/methods/diffusion-dd.md: random selection, DM, plain diffusion sampling,
/// D^3HR and CONCORD (on plain and on D^3HR generation) at each IPC, each evaluated by both
/// protocols (hard labels; soft labels from one teacher trained once on the full training split).
extension DistilledEvalComponent {
    func diffusionStudy(_ request: Request<Options>) throws -> Response {
        let o = request.options
        let host = request.host, dir = host.scratchDirectory
        // Every method of the study is found through the host first: a missing plugin is named before any work.
        let diffusionRows = ["diffusion-dd", "d3hr", "concord", "concord-d3hr"]
        for name in o.diffusion_methods where !(["random-selection", "dm"] + diffusionRows).contains(name) {
            throw MenagerieError.invalidArgument("unknown method '\(name)' (random-selection, dm, diffusion-dd, d3hr, concord, concord-d3hr)")
        }
        var needed = Set(o.diffusion_methods.filter { diffusionRows.contains($0) }.map { $0 == "concord-d3hr" ? "concord" : $0 })
        if o.diffusion_methods.contains("concord-d3hr") { needed.insert("d3hr") }
        let missing = needed.sorted().filter { (try? host.resolve($0, kind: .distiller)) == nil }
        guard missing.isEmpty else {
            throw MenagerieError.notFound(
                "the diffusion study needs \(missing.map { "'\($0)' (plugin \($0 == "diffusion-dd" ? "latent-diffusion" : $0))" }.joined(separator: ", ")), not installed here: "
                    + "install the plugin or leave the method out with --set 'diffusion_methods=[…]' (`menagerie plugins` lists what is installed)")
        }
        let model = try DiffusionClient(host, id: "latent-diffusion", model: o.diffusion_model, neededBy: "the diffusion study")
        let size = model.config.imageSize
        let dataset = o.dataset.isEmpty ? "synthetic-tol" : o.dataset
        let train = try RealData.load(host, dataset: dataset, options: o.dataset_options, split: "train", size: size, attribute: "")
        let test = try RealData.load(host, dataset: dataset, options: o.dataset_options, split: "test", size: size, attribute: "", limit: o.test_limit)
        guard train.classes.count == model.config.classes else {
            throw MenagerieError.invalidArgument("dataset '\(dataset)' has \(train.classes.count) classes; the diffusion model \(model.config.classes)")
        }
        let normalizer = Normalizer(train)
        let s = try settings(o, seed: host.seed)
        var artifacts: [String] = []
        let teacher = try loadOrTrainTeacher(o, train: train, normalizer: normalizer, settings: s, host: host, artifacts: &artifacts)
        struct Row {
            var method: String
            var ipc: Int
            var proto: String
            var mean: Double
            var std: Double
            var seconds: Double
        }
        var rows: [Row] = []
        var part = 0
        for ipc in o.ipcs {
            for name in o.diffusion_methods {
                try host.checkCancelled()
                part += 1
                host.phase(part, of: o.ipcs.count * o.diffusion_methods.count, "\(name) ipc \(ipc)")
                let t0 = Date()
                var set: DistilledSet
                switch name {
                case "random-selection", "dm":
                    var d = DistillOptions()
                    d.dataset = dataset
                    d.dataset_options = o.dataset_options
                    d.size = size
                    d.ipc = ipc
                    d.iterations = o.dm_iterations
                    d.batch_real = o.batch_real
                    var curve: [(Int, Double)] = []
                    set = try distil(name == "dm" ? .dm : .random, data: train, options: d, seed: host.seed, host: host, curve: &curve)
                default:
                    var d = DiffusionDistillOptions()
                    d.model = o.diffusion_model
                    d.dataset = dataset
                    d.dataset_options = o.dataset_options
                    d.ipc = ipc
                    d.candidates = o.candidates
                    d.lambda = o.lambda
                    d.concepts = o.concepts
                    d.clip = o.clip
                    d.clip_options = o.clip_options
                    d.steps = o.diffusion_steps
                    d.base = name == "concord-d3hr" ? "d3hr" : "plain"
                    let id = name == "concord-d3hr" ? "concord" : name
                    let r = try DistillerProxy(host, id: id).distill(options: try JSONValue(encoding: d))
                    set = try DistilledSet(response: r, from: id, classes: train.classes, dataset: dataset, ipc: ipc)
                }
                let generated = Date().timeIntervalSince(t0)
                try set.grid().write(to: dir + "/grid_\(name)_ipc\(ipc).png")
                artifacts += Figure.files("grid_\(name)_ipc\(ipc).png")
                let hard = try Protocols.hardLabel(set, normalizer: normalizer, test: test, settings: s, host: host, parts: false)
                let (hm, hs) = meanStd(hard)
                rows.append(Row(method: name, ipc: ipc, proto: "hard", mean: hm, std: hs, seconds: generated))
                let soft = try Protocols.softLabel(set, teacher: teacher, normalizer: normalizer, test: test, settings: s, host: host, parts: false)
                let (sm, ss) = meanStd(soft)
                rows.append(Row(method: name, ipc: ipc, proto: "soft", mean: sm, std: ss, seconds: generated))
                host.log(.info, "diffusion-study: \(name) IPC \(ipc): hard \(String(format: "%.3f", hm)), soft \(String(format: "%.3f", sm))")
            }
        }
        var csv = "method,ipc,protocol,mean,std,nets,epochs,distill_seconds\n"
        for r in rows {
            csv +=
                "\(r.method),\(r.ipc),\(r.proto),\(String(format: "%.4f", r.mean)),\(String(format: "%.4f", r.std)),\(o.nets),\(o.epochs),\(String(format: "%.1f", r.seconds))\n"
        }
        try AtomicFile.write(csv, to: dir + "/diffusion_study.csv")
        artifacts.append("diffusion_study.csv")
        for proto in ["hard", "soft"] {
            var plot = LinePlot(
                title: "\(dataset): test accuracy of the distilled sets, \(proto)-label protocol", xLabel: "images per class",
                yLabel: "test accuracy",
                series: o.diffusion_methods.enumerated().map { i, name in
                    .init(
                        name, points: rows.filter { $0.method == name && $0.proto == proto }.map { (Double($0.ipc), $0.mean) },
                        color: LinePlot.color(i))
                })
            plot.xTicks = Array(Set(rows.map(\.ipc))).sorted().map { (Double($0), "\($0)") }
            try plot.write(to: dir + "/diffusion_study_\(proto).png")
            artifacts += Figure.files("diffusion_study_\(proto).png")
        }
        var table: [String: JSONValue] = [:]
        for r in rows { table["\(r.method) ipc\(r.ipc) \(r.proto)"] = .number((r.mean * 1e4).rounded() / 1e4) }
        return Response(
            result: [
                "accuracy": .object(table), "classes": .number(Double(train.classes.count)), "test_images": .number(Double(test.count)),
                "nets": .number(Double(o.nets)), "epochs": .number(Double(o.epochs)),
            ], artifacts: artifacts)
    }
}
