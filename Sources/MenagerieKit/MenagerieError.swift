import CMenagerie

/// A typed error that crosses the ABI as a status code plus a message. The message names what
/// went wrong, where (component, option, tensor, file) and what to do.
public struct MenagerieError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Status: Int32, Sendable {
        case error = 1, invalidArgument = 2, notFound = 3, cancelled = 4, unsupported = 5
    }
    public let status: Status
    public let message: String

    public init(_ status: Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }

    public static func failed(_ m: String) -> Self { .init(.error, m) }
    public static func invalidArgument(_ m: String) -> Self { .init(.invalidArgument, m) }
    public static func notFound(_ m: String) -> Self { .init(.notFound, m) }
    public static func unsupported(_ m: String) -> Self { .init(.unsupported, m) }
    public static let cancelled = MenagerieError(.cancelled, "cancelled by the user")
}

/// Names in `candidates` closest to `name` (edit distance), for "did you mean" messages.
public func closestNames(to name: String, in candidates: [String], limit: Int = 3) -> [String] {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        var cur = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }
    let lower = Array(name.lowercased())
    let scored = candidates.map { c -> (String, Int) in
        let d = distance(lower, Array(c.lowercased()))
        let contains = c.lowercased().contains(name.lowercased()) || name.lowercased().contains(c.lowercased())
        return (c, contains ? min(d, 1) : d)
    }
    let threshold = max(2, name.count / 3)
    // Ties go to the longer common prefix (a typo is rarer in the first letters: '--ouput' → '--out'
    // rather than '--input'), then to alphabetical order.
    func prefix(_ c: String) -> Int { zip(c.lowercased(), lower).prefix { $0 == $1 }.count }
    return scored.filter { $0.1 <= threshold }.sorted {
        $0.1 != $1.1 ? $0.1 < $1.1 : prefix($0.0) != prefix($1.0) ? prefix($0.0) > prefix($1.0) : $0.0 < $1.0
    }.prefix(limit).map(\.0)
}

/// " Did you mean 'x' or 'y'?" or an empty string.
public func didYouMean(_ name: String, in candidates: [String]) -> String {
    let close = closestNames(to: name, in: candidates)
    guard !close.isEmpty else { return "" }
    return " Did you mean " + close.map { "'\($0)'" }.joined(separator: " or ") + "?"
}
