import Foundation

/// A reader for the subset of YAML that model configuration files use (the SAM 2 / hydra configs, a
/// resolved `config.yaml`), into `JSONValue`:
/// - block mappings (`key: value`, `key:` followed by a more indented block, or by a `- ` sequence at
///   the same indent, as PyYAML writes them) and block sequences (`- scalar`, `- key: value …`);
/// - flow sequences and mappings (`[1, 2]`, `{a: 1}`), nested;
/// - scalars: `null`/`~`, `true`/`false`, integers, floats (`1.0e-06`, `.inf`, `.nan`), single- and
///   double-quoted strings (`\n`, `\t`, `\"`, `\\`, `''`), plain strings; `#` comments.
/// Not accepted (an error naming the line): anchors and aliases (`&`, `*`), tags (`!`), block
/// scalars (`|`, `>`), several documents, tabs in indentation.
public enum YAML {
    /// The largest nesting accepted.
    public static let maxDepth = 64

    public static func parse(_ text: String, source: String = "YAML") throws -> JSONValue {
        var lines: [Line] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw.hasSuffix("\r") ? raw.dropLast() : raw)
            let content = try stripComment(line, number: i + 1, source: source)
            let trimmed = content.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            if trimmed == "---" && lines.isEmpty { continue }
            if trimmed == "---" || trimmed == "..." {
                throw FormatError(path: source, "line \(i + 1): several YAML documents are not supported")
            }
            let indent = content.prefix { $0 == " " }.count
            if content.dropFirst(indent).first == "\t" { throw FormatError(path: source, "line \(i + 1): a tab in the indentation") }
            lines.append(Line(number: i + 1, indent: indent, text: trimmed))
        }
        guard !lines.isEmpty else { return .null }
        var parser = Parser(lines: lines, source: source)
        let value = try parser.block(indent: lines[0].indent, depth: 0)
        if parser.index < lines.count {
            throw FormatError(path: source, "line \(lines[parser.index].number): unexpected indentation or content '\(lines[parser.index].text)'")
        }
        return value
    }

    /// Reads and parses a file (at most `limit` bytes).
    public static func read(_ path: String, limit: Int = 16 << 20) throws -> JSONValue {
        try parse(try RegularFile.text(path, limit: limit), source: path)
    }

    struct Line {
        var number: Int
        var indent: Int
        var text: String
    }

    /// The line without its comment (a `#` at the start or after a space, outside quotes).
    static func stripComment(_ line: String, number: Int, source: String) throws -> String {
        var quote: Character? = nil
        var previous: Character = " "
        var out = ""
        for ch in line {
            if let q = quote {
                if ch == q { quote = nil }
            } else if ch == "'" || ch == "\"" {
                if previous == " " || previous == "[" || previous == "{" || previous == "," || previous == ":" || out.allSatisfy({ $0 == " " || $0 == "-" }) {
                    quote = ch
                }
            } else if ch == "#" && (previous == " " || out.isEmpty) {
                break
            }
            out.append(ch)
            previous = ch
        }
        return out
    }

    struct Parser {
        let lines: [Line]
        let source: String
        var index = 0

        init(lines: [Line], source: String) {
            self.lines = lines
            self.source = source
        }

        func error(_ line: Line, _ message: String) -> FormatError { FormatError(path: source, "line \(line.number): \(message)") }

        /// The block starting at the current line, whose lines have exactly `indent`.
        mutating func block(indent: Int, depth: Int) throws -> JSONValue {
            guard depth < YAML.maxDepth else { throw error(lines[index], "nested deeper than \(YAML.maxDepth) levels") }
            let first = lines[index]
            if first.text == "-" || first.text.hasPrefix("- ") { return try sequence(indent: indent, depth: depth) }
            return try mapping(indent: indent, depth: depth)
        }

        mutating func sequence(indent: Int, depth: Int) throws -> JSONValue {
            var items: [JSONValue] = []
            while index < lines.count, lines[index].indent == indent, lines[index].text == "-" || lines[index].text.hasPrefix("- ") {
                let line = lines[index]
                let rest = line.text == "-" ? "" : String(line.text.dropFirst(2)).trimmingCharacters(in: .whitespaces)
                index += 1
                if rest.isEmpty {
                    // The item is the more indented block that follows.
                    guard index < lines.count, lines[index].indent > indent else {
                        items.append(.null)
                        continue
                    }
                    items.append(try block(indent: lines[index].indent, depth: depth + 1))
                } else if rest.hasPrefix("- ") {
                    throw error(line, "a sequence nested on one line ('- - …') is not supported")
                } else if let colon = mappingColon(rest) {
                    // "- key: value" starts a mapping whose other keys are indented past the dash.
                    let inner = indent + 2 + (line.text.dropFirst(2).prefix { $0 == " " }.count)
                    var object: [String: JSONValue] = [:]
                    try entry(rest, colon: colon, line: line, indent: inner, depth: depth + 1, into: &object)
                    if index < lines.count, lines[index].indent == inner, !(lines[index].text.hasPrefix("- ")) {
                        guard case .object(let more) = try mapping(indent: inner, depth: depth + 1) else { throw error(line, "expected a mapping") }
                        for (k, v) in more {
                            guard object[k] == nil else { throw error(line, "duplicate key '\(k)'") }
                            object[k] = v
                        }
                    }
                    items.append(.object(object))
                } else {
                    items.append(try scalarOrFlow(rest, line: line, depth: depth + 1))
                }
            }
            return .array(items)
        }

        mutating func mapping(indent: Int, depth: Int) throws -> JSONValue {
            var object: [String: JSONValue] = [:]
            while index < lines.count, lines[index].indent == indent {
                let line = lines[index]
                guard let colon = mappingColon(line.text) else {
                    throw error(line, "expected 'key: value' in a mapping, got '\(line.text)'")
                }
                index += 1
                try entry(line.text, colon: colon, line: line, indent: indent, depth: depth, into: &object)
            }
            if index < lines.count, lines[index].indent > indent {
                throw error(lines[index], "unexpected indentation")
            }
            return .object(object)
        }

        /// One `key: value` (the value inline, or the block below it) into `object`.
        mutating func entry(_ text: String, colon: String.Index, line: Line, indent: Int, depth: Int, into object: inout [String: JSONValue]) throws {
            let key = try unquoteKey(String(text[..<colon]).trimmingCharacters(in: .whitespaces), line: line)
            guard object[key] == nil else { throw error(line, "duplicate key '\(key)'") }
            let rest = String(text[text.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
            if !rest.isEmpty {
                object[key] = try scalarOrFlow(rest, line: line, depth: depth + 1)
                return
            }
            if index < lines.count, lines[index].indent > indent {
                object[key] = try block(indent: lines[index].indent, depth: depth + 1)
            } else if index < lines.count, lines[index].indent == indent, lines[index].text == "-" || lines[index].text.hasPrefix("- ") {
                object[key] = try sequence(indent: indent, depth: depth + 1)
            } else {
                object[key] = .null
            }
        }

        /// The colon that ends a mapping key (followed by a space or the end of the line, outside quotes and brackets).
        func mappingColon(_ text: String) -> String.Index? {
            if text.hasPrefix("[") || text.hasPrefix("{") { return nil }
            var quote: Character? = nil
            var i = text.startIndex
            while i < text.endIndex {
                let ch = text[i]
                if let q = quote {
                    if ch == q { quote = nil }
                } else if (ch == "'" || ch == "\"") && i == text.startIndex {
                    quote = ch
                } else if ch == ":" {
                    let next = text.index(after: i)
                    if next == text.endIndex || text[next] == " " { return i }
                }
                i = text.index(after: i)
            }
            return nil
        }

        func unquoteKey(_ key: String, line: Line) throws -> String {
            if case .string(let s) = try scalar(key, line: line) { return s }
            return key
        }

        func scalarOrFlow(_ text: String, line: Line, depth: Int) throws -> JSONValue {
            if let c = text.first, "&*!|>%@`".contains(c) {
                throw error(line, "'\(c)' (anchors, aliases, tags, block scalars) is not supported in '\(text)'")
            }
            if text.hasPrefix("[") || text.hasPrefix("{") {
                var flow = Flow(chars: Array(text), line: line, source: source)
                let v = try flow.value(depth: depth)
                flow.skipSpaces()
                guard flow.position == flow.chars.count else { throw error(line, "unexpected text after a flow collection: '\(text)'") }
                return v
            }
            return try scalar(text, line: line)
        }

        func scalar(_ text: String, line: Line) throws -> JSONValue {
            try YAML.scalar(text, line: line.number, source: source)
        }
    }

    static func scalar(_ text: String, line: Int, source: String) throws -> JSONValue {
        if text.hasPrefix("\"") || text.hasPrefix("'") {
            guard text.count >= 2, text.last == text.first else { throw FormatError(path: source, "line \(line): an unterminated string \(text)") }
            let body = String(text.dropFirst().dropLast())
            if text.first == "'" { return .string(body.replacingOccurrences(of: "''", with: "'")) }
            var out = "", escaping = false
            for ch in body {
                if escaping {
                    switch ch {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "\"": out.append("\"")
                    case "\\": out.append("\\")
                    case "/": out.append("/")
                    default: throw FormatError(path: source, "line \(line): the escape '\\\(ch)' is not supported")
                    }
                    escaping = false
                } else if ch == "\\" {
                    escaping = true
                } else {
                    out.append(ch)
                }
            }
            return .string(out)
        }
        switch text {
        case "null", "Null", "NULL", "~": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        case ".inf", ".Inf", ".INF", "+.inf": return .number(.infinity)
        case "-.inf", "-.Inf", "-.INF": return .number(-.infinity)
        case ".nan", ".NaN", ".NAN": return .number(.nan)
        default: break
        }
        let numeric = text.allSatisfy { "0123456789+-.eE_".contains($0) } && text.contains(where: \.isNumber)
        if numeric, let v = Double(text.replacingOccurrences(of: "_", with: "")) { return .number(v) }
        return .string(text)
    }

    /// A flow collection (`[…]`, `{…}`) on one line.
    struct Flow {
        let chars: [Character]
        let line: Line
        let source: String
        var position = 0

        init(chars: [Character], line: Line, source: String) {
            self.chars = chars
            self.line = line
            self.source = source
        }

        func error(_ m: String) -> FormatError { FormatError(path: source, "line \(line.number): \(m)") }

        mutating func skipSpaces() { while position < chars.count, chars[position] == " " { position += 1 } }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < YAML.maxDepth else { throw error("nested deeper than \(YAML.maxDepth) levels") }
            skipSpaces()
            guard position < chars.count else { throw error("a flow collection ends too early") }
            if chars[position] == "[" {
                position += 1
                var items: [JSONValue] = []
                skipSpaces()
                if position < chars.count, chars[position] == "]" {
                    position += 1
                    return .array([])
                }
                while true {
                    items.append(try value(depth: depth + 1))
                    skipSpaces()
                    guard position < chars.count else { throw error("an unterminated '['") }
                    if chars[position] == "," {
                        position += 1
                        continue
                    }
                    guard chars[position] == "]" else { throw error("expected ',' or ']' at column \(position + 1)") }
                    position += 1
                    return .array(items)
                }
            }
            if chars[position] == "{" {
                position += 1
                var object: [String: JSONValue] = [:]
                skipSpaces()
                if position < chars.count, chars[position] == "}" {
                    position += 1
                    return .object([:])
                }
                while true {
                    let key = try atom(stopAt: ":")
                    guard position < chars.count, chars[position] == ":" else { throw error("expected ':' after the key '\(key)'") }
                    position += 1
                    let k: String
                    if case .string(let s) = try YAML.scalar(key, line: line.number, source: source) { k = s } else { k = key }
                    guard object[k] == nil else { throw error("duplicate key '\(k)'") }
                    object[k] = try value(depth: depth + 1)
                    skipSpaces()
                    guard position < chars.count else { throw error("an unterminated '{'") }
                    if chars[position] == "," {
                        position += 1
                        continue
                    }
                    guard chars[position] == "}" else { throw error("expected ',' or '}' at column \(position + 1)") }
                    position += 1
                    return .object(object)
                }
            }
            return try YAML.scalar(try atom(stopAt: nil), line: line.number, source: source)
        }

        /// A scalar's text up to `,`, `]`, `}` (or `stopAt`), quotes kept.
        mutating func atom(stopAt: Character?) throws -> String {
            skipSpaces()
            var out = ""
            if position < chars.count, chars[position] == "\"" || chars[position] == "'" {
                let q = chars[position]
                out.append(q)
                position += 1
                while position < chars.count, chars[position] != q {
                    if chars[position] == "\\" && q == "\"" && position + 1 < chars.count {
                        out.append(chars[position])
                        position += 1
                    }
                    out.append(chars[position])
                    position += 1
                }
                guard position < chars.count else { throw error("an unterminated string") }
                out.append(q)
                position += 1
                return out
            }
            while position < chars.count, !",]}".contains(chars[position]), chars[position] != stopAt {
                if "[{&*!|>".contains(chars[position]) && out.isEmpty { throw error("'\(chars[position])' is not supported here") }
                out.append(chars[position])
                position += 1
            }
            let trimmed = out.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty else { throw error("an empty value in a flow collection") }
            return trimmed
        }
    }
}
