/// A CSV field as pandas' `to_csv` writes it (minimal quoting): quoted, with quotes doubled, when it
/// holds a comma, a quote or a line break.
public func csvField(_ s: String) -> String {
    s.unicodeScalars.contains { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }
        ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
}
