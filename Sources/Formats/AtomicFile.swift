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

    /// Writes a file piece by piece (`body` calls `write` as often as it likes), atomically: into a
    /// temporary file in the same folder, renamed over `path` once `body` returns. On an error the
    /// temporary file is removed and `path` is untouched.
    public static func stream(to path: String, _ body: (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/.\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FormatError(path: path, "cannot write into \(dir) (\(String(cString: strerror(errno)))): check that the folder exists and is writable")
        }
        do {
            try body { buffer in
                var done = 0
                while done < buffer.count {
                    let n = Foundation.write(fd, buffer.baseAddress! + done, buffer.count - done)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { throw FormatError(path: path, "cannot write: \(String(cString: strerror(errno)))") }
                    done += n
                }
            }
            guard fsync(fd) == 0 || errno == EINVAL else { throw FormatError(path: path, "cannot flush: \(String(cString: strerror(errno)))") }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        if rename(tmp, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw FormatError(path: path, "cannot move the finished file into place (\(reason))")
        }
    }
}
