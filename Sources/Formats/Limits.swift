import Foundation

/// The one validation layer for numbers that come from outside — a file's header or config, an
/// option, a plugin's response — before they divide, size memory or index.
///
/// Every check throws a `FormatError` naming the source (a file, `--set`, a plugin), the key and the
/// offending value, and says what is allowed. Nothing here traps: products are overflow-checked,
/// conversions from JSON doubles are range-checked first, and allocations are capped against the
/// machine's memory (or `MENAGERIE_MAX_ALLOCATION`) before anything is allocated.
public enum Limits {
    // MARK: integers from JSON and options

    /// An integer `key` of a JSON object (a config, a header, options) that must lie in `range`.
    /// Missing → `defaultValue` when given, otherwise an error naming the key.
    public static func int(
        _ value: JSONValue?, key: String, in range: ClosedRange<Int>, source: String,
        default defaultValue: Int? = nil
    ) throws -> Int {
        guard let value, value != .null else {
            if let defaultValue { return defaultValue }
            throw FormatError(path: source, "'\(key)' is missing (an integer in \(describe(range)) is required)")
        }
        return try int(value.doubleValue, text: value.compactText, key: key, in: range, source: source)
    }

    /// A number already read as a Double (JSON numbers are doubles) that must be an integer in `range`.
    public static func int(_ number: Double?, text: String? = nil, key: String, in range: ClosedRange<Int>, source: String) throws -> Int {
        let shown = text ?? number.map { "\($0)" } ?? "null"
        guard let number else { throw FormatError(path: source, "'\(key)' = \(shown) is not a number (an integer in \(describe(range)) is required)") }
        guard number.isFinite, number.rounded() == number, abs(number) < 9.0e15 else {
            throw FormatError(path: source, "'\(key)' = \(shown) is not an integer in \(describe(range))")
        }
        let v = Int(number)
        guard range.contains(v) else { throw FormatError(path: source, "'\(key)' = \(shown) is out of range: it must lie in \(describe(range))") }
        return v
    }

    /// An integer already converted, checked against `range` (for options and C fields).
    public static func check(_ value: Int, key: String, in range: ClosedRange<Int>, source: String) throws -> Int {
        guard range.contains(value) else { throw FormatError(path: source, "'\(key)' = \(value) is out of range: it must lie in \(describe(range))") }
        return value
    }

    /// A finite floating-point value in `range` (NaN and ±inf refused).
    public static func finite(
        _ value: Double, key: String, in range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude,
        source: String
    ) throws -> Double {
        guard value.isFinite, range.contains(value) else {
            let allowed =
                range == -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude
                ? "a finite number" : "a finite number in \(range.lowerBound)…\(range.upperBound)"
            throw FormatError(path: source, "'\(key)' = \(value) is not \(allowed)")
        }
        return value
    }

    /// `x` rounded down and clamped to `0...upper`, without trapping: NaN and negative values give 0,
    /// values beyond `upper` (even ±inf or 1e300) give `upper`. For counts computed from a ratio
    /// such as "this many proposals per video".
    public static func clampedCount(_ x: Double, atMost upper: Int) -> Int {
        guard x.isFinite || x == .infinity, x > 0 else { return 0 }
        guard x < Double(upper) else { return upper }
        return Int(x.rounded(.down))
    }

    /// `a` divisible by `b` (both already positive), e.g. a width by a head count.
    public static func divisible(_ a: Int, by b: Int, what: String, source: String) throws {
        guard b > 0, a % b == 0 else { throw FormatError(path: source, "\(what): \(a) is not divisible by \(b)") }
    }

    /// Sizes of model configs: at least 1 and at most 2^24 (no released model has a wider layer,
    /// more heads or more layers; a larger value is a corrupt or hostile file).
    public static let dimension: ClosedRange<Int> = 1...(1 << 24)
    /// Vocabulary sizes and token ids: up to 2^24 entries.
    public static let vocabulary: ClosedRange<Int> = 1...(1 << 24)

    static func describe(_ r: ClosedRange<Int>) -> String {
        r.upperBound == Int.max ? "\(r.lowerBound)…" : "\(r.lowerBound)…\(r.upperBound)"
    }

    // MARK: products and allocations

    /// The product of `dims` (each ≥ 0), or an error when it overflows.
    public static func product(_ dims: [Int], what: String, source: String) throws -> Int {
        var n = 1
        for d in dims {
            guard d >= 0 else { throw FormatError(path: source, "\(what): negative dimension in \(dims)") }
            let (p, o) = n.multipliedReportingOverflow(by: d)
            guard !o else { throw FormatError(path: source, "\(what): the shape \(dims) has more elements than can be addressed") }
            n = p
        }
        return n
    }

    /// The byte size of `count` elements of `elementSize` bytes, refused when it overflows or
    /// exceeds `allocationLimit`. Call before allocating memory whose size came from outside.
    @discardableResult
    public static func allocation(count: Int, elementSize: Int, what: String, source: String) throws -> Int {
        guard count >= 0, elementSize > 0 else { throw FormatError(path: source, "\(what): invalid size \(count) × \(elementSize) bytes") }
        let (bytes, o) = count.multipliedReportingOverflow(by: elementSize)
        let limit = allocationLimit
        guard !o, bytes <= limit else {
            let shown = o ? "more than 2^63 bytes" : formatBytes(bytes)
            throw FormatError(
                path: source,
                "\(what) would need \(shown), more than the limit of \(formatBytes(limit)) "
                    + "(the machine's memory; set MENAGERIE_MAX_ALLOCATION=BYTES to change it): a corrupt or hostile value?")
        }
        return bytes
    }

    /// `allocation(count:…)` of the product of `dims`.
    @discardableResult
    public static func allocation(shape dims: [Int], elementSize: Int, what: String, source: String) throws -> Int {
        try allocation(count: try product(dims, what: what, source: source), elementSize: elementSize, what: what, source: source)
    }

    /// The parameter memory of a model whose tensors have the shapes `terms` (`elementSize` bytes each),
    /// refused when a product or the sum overflows or the total exceeds `allocationLimit`. Call with
    /// a config's sizes before building the model. Returns the parameter count.
    @discardableResult
    public static func parameters(_ terms: [[Int]], elementSize: Int = 4, what: String, source: String) throws -> Int {
        var total = 0
        for t in terms {
            let (s, o) = total.addingReportingOverflow(try product(t, what: what, source: source))
            guard !o else { throw FormatError(path: source, "\(what): the parameter count overflows") }
            total = s
        }
        try allocation(count: total, elementSize: elementSize, what: "\(what) (\(total) parameters)", source: source)
        return total
    }

    /// A derived size `Int((Double(base) × ratio).rounded())` (an MLP's hidden width from `mlp_ratio`),
    /// refused unless `ratio` is finite and positive and the result lies in `range`.
    public static func scaled(_ base: Int, by ratio: Double, key: String, in range: ClosedRange<Int> = dimension, source: String) throws -> Int {
        guard ratio.isFinite, ratio > 0 else {
            throw FormatError(path: source, "'\(key)' = \(ratio) is not a finite positive number")
        }
        let v = (Double(base) * ratio).rounded()
        guard v >= Double(range.lowerBound), v <= Double(range.upperBound) else {
            throw FormatError(path: source, "'\(key)' = \(ratio) gives a hidden size of \(v) (\(base) × \(ratio)), outside \(describe(range))")
        }
        return Int(v)
    }

    /// The largest single allocation sized from outside: `MENAGERIE_MAX_ALLOCATION` bytes, or the
    /// machine's physical memory.
    public static var allocationLimit: Int {
        if let s = ProcessInfo.processInfo.environment["MENAGERIE_MAX_ALLOCATION"], let v = Int(s), v > 0 { return v }
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return 1 << 34 }
        return pages.multipliedReportingOverflow(by: size).overflow ? Int.max : pages * size
    }

    /// The largest image read, in pixels (width × height): Pillow's `MAX_IMAGE_PIXELS` default,
    /// 89,478,485 (a 0.25 GiB RGB image); `MENAGERIE_MAX_PIXELS` raises or lowers it.
    public static var maxImagePixels: Int {
        if let s = ProcessInfo.processInfo.environment["MENAGERIE_MAX_PIXELS"], let v = Int(s), v > 0 { return v }
        return 89_478_485
    }

    /// Refuses an image of `width × height` beyond `maxImagePixels` (a decompression bomb).
    public static func imageSize(width: Int, height: Int, source: String) throws {
        guard width > 0, height > 0 else { throw FormatError(path: source, "image size \(width)×\(height) is empty or negative") }
        let (n, o) = width.multipliedReportingOverflow(by: height)
        guard !o, n <= maxImagePixels else {
            throw FormatError(
                path: source,
                "\(width)×\(height) pixels exceed the limit of \(maxImagePixels) "
                    + "(a decompression bomb? set MENAGERIE_MAX_PIXELS to raise it)")
        }
    }

    public static func formatBytes(_ n: Int) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var v = Double(n), i = 0
        while v >= 1024, i < units.count - 1 {
            v /= 1024
            i += 1
        }
        return i == 0 ? "\(n) bytes" : String(format: "%.1f %@", v, units[i])
    }
}

/// Opening files that came from a user: only regular files (a FIFO named `model.safetensors` would
/// block `open()` forever, a device would read without end), read with a size cap.
public enum RegularFile {
    /// Opens `path` for reading without blocking and checks that it is a regular file. The caller closes.
    public static func open(_ path: String) throws -> (fd: Int32, size: Int) {
        let fd = Foundation.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw FormatError(path: path, "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw FormatError(path: path, "cannot stat: \(String(cString: strerror(e)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            let kind: String
            switch st.st_mode & S_IFMT {
            case S_IFDIR: kind = "a folder"
            case S_IFIFO: kind = "a FIFO (named pipe)"
            case S_IFCHR, S_IFBLK: kind = "a device"
            case S_IFSOCK: kind = "a socket"
            default: kind = "not a regular file"
            }
            throw FormatError(path: path, "is \(kind), not a regular file")
        }
        // Back to blocking reads: O_NONBLOCK only served to open a FIFO without waiting.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return (fd, Int(st.st_size))
    }

    /// Whether `path` names a regular file (following symlinks); never blocks.
    public static func isRegular(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFREG
    }

    /// The whole file, refused beyond `limit` bytes (default 1 GiB: configs, JSON, CSV, tokenizers).
    public static func read(_ path: String, limit: Int = 1 << 30) throws -> Data {
        let (fd, size) = try open(path)
        defer { close(fd) }
        guard size <= limit else {
            throw FormatError(path: path, "is \(Limits.formatBytes(size)), more than the \(Limits.formatBytes(limit)) expected of this kind of file")
        }
        var data = Data(count: size)
        var got = 0
        try data.withUnsafeMutableBytes { buf in
            while got < size {
                let n = Foundation.read(fd, buf.baseAddress! + got, size - got)
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw FormatError(path: path, "cannot read: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                got += n
            }
        }
        if got < size { data.removeSubrange(got..<size) }
        return data
    }

    /// The whole file as UTF-8 text (invalid sequences refused).
    public static func text(_ path: String, limit: Int = 1 << 30) throws -> String {
        let data = try read(path, limit: limit)
        guard let s = String(data: data, encoding: .utf8) else { throw FormatError(path: path, "is not valid UTF-8 text") }
        return s
    }
}
