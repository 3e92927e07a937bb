import Formats
import Foundation
import MenagerieKit
import Tensors

/// Zero-shot text embeddings of custom label sets, cached on disk by model and label set: a file
/// `text-<key>.safetensors` per (weights identity, templates, labels), holding the [C, E] matrix and
/// the exact label list (checked on load, so a hash collision cannot return the wrong matrix).
struct TextEmbeddingCache {
    let directory: String?

    /// `option`: a folder, "none" (no cache), or empty for `$XDG_CACHE_HOME/menagerie/bioclip2`.
    init(option: String) {
        if option == "none" {
            directory = nil
            return
        }
        if !option.isEmpty {
            directory = (option as NSString).expandingTildeInPath
            return
        }
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ((env["HOME"] ?? NSHomeDirectory()) + "/.cache")
        directory = base + "/menagerie/bioclip2"
    }

    static func key(identity: String, templates: [String], labels: [String]) -> String {
        // FNV-1a, 64 bits, over the three parts with separators.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for part in [identity, templates.joined(separator: "\u{1}"), labels.joined(separator: "\u{1}")] {
            for b in part.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            h = (h ^ 0xff) &* 0x100_0000_01b3
        }
        return String(h, radix: 16)
    }

    func path(identity: String, templates: [String], labels: [String]) -> String? {
        directory.map { $0 + "/text-" + TextEmbeddingCache.key(identity: identity, templates: templates, labels: labels) + ".safetensors" }
    }

    func load(identity: String, templates: [String], labels: [String], dimension e: Int) -> [Float]? {
        guard let p = path(identity: identity, templates: templates, labels: labels), FileManager.default.fileExists(atPath: p),
            let file = try? SafeTensorsFile(path: p), file.metadata["identity"] == identity,
            let stored = file.metadata["labels"], let data = stored.data(using: .utf8),
            let list = try? JSONSerialization.jsonObject(with: data) as? [String], list == labels,
            let t = try? file.tensor("embeddings"), t.shape == [labels.count, e]
        else { return nil }
        return try? t.scalars(as: Float.self)
    }

    /// Best effort: a cache that cannot be written is skipped (the run still succeeds).
    func store(_ embeddings: [Float], identity: String, templates: [String], labels: [String], dimension e: Int) {
        guard let dir = directory, let p = path(identity: identity, templates: templates, labels: labels) else { return }
        guard (try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)) != nil,
            let labelsJSON = try? JSONSerialization.data(withJSONObject: labels), let t = try? Tensor(embeddings, shape: [labels.count, e])
        else { return }
        let tmp = p + ".partial-\(getpid())"
        do {
            try SafeTensors.write(
                [("embeddings", t)],
                metadata: [
                    "identity": identity, "labels": String(decoding: labelsJSON, as: UTF8.self),
                    "templates": "\(templates.count)",
                ], to: tmp)
            _ = rename(tmp, p)
        } catch { try? FileManager.default.removeItem(atPath: tmp) }
    }
}
