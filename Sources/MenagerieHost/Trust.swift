import Foundation

/// A plugin is native code: before loading one, refuse a file or folder that someone else could
/// have changed. Built-in plugins go through the same checks.
///
/// The rule is OpenSSH's StrictModes, applied to the path as written AND to where its symlinks
/// lead: the file and every folder above it, up to `/`, must be owned by you or root and not be
/// writable by group or others. A world- or group-writable folder is accepted only with the sticky
/// bit (`/tmp`): there nobody can rename or replace an entry they do not own, and the entry below it
/// is checked in turn.
public enum Trust {
    /// nil when `path` (a file) and every folder above it may be loaded from; otherwise why not and how to fix.
    public static func problem(path: String) -> String? {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        if let p = check(absolute, what: "plugin file", followLinks: true) { return p }
        // The path as written: the folders that hold the name (a symlink in a trusted folder still
        // needs a trusted folder).
        if let p = checkAncestors(of: absolute) { return p }
        // Where it leads: every component of the resolved path.
        guard let resolved = realpath(absolute, nil) else {
            return "cannot resolve plugin file \(path): \(String(cString: strerror(errno)))"
        }
        let target = String(cString: resolved)
        free(resolved)
        if target != absolute {
            if let p = check(target, what: "plugin file (the target of \(path))", followLinks: false) { return p }
            if let p = checkAncestors(of: target) { return p.replacingOccurrences(of: "plugin folder", with: "plugin folder (on the way to \(path)'s target)") }
        }
        return nil
    }

    /// Checks each folder above `path`, from its parent up to `/`.
    static func checkAncestors(of path: String) -> String? {
        var dir = (path as NSString).deletingLastPathComponent
        while !dir.isEmpty {
            if let p = check(dir, what: "plugin folder", followLinks: true, allowSticky: true) { return p }
            if dir == "/" { break }
            dir = (dir as NSString).deletingLastPathComponent
        }
        return nil
    }

    /// Owner and write bits of one file or folder.
    public static func check(_ path: String, what: String, followLinks: Bool = true, allowSticky: Bool = false) -> String? {
        var st = stat()
        let rc = followLinks ? stat(path, &st) : lstat(path, &st)
        guard rc == 0 else { return "cannot stat \(what) \(path): \(String(cString: strerror(errno)))" }
        let me = geteuid()
        if st.st_uid != me && st.st_uid != 0 {
            let owner = getpwuid(st.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(st.st_uid)"
            return "\(what) \(path) is owned by \(owner), not by you or root: refusing to load code another user controls "
                + "(copy it into a folder of your own, or `chown` it)"
        }
        let sticky = st.st_mode & S_IFMT == S_IFDIR && st.st_mode & S_ISVTX != 0
        if st.st_mode & (S_IWGRP | S_IWOTH) != 0 && !(allowSticky && sticky) {
            let who = st.st_mode & S_IWOTH != 0 ? "everyone" : "its group"
            return "\(what) \(path) is writable by \(who): refusing to load code others could change (fix: chmod go-w \(path))"
        }
        return nil
    }
}
