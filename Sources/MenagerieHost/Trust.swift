import Foundation

/// A plugin is native code: before loading one, refuse a file or folder that someone else could
/// have changed. Built-in plugins go through the same checks.
public enum Trust {
    /// nil when `path` (a file) and its folder may be loaded from; otherwise why not and how to fix.
    public static func problem(path: String) -> String? {
        if let p = check(path, what: "plugin file") { return p }
        let dir = (path as NSString).deletingLastPathComponent
        return check(dir.isEmpty ? "." : dir, what: "plugin folder")
    }

    public static func check(_ path: String, what: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return "cannot stat \(what) \(path): \(String(cString: strerror(errno)))" }
        let me = geteuid()
        if st.st_uid != me && st.st_uid != 0 {
            let owner = getpwuid(st.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(st.st_uid)"
            return "\(what) \(path) is owned by \(owner), not by you or root: refusing to load code another user controls "
                + "(copy it into a folder of your own, or `chown` it)"
        }
        if st.st_mode & (S_IWGRP | S_IWOTH) != 0 {
            let who = st.st_mode & S_IWOTH != 0 ? "everyone" : "its group"
            return "\(what) \(path) is writable by \(who): refusing to load code others could change (fix: chmod go-w \(path))"
        }
        return nil
    }
}
