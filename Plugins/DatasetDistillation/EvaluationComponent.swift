import DistillationKit
import Formats
import Foundation
import Imaging
import MenagerieKit
import NN
import Tensors

/// `distilled-eval`: the evaluation protocols on any distilled set, and the bias study.
struct DistilledEvalComponent: Metric {
    struct Options: ComponentOptions {
        var distilled = ""
        var dataset = ""
        var dataset_options: [String] = []
        var `protocol` = "hard"
        var nets = 5
        var epochs = 300
        var batch = 256
        var lr = 0.01
        var augment = "dsa"
        var width = 128
        var depth = 3
        var test_limit = 0
        var teacher = ""
        var teacher_epochs = 30
        var temperature = 4.0
        // released soft-label protocol (soft_label)
        var student = "resnet18_modified"
        var students: [String] = []
        var teacher_arch = "resnet18_modified"
        var teacher_limit = 0
        var cutmix_temperature = 20.0
        var adamw_lr = 0.001
        var adamw_weight_decay = 0.01
        var soft_batch = 0
        // bias study
        var rhos: [Double] = [0.1, 0.5, 0.8, 0.95, 1.0]
        var methods: [String] = ["random-selection", "herding", "dm", "dc", "dsa"]
        var task_specific: [String] = ["random-selection", "dm"]
        var ipc = 10
        var severity = 4
        var dm_iterations = 200
        var dc_iterations = 20
        var dc_inner_loop = 10
        var batch_real = 64
        var per_class = 500
        var from_csv = ""
        // diffusion study
        var ipcs = [1, 10]
        var diffusion_methods = ["random-selection", "dm", "diffusion-dd", "d3hr", "concord", "concord-d3hr"]
        var diffusion_model = ""
        var diffusion_steps = 50
        var candidates = 2000
        var lambda = 1.0
        var concepts = ""
        var clip = "bioclip2"
        var clip_options: [String] = []
        static let help = [
            "ipcs": "diffusion-study: images per class compared",
            "diffusion_methods": "diffusion-study: random-selection, dm, diffusion-dd, d3hr, concord, concord-d3hr",
            "diffusion_model": "diffusion-study: the latent diffusion folder (empty: the embedded synthetic-tol model)",
            "candidates": "diffusion-study: D^3HR candidate groups per class", "lambda": "diffusion-study: CONCORD's λ",
            "concepts": "diffusion-study: CONCORD's concepts JSON (empty: the file shipped for synthetic-tol or cmnist-dd)",
            "clip": "diffusion-study: CONCORD's CLIP backbone component", "clip_options": "diffusion-study: key=value options for it",
            "diffusion_steps": "diffusion-study: DDIM steps of the diffusion methods (D^3HR's 600, 620 and 760 must lie on the grid)",
            "from_csv": "bias-study: redraw the table and plot from an earlier run's bias_study.csv instead of running it",
            "distilled": "a distilled.safetensors (from any distiller)",
            "dataset": "the dataset whose test split is evaluated (default: the one the set was distilled from)",
            "dataset_options": "key=value dataset options (default: those the set was distilled with)",
            "protocol":
                "hard (fresh ConvNet-3, SGD, hard labels), soft (this project's: ConvNet-3 teacher logits on DSA batches, KL·T² at temperature, AdamW, per-step cosine) or soft_label (D^3HR's released protocol: frozen teacher, RandomResizedCrop+flip, CutMix, KL batchmean at cutmix_temperature without T², AdamW on >1-D weights, per-epoch half cosine)",
            "student": "soft_label: the student network, convnet3, resnet18 or resnet18_modified (3×3 stem, no max-pool)",
            "students": "soft_label: several students → a cross-architecture table, cross_architecture.csv (empty: just `student`)",
            "teacher_arch":
                "soft_label: the teacher's network (convnet3, resnet18, resnet18_modified); teacher=FILE must be one (torchvision state-dict names)",
            "teacher_limit": "soft_label: train the teacher on at most this many training images (0: all)",
            "cutmix_temperature": "soft_label: the KL temperature T (the released 20 for CutMix)",
            "adamw_lr": "soft_label: the AdamW rate (released: 1e-3 for ResNets and ConvNets)",
            "adamw_weight_decay": "soft_label: AdamW weight decay on the weights with more than one dimension",
            "soft_batch": "soft_label: batch size (0: the released rule: 100 at IPC ≥ 50, 50 at IPC ≥ 10, else 15, at most IPC·classes)",
            "nets": "networks trained (mean ± std over them)", "epochs": "training epochs (lr × 0.1 at half for hard)", "batch": "batch size",
            "lr": "hard: SGD rate", "augment": "dsa (every batch through one DSA draw) or none", "width": "ConvNet width", "depth": "ConvNet depth",
            "test_limit": "evaluate on at most this many test images (0: all)",
            "teacher":
                "soft: a teacher ConvNet safetensors; soft_label: a teacher_arch checkpoint (.pt/.pth or safetensors, torchvision names); empty: trained here on the train split with hard labels and written as teacher.safetensors",
            "teacher_epochs": "soft: epochs of the teacher's training", "temperature": "soft: KL temperature",
            "rhos": "bias-study: the bias-aligned ratios ρ", "methods": "bias-study: distillers run at every ρ",
            "task_specific": "bias-study: distillers also run toward the unbiased attribute distribution (target=balanced-attribute)",
            "ipc": "bias-study: images per class", "severity": "bias-study: colour-noise severity 1…4",
            "dm_iterations": "bias-study: DM iterations", "dc_iterations": "bias-study: DC/DSA iterations",
            "dc_inner_loop":
                "bias-study: DC/DSA network epochs between image updates (outer loop 10 as the reference at IPC 10; the reference inner loop is 50)",
            "batch_real": "bias-study: real images per class per matching step", "per_class": "bias-study: rendered training digits per class",
        ]
        static let choices = [
            "protocol": ["hard", "soft", "soft_label"], "augment": ["dsa", "none"], "student": EvalArch.allCases.map(\.rawValue),
            "teacher_arch": EvalArch.allCases.map(\.rawValue),
        ]
        static let ranges: [String: ClosedRange<Double>] = [
            "nets": 1...1000, "epochs": 0...1e6, "batch": 1...1e6, "lr": 0...1e3, "width": 1...65536, "depth": 1...30, "test_limit": 0...1e12,
            "teacher_epochs": 0...1e6, "temperature": 1e-6...1e6, "rhos": 0...1, "ipc": 1...1e6, "severity": 1...4, "dm_iterations": 0...1e8,
            "dc_iterations": 0...1e8, "dc_inner_loop": 0...1e6, "batch_real": 1...1e6, "per_class": 1...1e7, "ipcs": 1...1e6,
            "diffusion_steps": 1...1e6, "candidates": 1...1e7, "lambda": -1e6...1e6, "teacher_limit": 0...1e12,
            "cutmix_temperature": 1e-6...1e6, "adamw_lr": 0...1e3, "adamw_weight_decay": 0...1e3, "soft_batch": 0...1e6,
        ]
    }
    static let id = "distilled-eval"
    static let summary = "Evaluates distilled sets: ConvNet-3 trained from scratch on them (hard or soft labels), tested on the real test split"
    static let operations = [
        OperationSpec("evaluate", summary: "accuracy of `nets` networks trained on the distilled set → mean, std, per-net accuracies"),
        OperationSpec(
            "diffusion-study", summary: "random selection, DM, plain diffusion, D^3HR and CONCORD at each IPC under both protocols → diffusion_study.csv, plots"
        ),
        OperationSpec(
            "bias-study",
            summary:
                "for each ρ: distil cmnist-dd with each method (and toward the unbiased target), evaluate on the unbiased test split → bias_study.csv, bias_study.png"
        ),
    ]

    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        operation == "diffusion-study" ? try diffusionStudy(request) : try biasStudy(request)
    }

    func settings(_ o: Options, seed: UInt64) throws -> Protocols.Settings {
        guard o.nets > 0, o.epochs > 0, o.batch > 0, o.lr > 0, o.temperature > 0 else {
            throw MenagerieError.invalidArgument("nets, epochs, batch, lr and temperature must be > 0")
        }
        var s = Protocols.Settings()
        s.nets = o.nets
        s.epochs = o.epochs
        s.batch = o.batch
        s.lr = o.lr
        s.dsa = o.augment == "dsa" ? DSA() : nil
        s.width = o.width
        s.depth = o.depth
        s.seed = seed
        s.temperature = o.temperature
        return s
    }

    func evaluate(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard !o.distilled.isEmpty else { throw MenagerieError.invalidArgument("'\(Self.id)' needs --set distilled=distilled.safetensors") }
        let set = try DistilledSet.read(o.distilled)
        let dataset = o.dataset.isEmpty ? set.dataset : o.dataset
        let datasetOptions =
            o.dataset_options.isEmpty
            ? (set.extra["dataset_options"].flatMap { try? JSONValue.parse($0).arrayValue?.compactMap(\.stringValue) } ?? []) : o.dataset_options
        let test = try RealData.load(request.host, dataset: dataset, options: datasetOptions, split: "test", size: set.size, attribute: "", limit: o.test_limit)
        let s = try settings(o, seed: request.host.seed)
        let t0 = Date()
        var normalizer = set.normalizer()
        var artifacts: [String] = []
        let accuracies: [Double]
        var extra: [String: JSONValue] = [:]
        if o.protocol == "soft_label" {
            let names = o.students.isEmpty ? [o.student] : o.students
            let students = try names.map { name -> EvalArch in
                guard let a = EvalArch(rawValue: name) else {
                    throw MenagerieError.invalidArgument("student '\(name)' is none of \(EvalArch.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return a
            }
            guard let teacherArch = EvalArch(rawValue: o.teacher_arch) else {
                throw MenagerieError.invalidArgument("teacher_arch '\(o.teacher_arch)' is none of \(EvalArch.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let train = try RealData.load(
                request.host, dataset: dataset, options: datasetOptions, split: "train", size: set.size, attribute: "", limit: o.teacher_limit)
            if normalizer == nil { normalizer = Normalizer(train) }
            let teacher = try loadOrTrainEvalTeacher(
                o, arch: teacherArch, train: train, normalizer: normalizer!, settings: s, host: request.host, artifacts: &artifacts)
            var r = ReleasedSoftLabel.Settings()
            r.nets = o.nets
            r.epochs = o.epochs
            r.batch = o.soft_batch
            r.lr = o.adamw_lr
            r.weightDecay = o.adamw_weight_decay
            r.temperature = o.cutmix_temperature
            r.seed = request.host.seed
            var table: [String: JSONValue] = [:]
            var csv = "student,mean,std,accuracies\n"
            var first: [Double] = []
            for (i, student) in students.enumerated() {
                if students.count > 1 { request.host.phase(i + 1, of: students.count, student.rawValue) }
                let acc = try ReleasedSoftLabel.evaluate(
                    set, teacher: teacher, student: student, normalizer: normalizer!, test: test, settings: r, host: request.host, width: o.width,
                    depth: o.depth)
                if i == 0 { first = acc }
                let (m, sd) = meanStd(acc)
                table[student.rawValue] = .object(["mean": .number(m), "std": .number(sd), "accuracies": .array(acc.map { .number($0) })])
                csv +=
                    "\(student.rawValue),\(String(format: "%.4f", m)),\(String(format: "%.4f", sd)),\""
                    + acc.map { String(format: "%.4f", $0) }.joined(separator: " ") + "\"\n"
            }
            try AtomicFile.write(csv, to: request.host.scratchDirectory + "/cross_architecture.csv")
            artifacts.append("cross_architecture.csv")
            accuracies = first
            extra["students"] = .object(table)
            extra["teacher_arch"] = .string(teacherArch.rawValue)
            extra["teacher_test_accuracy"] = .number(
                Protocols.accuracy(
                    { teacher($0) }, test: test, normalized: normalizer!.normalize(test.images, channels: test.channels, plane: test.plane)))
        } else if o.protocol == "soft" {
            let train = try RealData.load(request.host, dataset: dataset, options: datasetOptions, split: "train", size: set.size, attribute: "")
            if normalizer == nil { normalizer = Normalizer(train) }
            let teacher = try loadOrTrainTeacher(o, train: train, normalizer: normalizer!, settings: s, host: request.host, artifacts: &artifacts)
            accuracies = try Protocols.softLabel(set, teacher: teacher, normalizer: normalizer!, test: test, settings: s, host: request.host)
        } else {
            if normalizer == nil {
                normalizer = Normalizer(
                    try RealData.load(request.host, dataset: dataset, options: datasetOptions, split: "train", size: set.size, attribute: ""))
            }
            accuracies = try Protocols.hardLabel(set, normalizer: normalizer!, test: test, settings: s, host: request.host)
        }
        let (mean, std) = meanStd(accuracies)
        var result: [String: JSONValue] = [
            "protocol": .string(o.protocol), "accuracies": .array(accuracies.map { .number($0) }), "mean": .number(mean),
            "std": .number(std), "nets": .number(Double(o.nets)), "epochs": .number(Double(o.epochs)),
            "method": .string(set.method), "ipc": .number(Double(set.ipc)), "test_images": .number(Double(test.count)),
            "seconds": .number(Date().timeIntervalSince(t0)),
        ]
        result.merge(extra) { _, b in b }
        return Response(result: .object(result), artifacts: artifacts)
    }

    /// The released protocol's teacher: a `teacher_arch` network loaded from `teacher` (torchvision
    /// state-dict names; .pt/.pth or safetensors), or trained here with hard labels (SGD, `lr`,
    /// `teacher_epochs`, DSA when `augment=dsa`) on the train split and written as teacher.safetensors.
    /// Frozen and in evaluation mode.
    func loadOrTrainEvalTeacher(
        _ o: Options, arch: EvalArch, train: RealData, normalizer: Normalizer, settings s: Protocols.Settings, host: PluginHost,
        artifacts: inout [String]
    ) throws -> EvalNet {
        let net = try EvalNet(
            arch, channels: train.channels, classes: train.classes.count, imageSize: train.size, width: s.width, depth: s.depth, seed: s.seed &+ 77)
        if !o.teacher.isEmpty {
            let path = (o.teacher as NSString).expandingTildeInPath
            do { try net.module.load(from: try Checkpoint(path: path)) } catch {
                throw MenagerieError.invalidArgument(
                    "teacher '\(o.teacher)' does not fit a \(arch.rawValue) for \(train.classes.count) classes of \(train.channels)×\(train.size)² images (teacher_arch=): \(error)"
                )
            }
        } else {
            var t = s
            t.epochs = o.teacher_epochs
            let x = try Tensor(
                normalizer.normalize(train.images, channels: train.channels, plane: train.plane),
                shape: [train.count, train.channels, train.size, train.size])
            try Protocols.fitHard(net, images: x, labels: train.labels, settings: t, seed: s.seed &+ 77, host: host, label: "teacher \(arch.rawValue)")
            try net.module.save(to: host.scratchDirectory + "/teacher.safetensors", metadata: ["arch": arch.rawValue])
            artifacts.append("teacher.safetensors")
        }
        net.isTraining = false
        for p in net.module.parameters { p.variable = Variable(p.value) }
        return net
    }

    func loadOrTrainTeacher(
        _ o: Options, train: RealData, normalizer: Normalizer, settings s: Protocols.Settings, host: PluginHost,
        artifacts: inout [String]
    ) throws -> ConvNet {
        let net = try checkedConvNet(
            channels: train.channels, classes: train.classes.count, width: s.width, depth: s.depth, imageSize: train.size, seed: s.seed &+ 77)
        if !o.teacher.isEmpty {
            do { try net.load(from: try Checkpoint(path: o.teacher)) } catch {
                throw MenagerieError.invalidArgument(
                    "teacher '\(o.teacher)' does not fit a ConvNet-\(s.depth) of width \(s.width) on \(train.channels)×\(train.size)²: \(error)")
            }
            return net
        }
        var t = s
        t.epochs = o.teacher_epochs
        let x = try Tensor(
            normalizer.normalize(train.images, channels: train.channels, plane: train.plane), shape: [train.count, train.channels, train.size, train.size])
        let teacher = try Protocols.trainHard(
            images: x, labels: train.labels, classes: train.classes.count, settings: t, seed: s.seed &+ 77, host: host, label: "teacher")
        try teacher.save(to: host.scratchDirectory + "/teacher.safetensors")
        artifacts.append("teacher.safetensors")
        return teacher
    }

    /// The bias study on cmnist-dd: every method at every ρ, plain and toward the unbiased target.
    func biasStudy(_ request: Request<Options>) throws -> Response {
        let o = request.options
        guard o.rhos.allSatisfy({ (0...1).contains($0) }), !o.rhos.isEmpty else { throw MenagerieError.invalidArgument("rhos must lie in [0, 1]") }
        guard (1...4).contains(o.severity) else { throw MenagerieError.invalidArgument("severity must be 1…4") }
        let methods = try o.methods.map { name -> Method in
            guard let m = Method(rawValue: name) else {
                throw MenagerieError.invalidArgument("unknown method '\(name)' (random-selection, herding, dc, dsa, dm)")
            }
            return m
        }
        let specific = try o.task_specific.map { name -> Method in
            guard let m = Method(rawValue: name) else { throw MenagerieError.invalidArgument("unknown method '\(name)' in task_specific") }
            return m
        }
        let dir = request.host.scratchDirectory
        var rows: [(rho: Double, method: String, mean: Double, std: Double, seconds: Double)] = []
        if !o.from_csv.isEmpty {
            rows = try Self.readStudy(o.from_csv)
            try AtomicFile.write(try RegularFile.text(o.from_csv), to: dir + "/bias_study.csv")
        } else {
            rows = try runStudy(o, methods: methods, specific: specific, request: request)
        }
        var names: [String] = []
        for r in rows where !names.contains(r.method) { names.append(r.method) }
        var plot = LinePlot(
            title: "CMNIST-DD: unbiased test accuracy vs bias ratio (\(o.ipc) images per class)", xLabel: "bias-aligned ratio ρ",
            yLabel: "test accuracy (unbiased split)",
            series: names.enumerated().map { i, name in
                .init(name, points: rows.filter { $0.method == name }.map { ($0.rho, $0.mean) }, color: LinePlot.color(i), dashed: i >= 10)
            }, xRange: 0...1.02, yRange: 0...1)
        plot.height = 480
        try plot.write(to: dir + "/bias_study.png")
        var table: [String: JSONValue] = [:]
        for name in names { table[name] = .array(rows.filter { $0.method == name }.map { .array([.number($0.rho), .number($0.mean), .number($0.std)]) }) }
        let artifacts =
            ["bias_study.csv"] + Figure.files("bias_study.png")
            + (try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("distilled_") }.sorted())
        return Response(
            result: [
                "rows": .object(table), "ipc": .number(Double(o.ipc)), "nets": .number(Double(o.nets)), "epochs": .number(Double(o.epochs)),
                "digits": "cmnist-dd (built-in renderer)",
            ], artifacts: artifacts)
    }
    /// Runs every (ρ, method, target) of the study, writing bias_study.csv as it goes.
    func runStudy(_ o: Options, methods: [Method], specific: [Method], request: Request<Options>) throws
        -> [(rho: Double, method: String, mean: Double, std: Double, seconds: Double)]
    {
        let dir = request.host.scratchDirectory
        let s = try settings(o, seed: request.host.seed)
        let baseOptions = ["severity=\(o.severity)", "per_class=\(o.per_class)"]
        let test = try RealData.load(request.host, dataset: "cmnist-dd", options: baseOptions, split: "test", size: 28, attribute: "", limit: o.test_limit)
        var rows: [(rho: Double, method: String, mean: Double, std: Double, seconds: Double)] = []
        var csv = "rho,method,target,mean,std,accuracies,distill_seconds\n"
        let runs = methods.map { ($0, "none") } + specific.map { ($0, "balanced-attribute") }
        var part = 0
        for rho in o.rhos {
            let options = baseOptions + ["rho=\(rho)"]
            let train = try RealData.load(request.host, dataset: "cmnist-dd", options: options, split: "train", size: 28, attribute: "colors")
            for (method, target) in runs {
                part += 1
                request.host.phase(part, of: o.rhos.count * runs.count, "rho \(rho) \(method.rawValue)" + (target == "none" ? "" : " (target)"))
                var d = DistillOptions()
                d.dataset = "cmnist-dd"
                d.dataset_options = options
                d.ipc = o.ipc
                d.iterations = method == .dm ? o.dm_iterations : o.dc_iterations
                d.batch_real = o.batch_real
                d.width = o.width
                d.depth = o.depth
                d.target = target
                if method == .dc || method == .dsa {
                    d.outer_loop = dcLoops(ipc: o.ipc)?.0 ?? 10
                    d.inner_loop = o.dc_inner_loop
                }
                var curve: [(Int, Double)] = []
                let t0 = Date()
                let set = try distil(method, data: train, options: d, seed: request.host.seed, host: request.host, curve: &curve)
                let seconds = Date().timeIntervalSince(t0)
                let acc = try Protocols.hardLabel(set, normalizer: set.normalizer()!, test: test, settings: s, host: request.host, parts: false)
                let (mean, std) = meanStd(acc)
                let name = method.rawValue + (target == "none" ? "" : " (target)")
                rows.append((rho, name, mean, std, seconds))
                csv +=
                    String(format: "%g,%@,%@,%.4f,%.4f,", rho, method.rawValue, target, mean, std)
                    + "\"" + acc.map { String(format: "%.4f", $0) }.joined(separator: " ") + "\"" + String(format: ",%.1f\n", seconds)
                request.host.log(.info, String(format: "ρ %.2f %@: %.2f ± %.2f %%", rho, name, 100 * mean, 100 * std))
                try AtomicFile.write(csv, to: dir + "/bias_study.csv")
                if rho == o.rhos.last {
                    try set.write(to: dir + "/distilled_\(method.rawValue)\(target == "none" ? "" : "_target").safetensors")
                }
            }
        }
        return rows
    }

    /// The rows of a bias_study.csv (rho, method, target, mean, std, "accuracies", seconds).
    static func readStudy(_ path: String) throws -> [(rho: Double, method: String, mean: Double, std: Double, seconds: Double)] {
        let text: String
        do { text = try RegularFile.text(path) } catch { throw MenagerieError.invalidArgument("\(error)") }
        return try text.split(separator: "\n").dropFirst().map { line in
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard f.count == 7, let rho = Double(f[0]), let mean = Double(f[3]), let std = Double(f[4]), let seconds = Double(f[6]) else {
                throw MenagerieError.invalidArgument("'\(path)' is not a bias_study.csv (line: \(line))")
            }
            return (rho, f[1] + (f[2] == "none" ? "" : " (target)"), mean, std, seconds)
        }
    }

}

func meanStd(_ v: [Double]) -> (Double, Double) {
    let m = v.reduce(0, +) / Double(max(v.count, 1))
    let s = v.count > 1 ? (v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count - 1)).squareRoot() : 0
    return (m, s)
}
