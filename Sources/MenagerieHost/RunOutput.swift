import Formats
import Foundation
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
                throw HostError(
                    .usage,
                    "input '\(name)': \(path) has an unsupported extension '.\(ext)'; use "
                        + supportedExtensions.map { "." + $0 }.joined(separator: " or ") + " (numpy: np.save('x.npy', array))")
            }
        } catch let e as FormatError {
            throw HostError(.usage, "input '\(name)': \(e)")
        }
    }
}

/// Writes a run's outputs into its `--out` folder so that nothing half-written is ever visible, and
/// a failure leaves the folder as it was:
/// - a new folder is built whole beside its final place and renamed into place (one atomic step);
/// - an existing folder is updated by a journaled merge: every file is staged first, then the old
///   `result.json` is set aside, each entry replaced (old versions kept aside), the new
///   `result.json` moved in last; any failure moves everything back.
/// Nothing is created when the run is refused: the folder appears only at commit.
public struct RunOutput {
    public let directory: String
    /// Replace the outputs of an earlier run in the same folder (`--force`).
    public let replace: Bool

    /// Checks, before any work starts, that the folder can be written (or created); creates nothing.
    /// A folder that holds another run's `result.json` is refused unless `replace` (`--force`): two
    /// runs' files must not mix.
    public init(directory: String, replace: Bool = false) throws {
        let path = (directory as NSString).standardizingPath
        self.replace = replace
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw HostError(.usage, "--out \(directory) exists and is not a folder") }
            guard access(path, W_OK) == 0 else {
                throw HostError(.usage, "--out \(directory) is not writable: choose another folder or fix its permissions")
            }
            if !replace, FileManager.default.fileExists(atPath: path + "/result.json") {
                throw HostError(
                    .usage,
                    "--out \(directory) holds the outputs of another run (result.json): choose a new folder, "
                        + "or pass --force to replace that run's outputs")
            }
        } else {
            // The nearest existing ancestor must be a writable folder.
            var ancestor = parentPath(path)
            while !ancestor.isEmpty, !FileManager.default.fileExists(atPath: ancestor) {
                ancestor = parentPath(ancestor)
            }
            let existing = ancestor.isEmpty ? "." : ancestor
            guard FileManager.default.fileExists(atPath: existing, isDirectory: &isDir), isDir.boolValue else {
                throw HostError(.usage, "--out \(directory) cannot be created: \(existing) is not a folder")
            }
            guard access(existing, W_OK) == 0 else {
                throw HostError(.usage, "--out \(directory) cannot be created: \(existing) is not writable")
            }
        }
        self.directory = path
    }

    /// Commits tensors (as `<name>.npy`), artifact files (moved) and the manifest.
    /// Returns the manifest with its artifact list.
    @discardableResult
    public func commit(manifest: JSONValue, tensors: [(name: String, tensor: Tensor)], artifacts: [Artifact]) throws -> JSONValue {
        try commit { staging in try stage(into: staging, manifest: manifest, tensors: tensors, artifacts: artifacts) }
    }

    /// Commits what `prepare` writes into the staging folder it is given (result.json included);
    /// returns what `prepare` returns (the final manifest).
    @discardableResult
    public func commit(prepare: (_ staging: String) throws -> JSONValue) throws -> JSONValue {
        let exists = FileManager.default.fileExists(atPath: directory)
        let parent = parentPath(directory).isEmpty ? "." : parentPath(directory)
        if !exists {
            do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
                throw HostError(.failed, "--out \(directory) cannot be created: \(error.localizedDescription)")
            }
        }
        Lifecycle.sweep(temporary: nil, outputs: [directory])
        // Staging: beside a new folder (renamed into place whole), inside an existing one (same file system).
        let staging = (exists ? directory : parent) + "/.menagerie-partial-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        do { try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false) } catch {
            throw HostError(.failed, "cannot write into \(exists ? directory : parent): \(error.localizedDescription)")
        }
        Lifecycle.markOwned(staging)
        Lifecycle.removeOnForcedExit(staging)
        defer {
            Lifecycle.forget(staging)
            try? FileManager.default.removeItem(atPath: staging)
        }
        let final = try prepare(staging)
        if !exists {
            try? FileManager.default.removeItem(atPath: staging + "/" + Lifecycle.ownerFile)
            if rename(staging, directory) == 0 { return final }
            // Someone created the folder meanwhile: merge into it instead.
            guard FileManager.default.fileExists(atPath: directory) else {
                throw HostError(.failed, "cannot move the output into \(directory): \(String(cString: strerror(errno)))")
            }
        }
        try merge(from: staging, into: directory)
        return final
    }

    /// Writes every output into `staging`; returns the manifest with its artifact list.
    func stage(into staging: String, manifest: JSONValue, tensors: [(name: String, tensor: Tensor)], artifacts: [Artifact]) throws -> JSONValue {
        var listed: [JSONValue] = []
        var used = Set(["result.json", Lifecycle.ownerFile])
        for (name, t) in tensors {
            let file = safeFileName(name) + ".npy"
            guard used.insert(file).inserted else { throw HostError(.failed, "two outputs would both be written to \(file)") }
            guard FileManager.default.createFile(atPath: staging + "/" + file, contents: NPY.encode(t)) else {
                throw HostError(.failed, "cannot write \(staging)/\(file)")
            }
            listed.append([
                "name": .string(name), "file": .string(file), "type": "tensor", "dtype": .string(t.dtype.name),
                "shape": .array(t.shape.map { .number(Double($0)) }),
            ])
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
        return final
    }

    /// Moves the top-level entries of `staging` into `directory`, all or nothing: a folder of
    /// artifacts replaces the same folder of an earlier run, a file never replaces a folder (or the
    /// reverse); the old `result.json` goes first and the new one comes last, so a complete-looking
    /// manifest never sits beside files of another run. On failure every move is undone.
    func merge(from staging: String, into directory: String) throws {
        let fm = FileManager.default
        let names = try fm.contentsOfDirectory(atPath: staging).filter { $0 != Lifecycle.ownerFile && $0 != ".replaced" }
            .sorted { a, b in a == "result.json" ? false : b == "result.json" ? true : a < b }
        // Every conflict is found before anything moves.
        for name in names {
            var fromIsDir: ObjCBool = false, targetIsDir: ObjCBool = false
            _ = fm.fileExists(atPath: staging + "/" + name, isDirectory: &fromIsDir)
            if fm.fileExists(atPath: directory + "/" + name, isDirectory: &targetIsDir), fromIsDir.boolValue != targetIsDir.boolValue {
                throw HostError(
                    .failed,
                    "\(directory)/\(name) is a \(targetIsDir.boolValue ? "folder" : "file") where this run writes a "
                        + "\(fromIsDir.boolValue ? "folder" : "file"); remove it or choose another --out")
            }
        }
        let trash = staging + "/.replaced"
        try fm.createDirectory(atPath: trash, withIntermediateDirectories: true)
        // The earlier run's own outputs (its manifest's artifacts) go too: nothing of it stays beside the new run.
        var earlier: [String] = []
        if let data = fm.contents(atPath: directory + "/result.json"),
            let old = try? JSONValue.parse(String(decoding: data, as: UTF8.self), source: "result.json")
        {
            let files = old["artifacts"]?.arrayValue?.compactMap { $0["file"]?.stringValue } ?? []
            let tops = Set(files.compactMap { $0.split(separator: "/").first.map(String.init) })
            earlier = tops.filter { !names.contains($0) && $0 != "result.json" && !$0.hasPrefix(".") && fm.fileExists(atPath: directory + "/" + $0) }.sorted()
        }
        // The journal: (from, to) renames done so far, undone in reverse on failure.
        var done: [(from: String, to: String)] = []
        func move(_ from: String, _ to: String) throws {
            guard rename(from, to) == 0 else { throw HostError(.failed, "cannot move \(from) to \(to): \(String(cString: strerror(errno)))") }
            done.append((from, to))
        }
        do {
            if fm.fileExists(atPath: directory + "/result.json") { try move(directory + "/result.json", trash + "/result.json") }
            for name in earlier { try move(directory + "/" + name, trash + "/" + name) }
            for name in names {
                let target = directory + "/" + name
                if name != "result.json", fm.fileExists(atPath: target) { try move(target, trash + "/" + name) }
                try move(staging + "/" + name, target)
            }
        } catch {
            for step in done.reversed() { _ = rename(step.to, step.from) }
            throw error
        }
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
    public static func manifest(
        component: String, operation: String, plugin: RegistryEntry, options: JSONValue,
        seed: UInt64, inputs: [String: String], result: InvocationResult, seconds: Double,
        version: String
    ) -> JSONValue {
        var r = result.result
        if case .object(var o) = r {
            o.removeValue(forKey: "artifacts")
            o.removeValue(forKey: "display") // text for the terminal, not a result
            r = .object(o)
        }
        return [
            "component": .string(component), "operation": .string(operation),
            "plugin": [
                "name": .string(plugin.metadata?.name ?? ""), "version": .string(plugin.metadata?.version ?? ""),
                "path": .string(plugin.path),
            ],
            "options": options, "seed": .number(Double(seed)), "inputs": .object(inputs.mapValues { .string($0) }),
            "result": r, "seconds": .number((seconds * 1000).rounded() / 1000), "menagerie": .string(version),
            "artifacts": .array(result.tensors.map { ["name": .string($0.name), "type": "tensor", "dtype": .string($0.tensor.dtype.name)] }),
        ]
    }
}

/// The folder that holds `path` ("" for a bare name, "/" for a top-level one), without
/// `NSString.deletingLastPathComponent`, which traps on some short names in this Foundation
/// (`--out m` crashed the CLI).
func parentPath(_ path: String) -> String {
    var p = Substring(path)
    while p.count > 1, p.hasSuffix("/") { p = p.dropLast() }
    guard let slash = p.lastIndex(of: "/") else { return "" }
    if slash == p.startIndex { return "/" }
    var parent = p[..<slash]
    while parent.count > 1, parent.hasSuffix("/") { parent = parent.dropLast() }
    return String(parent)
}
