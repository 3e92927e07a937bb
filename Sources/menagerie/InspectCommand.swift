import ArgumentParser
import Formats
import Foundation
import MenagerieHost

/// `menagerie inspect FILE`: the tensors of a weights file without loading a model.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List the tensors of a weights file: names, dtypes, shapes, bytes (.safetensors, .pt/.pth/.bin, .pkl).",
        discussion: "Nothing in the file runs: PyTorch checkpoints and pickles are read by a restricted unpickler (Docs/checkpoints.md).")

    @Argument(help: "A .safetensors file, a PyTorch checkpoint (.pt, .pth, .bin, .ckpt) or a pickle (.pkl).")
    var file: String

    @Flag(name: .long, help: "Print JSON on stdout.")
    var json = false

    struct Report: Encodable {
        let file: String
        let format: String
        let tensors: [WeightsFile.Item]
        let totalBytes: Int
        /// The wrapper key the loaders take the state dict from, and whether they drop "module.".
        let stateDictKey: String?
        let modulePrefix: Bool
        enum CodingKeys: String, CodingKey {
            case file, format, tensors, totalBytes = "total_bytes", stateDictKey = "state_dict_key", modulePrefix = "module_prefix"
        }
    }

    func run() throws {
        guard RegularFile.isRegular(file) else { throw HostError(.usage, "\(file) is not a file") }
        let w = try WeightsFile(path: file)
        let total = w.items.reduce(0) { $0 + $1.bytes }
        if json {
            try printJSON(Report(file: file, format: w.format, tensors: w.items, totalBytes: total, stateDictKey: w.wrapper, modulePrefix: w.modulePrefixed))
            return
        }
        var rows = [["NAME", "DTYPE", "SHAPE", "BYTES"]]
        rows += w.items.map { [$0.name, $0.dtype, "[" + $0.shape.map(String.init).joined(separator: ", ") + "]", String($0.bytes)] }
        print(table(rows))
        var summary = "\(file): \(w.format), \(w.items.count) tensor\(w.items.count == 1 ? "" : "s"), \(Limits.formatBytes(total))"
        if let key = w.wrapper { summary += "; the state dict is under '\(key)'" }
        if w.modulePrefixed { summary += "; its 'module.' prefix is dropped when loading" }
        print(summary)
    }
}
