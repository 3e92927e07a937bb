import Foundation
import MenagerieKit
import Testing

/// The JSON reader/writer and the direct Codable bridge used on the invoke path.
@Suite struct JSONTests {
    struct Inner: Codable, Equatable {
        var a: [Int]
        var b: Double?
    }
    struct Outer: Codable, Equatable {
        var name: String
        var inner: Inner
        var list: [Inner]
        var grid: [[Int]]
        var flag: Bool
        var missing: Int?
        var map: [String: Float]
    }

    @Test func agreesWithFoundationOnWhatItReads() throws {
        let texts = [
            #"{"a":[1,-2.5e3,0.125,"x\"y\\z\n",true,false,null],"b":{"c":{}},"d":[]}"#,
            #"["\u00e9\ud83d\ude00", "tab\there", 1E2, -0, 123456789012]"#, "  42 ", #""plain""#,
        ]
        for t in texts {
            let ours = try JSONValue.parse(t)
            let foundation = try JSONDecoder().decode(JSONValue.self, from: Data(t.utf8))
            #expect(ours == foundation, "\(t)")
            #expect(try JSONValue.parse(ours.compactText) == ours)
            #expect(try JSONValue.parse(ours.prettyText) == ours)
        }
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test func errorsSayWhere() {
        for (text, fragment) in [
            ("{\"a\": }", "line 1, column 7"), ("{\n  \"a\": 1,\n  \"b\" 2\n}", "expected ':' after key \"b\" at line 3"),
            ("[1, 2", "unexpected end of text"), ("{\"a\": tru}", "invalid literal"), ("[01x]", "expected ',' or ']'"),
            ("\"\\q\"", "invalid escape"), ("1 2", "unexpected text after the JSON value"),
        ] {
            do {
                _ = try JSONValue.parse(text, source: "test")
                Issue.record("accepted \(text)")
            } catch {
                #expect("\(error)".contains(fragment), "\(text): \(error)")
            }
        }
    }

    @Test func codableGoesThroughJSONValueBothWays() throws {
        let value = Outer(
            name: "n \"q\"", inner: Inner(a: [1, 2], b: nil), list: [Inner(a: [], b: 0.5)], grid: [[1, 2], [3]],
            flag: true, missing: nil, map: ["k": 1.5])
        let tree = try JSONValue(encoding: value)
        #expect(try tree.decode(Outer.self) == value)
        // Same tree as Foundation's encoder produces.
        let viaFoundation = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(value))
        #expect(tree == viaFoundation)
        #expect(try JSONValue.decode(Outer.self, from: tree.compactText) == value)
    }

    @Test func decodingErrorsNameThePath() {
        let bad: JSONValue = ["name": "x", "inner": ["a": [1, 2.5]], "list": [], "grid": [], "flag": true, "map": [:]]
        do {
            _ = try bad.decode(Outer.self)
            Issue.record("2.5 was accepted as an Int")
        } catch DecodingError.typeMismatch(_, let ctx) {
            #expect(ctx.codingPath.map(\.stringValue) == ["inner", "a", "1"])
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test func nonFiniteNumbersBecomeNull() throws {
        struct N: Codable { var x: Double }
        #expect(try JSONValue(encoding: N(x: .nan))["x"] == .null)
        #expect(JSONValue.number(.infinity).compactText == "null")
    }
}
