import Formats
import Foundation
import MenagerieKit

/// ActivityNet-1.3 JSON files: ground truth `{"version", "taxonomy", "database": {video: {"subset",
/// "duration", "annotations": [{"segment": [s, e], "label"}]}}}` and predictions `{"version",
/// "results": {video: [{"label", "score", "segment": [s, e]}]}, "external_data"}`.
///
/// Everything keeps the file's order (videos, then annotations or results within a video): the
/// evaluator breaks score ties by it.
public enum ActivityNet {
    public struct Annotation: Equatable, Sendable {
        public var start: Double
        public var end: Double
        public var label: String
        public init(start: Double, end: Double, label: String) {
            self.start = start
            self.end = end
            self.label = label
        }
    }

    public struct Video: Sendable {
        public var id: String
        public var subset: String
        public var duration: Double
        public var annotations: [Annotation]
        public init(id: String, subset: String, duration: Double, annotations: [Annotation]) {
            self.id = id
            self.subset = subset
            self.duration = duration
            self.annotations = annotations
        }
    }

    /// A ground-truth file: every video, in file order.
    public struct GroundTruth: Sendable {
        public var videos: [Video]
        public var version = "VERSION 1.3"
        public init(videos: [Video], version: String = "VERSION 1.3") {
            self.videos = videos
            self.version = version
        }

        public func subset(_ name: String) -> [Video] { name == "all" ? videos : videos.filter { $0.subset == name } }
        /// Class names in order of first appearance within `subset` (the official evaluator's index).
        public func labels(subset name: String) -> [String] {
            var seen = Set<String>(), out: [String] = []
            for v in subset(name) { for a in v.annotations where seen.insert(a.label).inserted { out.append(a.label) } }
            return out
        }
    }

    public struct Detection: Equatable, Sendable {
        public var start: Double
        public var end: Double
        public var score: Double
        public var label: String
        public init(start: Double, end: Double, score: Double, label: String) {
            self.start = start
            self.end = end
            self.score = score
            self.label = label
        }
    }

    /// A predictions (or proposals) file: detections per video, videos in file order.
    public struct Predictions: Sendable {
        public var videos: [(id: String, detections: [Detection])]
        public var version = "VERSION 1.3"
        public init(videos: [(id: String, detections: [Detection])], version: String = "VERSION 1.3") {
            self.videos = videos
            self.version = version
        }
        public var count: Int { videos.reduce(0) { $0 + $1.detections.count } }
    }

    // MARK: Reading

    static func readText(_ path: String, what: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw MenagerieError.notFound("\(what) file '\(path)' does not exist")
        }
        do { return String(decoding: try RegularFile.read(path), as: UTF8.self) } catch {
            throw MenagerieError.invalidArgument("\(what) file: \(error)")
        }
    }

    static func parse(_ path: String, what: String) throws -> (JSONValue, [[String]: [String]]) {
        let text = try readText(path, what: what)
        do { return try JSONValue.parse(text, source: "\(what) file '\(path)'", keyOrderDepth: 1) } catch let e as JSONParseError {
            throw MenagerieError.invalidArgument(e.description)
        }
    }

    static func number(_ v: JSONValue?, _ context: @autoclosure () -> String) throws -> Double {
        guard let d = v?.doubleValue, d.isFinite else { throw MenagerieError.invalidArgument("\(context()) must be a finite number") }
        return d
    }

    static func segment(_ v: JSONValue?, _ context: @autoclosure () -> String) throws -> (Double, Double) {
        guard let a = v?.arrayValue, a.count == 2, let s = a[0].doubleValue, let e = a[1].doubleValue, s.isFinite, e.isFinite else {
            throw MenagerieError.invalidArgument("\(context()): 'segment' must be [start, end] in seconds")
        }
        guard e >= s else {
            throw MenagerieError.invalidArgument("\(context()): segment [\(s), \(e)] ends before it starts (end < start); fix or drop it")
        }
        return (s, e)
    }

    public static func readGroundTruth(_ path: String) throws -> GroundTruth {
        let (json, order) = try parse(path, what: "ground-truth")
        guard let database = json["database"]?.objectValue else {
            let keys = json.objectValue.map { $0.keys.sorted().joined(separator: ", ") } ?? "not an object"
            throw MenagerieError.invalidArgument(
                "ground-truth file '\(path)' has no 'database' object (top level: \(keys)); an ActivityNet ground truth is {\"version\", \"taxonomy\", \"database\": {video: {\"subset\", \"duration\", \"annotations\"}}}"
            )
        }
        var videos: [Video] = []
        videos.reserveCapacity(database.count)
        for id in order[["database"]] ?? database.keys.sorted() {
            let v = database[id]!
            let where_ = "ground-truth file '\(path)', video '\(id)'"
            guard v.objectValue != nil else { throw MenagerieError.invalidArgument("\(where_) is not an object") }
            let subset = v["subset"]?.stringValue ?? ""
            let duration = v["duration"]?.doubleValue ?? 0
            var anns: [Annotation] = []
            for (k, a) in (v["annotations"]?.arrayValue ?? []).enumerated() {
                guard let label = a["label"]?.stringValue else {
                    throw MenagerieError.invalidArgument("\(where_), annotation \(k) has no 'label' string")
                }
                let (s, e) = try segment(a["segment"], "\(where_), annotation \(k)")
                anns.append(Annotation(start: s, end: e, label: label))
            }
            videos.append(Video(id: id, subset: subset, duration: duration, annotations: anns))
        }
        return GroundTruth(videos: videos, version: json["version"]?.stringValue ?? "VERSION 1.3")
    }

    /// Reads predictions; `requireLabels` is false for proposal files (class-agnostic).
    public static func readPredictions(_ path: String, requireLabels: Bool = true) throws -> Predictions {
        let (json, order) = try parse(path, what: "predictions")
        guard let results = json["results"]?.objectValue else {
            let keys = json.objectValue.map { $0.keys.sorted().joined(separator: ", ") } ?? "not an object"
            throw MenagerieError.invalidArgument(
                "predictions file '\(path)' has no 'results' object (top level: \(keys)); ActivityNet predictions are {\"version\", \"results\": {video: [{\"label\", \"score\", \"segment\"}]}, \"external_data\"}"
            )
        }
        var videos: [(id: String, detections: [Detection])] = []
        videos.reserveCapacity(results.count)
        for id in order[["results"]] ?? results.keys.sorted() {
            guard let list = results[id]!.arrayValue else {
                throw MenagerieError.invalidArgument("predictions file '\(path)', video '\(id)': expected a list of detections")
            }
            var dets: [Detection] = []
            dets.reserveCapacity(list.count)
            for (k, d) in list.enumerated() {
                let where_ = "predictions file '\(path)', video '\(id)', entry \(k)"
                let label = d["label"]?.stringValue
                if requireLabels && label == nil { throw MenagerieError.invalidArgument("\(where_) has no 'label' string") }
                let score = try number(d["score"], "\(where_): 'score'")
                let (s, e) = try segment(d["segment"], where_)
                dets.append(Detection(start: s, end: e, score: score, label: label ?? ""))
            }
            videos.append((id, dets))
        }
        return Predictions(videos: videos, version: json["version"]?.stringValue ?? "VERSION 1.3")
    }

    // MARK: Writing

    public static func json(_ p: Predictions, includeLabels: Bool = true) -> String {
        // Written by hand to keep the videos' order and the field order people expect.
        var out = "{\"version\": "
        JSONTextWriter.string(p.version, into: &out)
        out += ", \"results\": {"
        for (k, v) in p.videos.enumerated() {
            if k > 0 { out += ", " }
            out += "\n  "
            JSONTextWriter.string(v.id, into: &out)
            out += ": ["
            for (j, d) in v.detections.enumerated() {
                if j > 0 { out += ", " }
                out += "{"
                if includeLabels {
                    out += "\"label\": "
                    JSONTextWriter.string(d.label, into: &out)
                    out += ", "
                }
                out += "\"score\": \(JSONTextWriter.number(d.score)), \"segment\": [\(JSONTextWriter.number(d.start)), \(JSONTextWriter.number(d.end))]}"
            }
            out += "]"
        }
        out += "\n}, \"external_data\": {}}\n"
        return out
    }

    public static func json(_ g: GroundTruth, taxonomy: [String] = []) -> String {
        var out = "{\"version\": "
        JSONTextWriter.string(g.version, into: &out)
        out += ", \"taxonomy\": ["
        for (k, name) in taxonomy.enumerated() {
            out += k > 0 ? ", " : ""
            out += "{\"nodeName\": "
            JSONTextWriter.string(name, into: &out)
            out += ", \"nodeId\": \(k + 1), \"parentName\": \"Root\", \"parentId\": 0}"
        }
        out += "], \"database\": {"
        for (k, v) in g.videos.enumerated() {
            if k > 0 { out += ", " }
            out += "\n  "
            JSONTextWriter.string(v.id, into: &out)
            out += ": {\"subset\": "
            JSONTextWriter.string(v.subset, into: &out)
            out += ", \"duration\": \(JSONTextWriter.number(v.duration)), \"annotations\": ["
            for (j, a) in v.annotations.enumerated() {
                if j > 0 { out += ", " }
                out += "{\"segment\": [\(JSONTextWriter.number(a.start)), \(JSONTextWriter.number(a.end))], \"label\": "
                JSONTextWriter.string(a.label, into: &out)
                out += "}"
            }
            out += "]}"
        }
        out += "\n}}\n"
        return out
    }
}

/// Text pieces for hand-written JSON (order-preserving), using the same number and string rules
/// as `JSONValue`.
enum JSONTextWriter {
    static func string(_ s: String, into out: inout String) { out += JSONValue.string(s).compactText }
    static func number(_ d: Double) -> String { JSONValue.number(d).compactText }
}
