import Foundation

/// Files a plugin ships (`Plugins/<Name>/Resources/…`, copied next to the library as
/// `Menagerie_<Name>.resources/`). The SDK is linked into every plugin, so code here runs from the
/// plugin's own file: its path comes from this process's memory map.
public enum PluginResources {
    /// `Menagerie_<module>.resources/<item>` beside the library (or test binary) holding this code.
    public static func path(module: String, item: String) throws -> String {
        // Found once per process: reading /proc/self/maps costs about a millisecond with a dozen plugins
        // loaded, and a backbone called at every DDIM step asks each time.
        if let known = found.cached(module + "/" + item) { return known }
        let path = try locate(module: module, item: item)
        found.store(module + "/" + item, path)
        return path
    }

    /// Successful lookups of this process.
    static let found = ProcessCache<String>()

    static func locate(module: String, item: String) throws -> String {
        // The address of code in this library: a C-convention function defined here.
        let probe: @convention(c) () -> Void = {}
        guard let library = fileMapping(UInt(bitPattern: unsafeBitCast(probe, to: UnsafeRawPointer.self))) else {
            throw MenagerieError.notFound("cannot locate the \(module) plugin's own file to find its shipped \(item)")
        }
        let path = (library as NSString).deletingLastPathComponent + "/Menagerie_\(module).resources/" + item
        guard FileManager.default.fileExists(atPath: path) else {
            throw MenagerieError.notFound("the \(module) plugin's shipped \(item) is missing (\(path)); reinstall the plugin with its resources folder")
        }
        return path
    }

    /// The file mapped at `address` in this process (from /proc/self/maps; Glibc's dladdr is not
    /// exported to Swift without _GNU_SOURCE).
    static func fileMapping(_ address: UInt) -> String? {
        // procfs reports size 0: read to the end with read(2) rather than trusting the size, and
        // decode leniently (a mapped file's name need not be UTF-8).
        let fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n > 0 {
                bytes += chunk[0..<n]
                continue
            }
            if n < 0 && errno == EINTR { continue }
            break
        }
        let maps = String(decoding: bytes, as: UTF8.self)
        for line in maps.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6 else { continue }
            let path = fields[5].trimmingCharacters(in: .whitespaces)
            guard path.hasPrefix("/") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16) else { continue }
            if address >= lo && address < hi { return path }
        }
        return nil
    }
}
