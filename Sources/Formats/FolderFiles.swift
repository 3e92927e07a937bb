import Foundation

/// The files an operation reads from a path: the path itself when it is a file, or a folder's
/// top-level files with one of the given extensions (case-insensitive), sorted by name. One
/// definition for the plugins that read the files and the host that splits them into shards.
public enum FolderFiles {
    /// The file in a folder of links made by the host (several `--input` files, or one chunk of a
    /// sharded run) that lists, line by line in the links' order, each file as the user named it.
    public static let linkNamesFile = ".menagerie-paths"
    /// Folders of links the host makes are named with this prefix.
    public static let linkFolderPrefix = "menagerie-run-inputs-"

    /// The files at `path` as the user named them; `option` names the option in errors. A folder
    /// holding none of them is an error (`what` says which files were looked for).
    public static func list(_ path: String, extensions: [String], option: String, what: String) throws -> [String] {
        let path = (path as NSString).expandingTildeInPath
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw FormatError(path: path, "does not exist (\(option))") }
        guard isDir.boolValue else { return [path] }
        let names = try FileManager.default.contentsOfDirectory(atPath: path)
            .filter { extensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted()
        guard !names.isEmpty else { throw FormatError(path: path, "holds no \(what) file (\(option))") }
        let files = names.map { path + "/" + $0 }
        // A folder of links the host made: the files as the user named them.
        guard (path as NSString).lastPathComponent.hasPrefix(linkFolderPrefix) else { return files }
        if let text = try? String(contentsOfFile: path + "/" + linkNamesFile, encoding: .utf8) {
            var named: [String: String] = [:]
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                guard let tab = line.firstIndex(of: "\t") else { continue }
                named[String(line[..<tab])] = String(line[line.index(after: tab)...])
            }
            return zip(names, files).map { named[$0.0] ?? $0.1 }
        }
        return files.map { (try? FileManager.default.destinationOfSymbolicLink(atPath: $0)) ?? $0 }
    }

    /// The items of a text file of one item per line (prompts): UTF-8, lines split at "\n" (a
    /// trailing "\r" dropped), blank lines skipped. One definition for the operations that read
    /// such files and the host that splits them into shards.
    public static func lines(_ path: String, option: String) throws -> [String] {
        let path = (path as NSString).expandingTildeInPath
        let text: String
        do { text = try RegularFile.text(path, limit: 1 << 30) } catch { throw FormatError(path: path, "cannot be read as UTF-8 text (\(option)): \(error)") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
            .filter { !$0.allSatisfy(\.isWhitespace) }
        guard !lines.isEmpty else { throw FormatError(path: path, "holds no non-blank line (\(option))") }
        return lines
    }

    /// A private folder (in $TMPDIR, named like a folder of links) holding `lines.txt` with the
    /// given lines; returns the file's path. The caller removes the folder.
    public static func linesFile(_ lines: [String]) throws -> String {
        let file = try privateFolder() + "/lines.txt"
        guard FileManager.default.createFile(atPath: file, contents: Data((lines.joined(separator: "\n") + "\n").utf8)) else {
            throw FormatError(path: file, "cannot be written")
        }
        return file
    }

    /// A private folder (in $TMPDIR) holding one symbolic link per file, named after the file (a
    /// repeated name gets its position as a prefix), with the names as given in `linkNamesFile`.
    /// `listed` (default: `files`) is how each file is named in outputs. The caller removes it.
    public static func linkFolder(_ files: [String], listed: [String]? = nil) throws -> String {
        let folder = try privateFolder()
        var used = Set<String>()
        var names = ""
        for (i, file) in files.enumerated() {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDir), !isDir.boolValue else {
                try? FileManager.default.removeItem(atPath: folder)
                throw FormatError(path: file, "does not exist or is a folder (several inputs of one name must be files)")
            }
            var base = (file as NSString).lastPathComponent
            if !used.insert(base).inserted {
                base = String(format: "%03d-", i) + base
                used.insert(base)
            }
            let target = file.hasPrefix("/") ? file : FileManager.default.currentDirectoryPath + "/" + file
            guard symlink(target, folder + "/" + base) == 0 else {
                try? FileManager.default.removeItem(atPath: folder)
                throw FormatError(path: file, "cannot be linked into \(folder): \(String(cString: strerror(errno)))")
            }
            names += base + "\t" + (listed?[i] ?? file) + "\n"
        }
        guard FileManager.default.createFile(atPath: folder + "/" + linkNamesFile, contents: Data(names.utf8)) else {
            try? FileManager.default.removeItem(atPath: folder)
            throw FormatError(path: folder, "cannot write \(linkNamesFile)")
        }
        return folder
    }

    /// A new folder in $TMPDIR named `menagerie-run-inputs-` + six random characters (mkdtemp's
    /// template), mode 0700; swept like the host's other scratch folders when its run was killed.
    static func privateFolder() throws -> String {
        var template = Array(((NSTemporaryDirectory() as NSString).appendingPathComponent(linkFolderPrefix + "XXXXXX")).utf8CString)
        guard let p = mkdtemp(&template) else {
            throw FormatError(path: NSTemporaryDirectory(), "cannot create a folder for the inputs: \(String(cString: strerror(errno)))")
        }
        return String(cString: p)
    }
}
