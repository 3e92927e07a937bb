/// Errors of the host. Every message names the plugin, component, file or option at fault and
/// says what to do.
public struct HostError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case usage, notFound, refused, failed }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { message }
}
