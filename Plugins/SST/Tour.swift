import Formats
import Foundation
import Imaging
import MenagerieKit
import Tensors

extension SSTComponent {
    static var inTour: Bool { true }

    /// SST on files, as a user runs it: one synthetic-tol species written out as PNGs (a labelled
    /// support image and its part mask, query images, their true masks), segmented with the
    /// embedded ViT's patch tokens and a fine-tuned head, scored by segmentation-metrics; trait
    /// retrieval over queries of two species; the small study (4 species, no sweep).
    func tour(_ request: Request<Options>) throws -> Response {
        let dir = request.host.scratchDirectory
        let files = dir + "/tour-data"
        var o = request.options
        o.species = 4
        o.per_species = 4
        o.unlabelled_per_species = 8
        o.image_size = 96
        o.sweep = false
        let data = try studyData(o, host: request.host)
        for sub in ["queries", "truth", "other"] { try FileManager.default.createDirectory(atPath: files + "/" + sub, withIntermediateDirectories: true) }
        let first = data.groups[0], second = data.groups[1]
        try PNG.write(data.images[first.support], to: files + "/support.png")
        try LabelMask(width: data.size, height: data.size, labels: data.masks[first.support]).write(to: files + "/support_mask.png", format: "png")
        for (k, q) in first.queries.enumerated() {
            try PNG.write(data.images[q], to: files + "/queries/q\(k).png")
            try LabelMask(width: data.size, height: data.size, labels: data.masks[q]).write(to: files + "/truth/q\(k).png", format: "png")
            try PNG.write(data.images[q], to: files + "/other/same\(k).png")
        }
        for (k, q) in second.queries.enumerated() { try PNG.write(data.images[q], to: files + "/other/species2_\(k).png") }

        var seg = o
        seg.support = files + "/support.png"
        seg.mask = files + "/support_mask.png"
        seg.queries = files + "/queries"
        seg.truth = files + "/truth"
        seg.size = data.size
        seg.parts = Array(Self.studyParts.dropFirst())
        seg.order = "similarity"
        seg.finetune_steps = 40
        seg.unlabelled = ""
        let segmented = try segment(Request(options: seg, inputs: request.inputs, host: request.host, component: Self.id, operation: "segment"))

        var ret = seg
        ret.queries = files + "/other"
        ret.finetune_steps = 0
        ret.top = 4
        let retrieved = try retrieve(Request(options: ret, inputs: request.inputs, host: request.host, component: Self.id, operation: "retrieve"))

        let studied = try study(Request(options: o, inputs: request.inputs, host: request.host, component: Self.id, operation: "study"))
        return Response(
            result: [
                "segment": segmented.result, "retrieve": retrieved.result, "study": studied.result,
                "data": .string("tour-data/ (support.png, support_mask.png, queries/, truth/, other/): run `menagerie run sst` on it yourself"),
            ],
            artifacts: segmented.artifacts + retrieved.artifacts + studied.artifacts + ["tour-data"])
    }
}
