import Foundation
import Formats
import Imaging
import MenagerieKit
import Tensors

/// Reads `--input NAME=PATH` files into tensors: `.npy` (any supported dtype) and `.png`/`.jpg`
/// (u8, `[H, W]` gray or `[H, W, C]`).
public enum InputFile {
    public static let supportedExtensions = ["npy", "png", "jpg", "jpeg"]

    /// True for a folder or a file that is not `.npy`: such an input may be handed to a component
    /// as a path (when it has a string option of the input's name) instead of being read here.
    public static func isPathInput(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: (path as NSString).expandingTildeInPath, isDirectory: &isDir) else { return false }
        return isDir.boolValue || (path as NSString).pathExtension.lowercased() != "npy"
    }

    public static func load(path: String, name: String) throws -> Tensor {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw HostError(.usage, "input '\(name)': \(path) does not exist or is not readable")
        }
        let ext = (path as NSString).pathExtension.lowercased()
        do {
            switch ext {
            case "npy": return try NPY.read(path: path)
            case "png": return try PNG.read(path: path).tensor
            case "jpg", "jpeg": return try JPEG.read(path: path).tensor
            default:
                throw HostError(.usage, "input '\(name)': \(path) has an unsupported extension '.\(ext)'; use "
                    + supportedExtensions.map { "." + $0 }.joined(separator: " or ") + " (numpy: np.save('x.npy', array))")
            }
        } catch let e as FormatError {
            throw HostError(.usage, "input '\(name)': \(e)")
        }
    }
}

/// Writes a run's outputs into its `--out` folder so that nothing half-written is ever visible:
/// every file is written under a temporary name in the same folder and renamed into place,
/// `result.json` last; on failure the temporaries are removed.
public struct RunOutput {
    public let directory: String

    /// Creates the folder if needed and checks that it is writable, before any work starts.
    public init(directory: String) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDir) {
            guard isDir.boolValue else { throw HostError(.usage, "--out \(directory) exists and is not a folder") }
        } else {
            do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
                throw HostError(.usage, "--out \(directory) cannot be created: \(error.localizedDescription)")
            }
        }
        guard access(directory, W_OK) == 0 else {
            throw HostError(.usage, "--out \(directory) is not writable: choose another folder or fix its permissions")
        }
        self.directory = (directory as NSString).standardizingPath
    }

    /// Commits tensors (as `<name>.npy`), artifact files (moved) and the manifest.
    /// Returns the manifest's artifact list.
    @discardableResult
    public func commit(manifest: JSONValue, tensors: [(name: String, tensor: Tensor)], artifacts: [Artifact]) throws -> JSONValue {
        let staging = directory + "/.menagerie-partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: staging) }
        var listed: [JSONValue] = []
        var used = Set(["result.json"])
        for (name, t) in tensors {
            let file = safeFileName(name) + ".npy"
            guard used.insert(file).inserted else { throw HostError(.failed, "two outputs would both be written to \(file)") }
            guard FileManager.default.createFile(atPath: staging + "/" + file, contents: NPY.encode(t)) else {
                throw HostError(.failed, "cannot write \(staging)/\(file)")
            }
            listed.append(["name": .string(name), "file": .string(file), "type": "tensor", "dtype": .string(t.dtype.name),
                           "shape": .array(t.shape.map { .number(Double($0)) })])
        }
        for artifact in artifacts {
            let file = artifact.name
            guard used.insert(file).inserted else { throw HostError(.failed, "two outputs would both be written to \(file)") }
            let target = staging + "/" + file
            do {
                if file.contains("/") {
                    try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                }
                if rename(artifact.path, target) != 0 { try FileManager.default.copyItem(atPath: artifact.path, toPath: target) }
            } catch { throw HostError(.failed, "cannot collect the artifact \(artifact.path): \(error.localizedDescription)") }
            listed.append(["name": .string(file), "file": .string(file), "type": "file"])
        }
        guard case .object(var m) = manifest else { throw HostError(.failed, "manifest must be an object") }
        m["artifacts"] = .array(listed)
        let final = JSONValue.object(m)
        guard FileManager.default.createFile(atPath: staging + "/result.json", contents: Data((final.prettyText + "\n").utf8)) else {
            throw HostError(.failed, "cannot write \(staging)/result.json")
        }
        // Move every top-level entry of the staging folder into place. A folder of artifacts
        // replaces the same folder of an earlier run (the old one goes into the staging folder,
        // which is removed); a file never replaces a folder.
        let trash = staging + "/.replaced"
        let entries = try FileManager.default.contentsOfDirectory(atPath: staging).filter { $0 != ".replaced" }.sorted { a, b in
            a == "result.json" ? false : b == "result.json" ? true : a < b     // result.json last: it marks a complete run
        }
        for entry in entries {
            let from = staging + "/" + entry, target = directory + "/" + entry
            var fromIsDir: ObjCBool = false, targetIsDir: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: from, isDirectory: &fromIsDir)
            if FileManager.default.fileExists(atPath: target, isDirectory: &targetIsDir) {
                if targetIsDir.boolValue && !fromIsDir.boolValue {
                    throw HostError(.failed, "\(target) is a folder; remove it or choose another --out")
                }
                if fromIsDir.boolValue {
                    guard targetIsDir.boolValue else { throw HostError(.failed, "\(target) is a file; remove it or choose another --out") }
                    try? FileManager.default.createDirectory(atPath: trash, withIntermediateDirectories: true)
                    guard rename(target, trash + "/" + entry) == 0 else {
                        throw HostError(.failed, "cannot replace \(target): \(String(cString: strerror(errno)))")
                    }
                }
            }
            guard rename(from, target) == 0 else {
                throw HostError(.failed, "cannot move \(entry) into \(directory): \(String(cString: strerror(errno)))")
            }
        }
        return final
    }

    func safeFileName(_ name: String) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        let s = String(name.map { allowed.contains($0) ? $0 : "_" })
        return s.isEmpty || s.hasPrefix(".") ? "tensor" + s : s
    }
}

extension RunOutput {
    /// The `result.json` of one call: what ran, with which options and seed, and what it returned
    /// (the artifact list is filled in by `commit`).
    public static func manifest(component: String, operation: String, plugin: RegistryEntry, options: JSONValue,
                                seed: UInt64, inputs: [String: String], result: InvocationResult, seconds: Double,
                                version: String) -> JSONValue {
        var r = result.result
        if case .object(var o) = r { o.removeValue(forKey: "artifacts"); r = .object(o) }
        return [
            "component": .string(component), "operation": .string(operation),
            "plugin": ["name": .string(plugin.metadata?.name ?? ""), "version": .string(plugin.metadata?.version ?? ""),
                       "path": .string(plugin.path)],
            "options": options, "seed": .number(Double(seed)), "inputs": .object(inputs.mapValues { .string($0) }),
            "result": r, "seconds": .number((seconds * 1000).rounded() / 1000), "menagerie": .string(version),
            "artifacts": .array(result.tensors.map { ["name": .string($0.name), "type": "tensor", "dtype": .string($0.tensor.dtype.name)] }),
        ]
    }
}
