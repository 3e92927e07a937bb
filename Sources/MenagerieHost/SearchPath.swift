import Foundation

/// Where plugins are found, in order:
/// 1. the built-in folder: `PREFIX/lib/menagerie/plugins` for an installed `PREFIX/bin/menagerie`,
///    else the folder of the executable itself (the SwiftPM build folder);
/// 2. each folder of `$MENAGERIE_PLUGIN_PATH` (colon-separated);
/// 3. `~/.local/share/menagerie/plugins`.
/// Safe mode keeps the built-in folder only. The working directory is never searched implicitly.
public struct SearchPath: Sendable {
    public struct Folder: Sendable, Codable, Equatable {
        public let path: String
        public let origin: String // "built-in", "MENAGERIE_PLUGIN_PATH", "user"
        public var builtIn: Bool { origin == "built-in" }
    }

    public let folders: [Folder]
    public let safeMode: Bool

    public init(
        executable: String = SearchPath.executablePath, environment: [String: String] = ProcessInfo.processInfo.environment,
        safeMode: Bool
    ) {
        self.safeMode = safeMode
        var folders = [Folder(path: SearchPath.builtInFolder(executable: executable), origin: "built-in")]
        if !safeMode {
            for p in (environment["MENAGERIE_PLUGIN_PATH"] ?? "").split(separator: ":") where !p.isEmpty {
                // Relative entries would make loading depend on the working directory: resolve them now.
                let abs = p.hasPrefix("/") ? String(p) : FileManager.default.currentDirectoryPath + "/" + p
                folders.append(Folder(path: (abs as NSString).standardizingPath, origin: "MENAGERIE_PLUGIN_PATH"))
            }
            let home = environment["HOME"] ?? NSHomeDirectory()
            folders.append(Folder(path: home + "/.local/share/menagerie/plugins", origin: "user"))
        }
        var seen = Set<String>()
        self.folders = folders.filter { seen.insert($0.path).inserted }
    }

    /// The running executable (resolved through /proc/self/exe).
    public static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    public static func builtInFolder(executable: String) -> String {
        let bin = (executable as NSString).deletingLastPathComponent
        let installed = ((bin as NSString).deletingLastPathComponent as NSString).appendingPathComponent("lib/menagerie/plugins")
        if (bin as NSString).lastPathComponent == "bin", FileManager.default.fileExists(atPath: installed) { return installed }
        return bin
    }

    /// The `.so` files of every folder, with the folder they came from, in search order.
    public func candidates() -> [(path: String, folder: Folder)] {
        var out: [(String, Folder)] = []
        for folder in folders {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else { continue }
            for name in names.sorted() where name.hasSuffix(".so") && !name.hasPrefix(".") {
                out.append((folder.path + "/" + name, folder))
            }
        }
        return out
    }
}
