import Foundation
import Imaging
import MenagerieKit
import Tensors

/// The `synthetic-tol` dataset component.
struct SyntheticTreeOfLifeComponent: Dataset {
    struct Options: ComponentOptions {
        var seed = 0
        var size = 64
        var phyla = 2
        var classesPerPhylum = 1
        var ordersPerClass = 2
        var familiesPerOrder = 2
        var generaPerFamily = 2
        var speciesPerGenus = 4
        var trainPerSpecies = 24
        var valPerSpecies = 4
        var testPerSpecies = 8
        var split = "train"
        var start = 0
        var count = 64
        var shuffle = true
        var epoch = 0
        var splits = "all"
        var exportPerSpecies = 0
        var sheetPerSpecies = 4
        static let help = [
            "seed": "the world and every image are fixed by this seed",
            "size": "image side in pixels (16…224)",
            "phyla": "phyla under the one kingdom (even ones winged, odd ones finned)",
            "classesPerPhylum": "classes per phylum", "ordersPerClass": "orders per class",
            "familiesPerOrder": "families per order", "generaPerFamily": "genera per family",
            "speciesPerGenus": "species per genus (siblings differ in one part)",
            "trainPerSpecies": "training images per species", "valPerSpecies": "validation images per species",
            "testPerSpecies": "test images per species",
            "split": "batch: which split", "start": "batch: first position in the epoch's order",
            "count": "batch: number of images", "shuffle": "batch: seeded shuffle of the split",
            "epoch": "batch: the shuffle's epoch (each epoch has its own order)",
            "splits": "export: 'all' or a comma list of train, val, test",
            "exportPerSpecies": "export: at most this many images per species and split (0 = all)",
            "sheetPerSpecies": "export: images per species on the contact sheet",
        ]
        static let choices = ["split": ["train", "val", "test"]]
    }

    static let id = "synthetic-tol"
    public static let summary = "A synthetic tree of life: rendered organisms with a 7-rank taxonomy, traits, variants and part masks"
    static let inTour = true
    static let operations = [
        OperationSpec(
            "batch", summary: "images, labels at every rank, part masks and variant labels of one slice of a split",
            outputs: [
                TensorSpec("images", dtypes: ["f32"], shape: "N×3×S×S", summary: "RGB in [0, 1]"),
                TensorSpec("masks", dtypes: ["u8"], shape: "N×S×S", summary: "part labels: 0 background, 1 head, 2 body, 3 wings/fins, 4 tail, 5 appendage"),
                TensorSpec("labels", dtypes: ["i64"], shape: "N", summary: "species index"),
                TensorSpec("rank_labels", dtypes: ["i64"], shape: "N×7", summary: "node index per rank, kingdom … species"),
                TensorSpec("sex", dtypes: ["i64"], shape: "N", summary: "0 female, 1 male"),
                TensorSpec("stage", dtypes: ["i64"], shape: "N", summary: "0 juvenile, 1 adult"),
                TensorSpec("index", dtypes: ["i64"], shape: "N", summary: "the image's index in its split"),
            ]),
        OperationSpec("describe", summary: "classes with taxonomy, common names, traits; sibling pairs; parts; variants; splits"),
        OperationSpec("export", summary: "PNG images and masks, metadata.csv, traits.csv, sibling_pairs.csv and a contact sheet"),
    ]

    func dataset(_ o: Options) throws -> SyntheticTreeOfLife {
        func positive(_ v: Int, _ name: String, max: Int = 64) throws {
            guard (1...max).contains(v) else {
                throw MenagerieError.invalidArgument("option '\(name)' of '\(Self.id)' must lie in 1…\(max), got \(v)")
            }
        }
        guard (16...224).contains(o.size) else {
            throw MenagerieError.invalidArgument("option 'size' of '\(Self.id)' must lie in 16…224, got \(o.size)")
        }
        for (v, n) in [
            (o.phyla, "phyla"), (o.classesPerPhylum, "classesPerPhylum"), (o.ordersPerClass, "ordersPerClass"),
            (o.familiesPerOrder, "familiesPerOrder"), (o.generaPerFamily, "generaPerFamily"), (o.speciesPerGenus, "speciesPerGenus"),
        ] {
            try positive(v, n)
        }
        let shape = TreeShape(
            phyla: o.phyla, classesPerPhylum: o.classesPerPhylum, ordersPerClass: o.ordersPerClass,
            familiesPerOrder: o.familiesPerOrder, generaPerFamily: o.generaPerFamily, speciesPerGenus: o.speciesPerGenus)
        guard shape.speciesCount <= 10_000 else {
            throw MenagerieError.invalidArgument("the tree shape gives \(shape.speciesCount) species; at most 10000 are supported")
        }
        for (v, n) in [(o.trainPerSpecies, "trainPerSpecies"), (o.valPerSpecies, "valPerSpecies"), (o.testPerSpecies, "testPerSpecies")] {
            guard (0...100_000).contains(v) else { throw MenagerieError.invalidArgument("option '\(n)' of '\(Self.id)' must lie in 0…100000, got \(v)") }
        }
        return SyntheticTreeOfLife(
            seed: UInt64(bitPattern: Int64(o.seed)), shape: shape, size: o.size,
            perSpecies: [o.trainPerSpecies, o.valPerSpecies, o.testPerSpecies])
    }

    func describe(_ request: Request<Options>) throws -> Response {
        let d = try dataset(request.options)
        return Response(result: describeJSON(d))
    }

    func batch(_ request: Request<Options>) throws -> Response {
        let o = request.options, d = try dataset(o)
        guard let split = splitNames.firstIndex(of: o.split) else { throw MenagerieError.invalidArgument("unknown split '\(o.split)'") }
        let total = d.count(split: split)
        guard o.start >= 0, o.count > 0, o.start < total else {
            throw MenagerieError.invalidArgument("'\(Self.id)' split '\(o.split)' has \(total) images; start \(o.start) with count \(o.count) selects none")
        }
        let picked = Array(d.order(split: split, shuffle: o.shuffle, epoch: o.epoch)[o.start..<min(total, o.start + o.count)])
        let (tensors, _) = try makeBatch(d, split: split, indices: picked)
        return Response(
            result: [
                "split": .string(o.split), "start": .number(Double(o.start)), "count": .number(Double(picked.count)),
                "total": .number(Double(total)), "classes": .number(Double(d.world.species.count)),
                "size": .number(Double(d.size)),
            ],
            tensors: tensors)
    }

    /// Renders the images of `indices` (split order) on all threads into batch tensors.
    func makeBatch(_ d: SyntheticTreeOfLife, split: Int, indices: [Int]) throws -> ([(name: String, tensor: Tensor)], [Sample]) {
        let n = indices.count, s = d.size, plane = s * s
        let samples = indices.map { d.sample(split: split, index: $0) }
        var images = [Float](repeating: 0, count: n * 3 * plane)
        var masks = [UInt8](repeating: 0, count: n * plane)
        images.withUnsafeMutableBufferPointer { ip in
            masks.withUnsafeMutableBufferPointer { mp in
                let out = UncheckedBox((ip.baseAddress!, mp.baseAddress!))
                Parallel.chunks(n, grain: 1) { range in
                    let (img, msk) = out.value
                    for i in range {
                        let r = d.render(samples[i])
                        for p in 0..<plane {
                            for c in 0..<3 { img[(i * 3 + c) * plane + p] = Float(r.rgb[3 * p + c]) / 255 }
                            msk[i * plane + p] = r.mask[p]
                        }
                    }
                }
            }
        }
        let species = samples.map { d.world.species[$0.species] }
        return (
            [
                ("images", try Tensor(images, shape: [n, 3, s, s])),
                ("masks", try Tensor(masks, shape: [n, s, s])),
                ("labels", Tensor(species.map { Int64($0.index) })),
                ("rank_labels", try Tensor(species.flatMap { $0.nodes.map(Int64.init) }, shape: [n, 7])),
                ("sex", Tensor(samples.map { Int64($0.variant.sex) })),
                ("stage", Tensor(samples.map { Int64($0.variant.stage) })),
                ("index", Tensor(indices.map(Int64.init))),
            ], samples
        )
    }

    func export(_ request: Request<Options>) throws -> Response {
        let o = request.options, d = try dataset(o)
        let splits: [Int]
        if o.splits == "all" {
            splits = [0, 1, 2]
        } else {
            splits = try o.splits.split(separator: ",").map { name in
                guard let i = splitNames.firstIndex(of: name.trimmingCharacters(in: .whitespaces)) else {
                    throw MenagerieError.invalidArgument("option 'splits' of '\(Self.id)': unknown split '\(name)' (train, val, test or all)")
                }
                return i
            }
        }
        let summary = try writeExport(d, splits: splits, perSpecies: o.exportPerSpecies, sheetPerSpecies: o.sheetPerSpecies, request: request)
        return summary
    }

    func tour(_ request: Request<Options>) throws -> Response {
        var o = request.options
        o.splits = "test"
        o.exportPerSpecies = 4
        return try writeExport(try dataset(o), splits: [2], perSpecies: 4, sheetPerSpecies: 4, request: request)
    }
}

/// The plugin: its identity and components (the entry symbol is in `Entry/`, so that tests can link
/// this module beside other plugins).
public enum SyntheticTreeOfLifePlugin: Plugin {
    public static let name = "synthetic-tol"
    public static let version = "1.0.0"
    public static let summary = "The embedded synthetic tree of life: organisms, taxonomy, traits, variants and part masks, generated on demand"
    public static let license = "MIT"
    public static let authors = ["Menagerie contributors"]
    public static let components: [any Component.Type] = [SyntheticTreeOfLifeComponent.self]
}
