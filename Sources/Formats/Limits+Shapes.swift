import Foundation

extension Limits {
    /// The element count of a shape read from a file, refused when the product of its non-zero
    /// dimensions overflows: a shape such as (0, 2^62, 2^62) holds no element but its strides do
    /// not fit in an Int (numpy refuses it as "array is too big").
    public static func elements(_ dims: [Int], what: String, source: String) throws -> Int {
        var nonZero = 1
        for d in dims {
            guard d >= 0 else { throw FormatError(path: source, "\(what): negative dimension in \(dims)") }
            guard d > 0 else { continue }
            let (p, o) = nonZero.multipliedReportingOverflow(by: d)
            guard !o else { throw FormatError(path: source, "\(what): the shape \(dims) has more elements than can be addressed") }
            nonZero = p
        }
        return dims.contains(0) ? 0 : nonZero
    }
}
