import Foundation

/// Writes files so that a reader sees either the old content or the complete new one, never a
/// half-written file: the bytes go to a temporary file in the same folder, which is renamed over
/// the target (rename(2) is atomic within one filesystem).
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard FileManager.default.createFile(atPath: tmp, contents: data) else {
            throw FormatError(path: path, "cannot write into \(dir): check that the folder exists and is writable")
        }
        if rename(tmp, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw FormatError(path: path, "cannot move the finished file into place (\(reason))")
        }
    }

    public static func write(_ text: String, to path: String) throws {
        try write(Data(text.utf8), to: path)
    }
}
