import Foundation

/// The text clean-up CLIP's tokenizer applies before splitting: ftfy's `fix_text` (the steps that do
/// not guess encodings) and Python's `html.unescape`.
public enum TextCleaner {
    /// ftfy 6 `fix_text` with its default configuration, except `fix_encoding` (mojibake repair,
    /// a statistical guess) which is not done. Per line segment, repeated until nothing changes:
    /// unescape HTML (semicolon-terminated references; skipped when the segment holds '<'), C1
    /// controls read as Windows-1252, Latin ligatures split, fullwidth forms to ASCII (and U+3000 to
    /// a space), curly quotes straightened, line breaks to '\n', ANSI terminal escapes removed,
    /// control characters removed, then NFC.
    public static func fixText(_ text: String) -> String {
        var out = ""
        var rest = Substring(text)
        while !rest.isEmpty {
            let end = rest.firstIndex(of: "\n").map { rest.index(after: $0) } ?? rest.endIndex
            out += fixSegment(String(rest[..<end]))
            rest = rest[end...]
        }
        return out
    }

    static func fixSegment(_ segment: String) -> String {
        var text = segment
        while true {
            let original = text
            if !text.contains("<") { text = unescapeHTML(text, requireSemicolon: true) }
            var scalars = String.UnicodeScalarView()
            for c in text.unicodeScalars {
                let v = c.value
                if (0x80...0x9F).contains(v) { // fix_c1_controls
                    scalars.append(windows1252[Int(v - 0x80)])
                } else if let lig = ligatures[v] { // fix_latin_ligatures
                    scalars.append(contentsOf: lig.unicodeScalars)
                } else if v == 0x3000 { // fix_character_width
                    scalars.append(" ")
                } else if (0xFF01..<0xFFF0).contains(v) {
                    scalars.append(contentsOf: (String(c) as NSString).precomposedStringWithCompatibilityMapping.unicodeScalars)
                } else if v == 0x02BC || (0x2018...0x201B).contains(v) { // uncurl_quotes
                    scalars.append("'")
                } else if (0x201C...0x201F).contains(v) {
                    scalars.append("\"")
                } else {
                    scalars.append(c)
                }
            }
            text = String(scalars)
            // fix_line_breaks
            text = text.replacingOccurrences(of: "\r\n", with: "\n")
            text = String(String.UnicodeScalarView(text.unicodeScalars.map { [0x0D, 0x2028, 0x2029, 0x85].contains($0.value) ? "\n" : $0 }))
            text = removeTerminalEscapes(text)
            // remove_control_chars
            text = String(String.UnicodeScalarView(text.unicodeScalars.filter { !isRemovedControl($0.value) }))
            text = text.precomposedStringWithCanonicalMapping
            if text == original { return text }
        }
    }

    static func isRemovedControl(_ v: UInt32) -> Bool {
        v < 0x09 || v == 0x0B || (0x0E..<0x20).contains(v) || v == 0x7F || (0x206A..<0x2070).contains(v) || v == 0xFEFF
            || (0xFFF9..<0xFFFD).contains(v)
    }

    /// `\x1b[` digits/semicolons, then one ASCII letter.
    static func removeTerminalEscapes(_ text: String) -> String {
        guard text.unicodeScalars.contains("\u{1B}") else { return text }
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < s.count {
            if s[i] == "\u{1B}", i + 1 < s.count, s[i + 1] == "[" {
                var j = i + 2
                while j < s.count, s[j] == ";" || ("0"..."9").contains(s[j]) { j += 1 }
                if j < s.count, s[j].isASCII, s[j].properties.isAlphabetic {
                    i = j + 1
                    continue
                }
            }
            out.append(s[i])
            i += 1
        }
        return String(out)
    }

    /// Python's str.isspace() (what str.split() splits on).
    public static func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
        switch c.value {
        case 0x09...0x0D, 0x1C...0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: return true
        default: return false
        }
    }

    /// `\s` of Python's `regex` module on str patterns (Unicode White_Space).
    static func isRegexSpace(_ c: Unicode.Scalar) -> Bool { isPythonSpace(c) }

    // MARK: HTML

    /// Python's `html.unescape`: numeric references (with the HTML5 replacements for invalid code
    /// points) and the 2,231 named references; names without ';' only for the legacy entities that
    /// allow it (longest prefix). With `requireSemicolon`, only references ending in ';' (ftfy).
    public static func unescapeHTML(_ text: String, requireSemicolon: Bool = false) -> String {
        guard text.contains("&") else { return text }
        let s = Array(text.unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < s.count {
            guard s[i] == "&", i + 1 < s.count else {
                out.append(s[i])
                i += 1
                continue
            }
            if s[i + 1] == "#" {
                // &#digits;? or &#xhex;?
                var j = i + 2
                let hex = j < s.count && (s[j] == "x" || s[j] == "X")
                if hex { j += 1 }
                let start = j
                while j < s.count, hex ? s[j].properties.isASCIIHexDigit : ("0"..."9").contains(s[j]) { j += 1 }
                let semicolon = j < s.count && s[j] == ";"
                if j > start && (semicolon || !requireSemicolon) {
                    let digits = String(String.UnicodeScalarView(s[start..<j]))
                    let value = digits.count > 8 ? UInt32.max : UInt32(digits, radix: hex ? 16 : 10) ?? UInt32.max
                    out.append(contentsOf: numericReference(value).unicodeScalars)
                    i = semicolon ? j + 1 : j
                    continue
                }
                out.append(s[i])
                i += 1
                continue
            }
            // &name;? : up to 32 characters other than \t \n \f space < & # ;
            var j = i + 1
            while j < s.count, j - i - 1 < 32, !["\t", "\n", "\u{0C}", " ", "<", "&", "#", ";"].contains(s[j]) { j += 1 }
            let name = String(String.UnicodeScalarView(s[(i + 1)..<j]))
            if j < s.count, s[j] == ";", let v = entities[name + ";"] {
                out.append(contentsOf: v.unicodeScalars)
                i = j + 1
                continue
            }
            if !requireSemicolon {
                // Longest prefix that is a legacy name (no ';' needed).
                let chars = Array(name.unicodeScalars)
                var matched = false
                if chars.count >= 2 {
                    for x in stride(from: chars.count, through: 2, by: -1) {
                        let prefix = String(String.UnicodeScalarView(chars[0..<x]))
                        if let v = entities[prefix] {
                            out.append(contentsOf: v.unicodeScalars)
                            i = i + 1 + x
                            matched = true
                            break
                        }
                    }
                }
                if matched { continue }
            }
            out.append(s[i])
            i += 1
        }
        return String(out)
    }

    /// html.unescape's `_replace_charref` for a numeric value.
    static func numericReference(_ n: UInt32) -> String {
        if let v = invalidCharrefs[n] { return v }
        if (0xD800...0xDFFF).contains(n) || n > 0x10FFFF { return "\u{FFFD}" }
        if (0x1...0x8).contains(n) || (0xE...0x1F).contains(n) || (0x7F...0x9F).contains(n) || (0xFDD0...0xFDEF).contains(n)
            || n == 0xB || (n & 0xFFFF) == 0xFFFE || (n & 0xFFFF) == 0xFFFF
        {
            return ""
        }
        return Unicode.Scalar(n).map { String($0) } ?? "\u{FFFD}"
    }

    static let invalidCharrefs: [UInt32: String] = [
        0x00: "\u{FFFD}", 0x0D: "\r", 0x80: "\u{20AC}", 0x81: "\u{81}", 0x82: "\u{201A}", 0x83: "\u{0192}", 0x84: "\u{201E}",
        0x85: "\u{2026}", 0x86: "\u{2020}", 0x87: "\u{2021}", 0x88: "\u{02C6}", 0x89: "\u{2030}", 0x8A: "\u{0160}", 0x8B: "\u{2039}",
        0x8C: "\u{0152}", 0x8D: "\u{8D}", 0x8E: "\u{017D}", 0x8F: "\u{8F}", 0x90: "\u{90}", 0x91: "\u{2018}", 0x92: "\u{2019}",
        0x93: "\u{201C}", 0x94: "\u{201D}", 0x95: "\u{2022}", 0x96: "\u{2013}", 0x97: "\u{2014}", 0x98: "\u{02DC}", 0x99: "\u{2122}",
        0x9A: "\u{0161}", 0x9B: "\u{203A}", 0x9C: "\u{0153}", 0x9D: "\u{9D}", 0x9E: "\u{017E}", 0x9F: "\u{0178}",
    ]

    /// U+0080…U+009F read as ftfy's "sloppy" Windows-1252 (undefined bytes keep their code point).
    static let windows1252: [Unicode.Scalar] = (0x80...0x9F).map { v in
        invalidCharrefs[UInt32(v)].flatMap { $0.unicodeScalars.first } ?? Unicode.Scalar(UInt32(v))!
    }

    static let ligatures: [UInt32: String] = [
        0x0132: "IJ", 0x0133: "ij", 0x0149: "\u{02BC}n", 0x01F1: "DZ", 0x01F2: "Dz", 0x01F3: "dz", 0x01C4: "D\u{017D}", 0x01C5: "D\u{017E}",
        0x01C6: "d\u{017E}", 0x01C7: "LJ", 0x01C8: "Lj", 0x01C9: "lj", 0x01CA: "NJ", 0x01CB: "Nj", 0x01CC: "nj", 0xFB00: "ff",
        0xFB01: "fi", 0xFB02: "fl", 0xFB03: "ffi", 0xFB04: "ffl", 0xFB05: "\u{017F}t", 0xFB06: "st",
    ]

    /// The HTML5 named references (`HTMLEntities.swift`, generated).
    static let entities: [String: String] = {
        var table: [String: String] = [:]
        for line in html5EntityTable.split(separator: "\n") {
            guard let tab = line.firstIndex(of: "\t") else { continue }
            let escaped = String(line[line.index(after: tab)...])
            guard let data = "\"\(escaped)\"".data(using: .utf8),
                let value = try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed) as? String
            else { continue }
            table[String(line[..<tab])] = value
        }
        return table
    }()
}
