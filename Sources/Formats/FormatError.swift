/// A file that could not be read or written, with the file and what to do.
public struct FormatError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let problem: String
    public init(path: String, _ problem: String) {
        self.path = path
        self.problem = problem
    }
    public var description: String { "\(path): \(problem)" }
}
