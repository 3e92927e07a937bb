import Formats
import Foundation
import MenagerieKit
import Tensors

/// Per-video snippet features (T × C) found by video id in a folder: `<id>.npy` or
/// `<id>.safetensors` (the tensor `features`, or the file's only tensor). ActivityNet ids with or
/// without the `v_` prefix are both tried, as feature releases differ on it.
struct FeatureFolder: Sendable {
    let path: String

    init(_ path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
            throw MenagerieError.notFound("feature folder '\(path)' does not exist (expected one <video id>.npy or .safetensors per video)")
        }
        self.path = path
    }

    func file(for id: String) -> String? {
        var names = [id]
        if id.hasPrefix("v_") { names.append(String(id.dropFirst(2))) } else { names.append("v_" + id) }
        for n in names {
            for ext in ["npy", "safetensors"] {
                let p = "\(path)/\(n).\(ext)"
                if FileManager.default.fileExists(atPath: p) { return p }
            }
        }
        return nil
    }

    /// The video's features as (T, C, row-major T × C floats).
    func load(_ id: String) throws -> (snippets: Int, channels: Int, values: [Float]) {
        guard let file = file(for: id) else {
            throw MenagerieError.notFound("no features for video '\(id)' in '\(path)' (looked for \(id).npy and \(id).safetensors)")
        }
        let t: Tensor
        if file.hasSuffix(".npy") {
            t = try NPY.read(path: file)
        } else {
            let st = try SafeTensorsFile(path: file)
            let name = st.entries["features"] != nil ? "features" : (st.entries.count == 1 ? st.entries.keys.first! : "")
            guard !name.isEmpty else {
                throw MenagerieError.invalidArgument(
                    "'\(file)' holds \(st.entries.count) tensors (\(st.entries.keys.sorted().joined(separator: ", "))); name the snippet features 'features'")
            }
            t = try st.float32(name)
        }
        guard t.rank == 2, t.shape[0] >= 1, t.shape[1] >= 1 else {
            throw MenagerieError.invalidArgument("features in '\(file)' must be T × C (snippets × channels), got shape \(t.shape)")
        }
        let values = try t.converted(to: .float32).scalars(as: Float.self)
        guard values.allSatisfy(\.isFinite) else { throw MenagerieError.invalidArgument("features in '\(file)' contain NaN or infinity") }
        return (t.shape[0], t.shape[1], values)
    }
}

/// Rescales a T × C sequence to `n` snippets by linear interpolation over time with the end
/// points aligned (snippet i of n sits at i·(T−1)/(n−1) of the source), as BMN and G-TAD prepare
/// ActivityNet features (their scipy `interp1d` / `F.interpolate(align_corners=True)`).
public func rescaleSnippets(_ x: [Float], snippets t: Int, channels c: Int, to n: Int) -> [Float] {
    guard t != n else { return x }
    var out = [Float](repeating: 0, count: n * c)
    for i in 0..<n {
        let pos = n == 1 ? 0 : Double(i) * Double(t - 1) / Double(n - 1)
        let i0 = min(Int(pos), t - 1), i1 = min(i0 + 1, t - 1)
        let w = Float(pos - Double(i0))
        for j in 0..<c { out[i * c + j] = (1 - w) * x[i0 * c + j] + w * x[i1 * c + j] }
    }
    return out
}
