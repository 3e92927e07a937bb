import Foundation
import MenagerieKit
import Testing

struct RangedOptions: ComponentOptions {
    var patch = 8
    var rate = 0.5
    var sizes = [1, 2]
    var free = 3
    static let ranges: [String: ClosedRange<Double>] = ["patch": 1...4096, "rate": 0...1, "sizes": 1...100]
}

/// Issue 19: option numbers are checked centrally (host and SDK both validate through
/// OptionSchema): integers beyond ±2^53, fractions, NaN/inf, and the declared minimum/maximum.
@Suite struct OptionLimitsTests {
    let schema = OptionSchema(RangedOptions.schema)

    func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            return ""
        } catch { return String(describing: error) }
    }

    @Test func rangesBecomeMinimumAndMaximum() {
        #expect(schema.properties["patch"]?["minimum"] == 1)
        #expect(schema.properties["patch"]?["maximum"] == 4096)
        #expect(schema.properties["rate"]?["maximum"] == 1)
        #expect(schema.properties["free"]?["minimum"] == nil)
    }

    @Test(arguments: [
        ("patch", JSONValue.number(1e300), "option 'patch' of 'comp' = 1e+300 is beyond the integer range"),
        ("free", JSONValue.number(1e19), "option 'free' of 'comp' = 1e+19 is beyond the integer range"),
        ("free", JSONValue.number(-1e300), "option 'free' of 'comp' = -1e+300 is beyond the integer range"),
        ("free", JSONValue.number(3.5), "option 'free' of 'comp' must be integer, got number 3.5"),
        ("rate", JSONValue.number(.nan), "option 'rate' of 'comp' must be a finite number, got nan"),
        ("rate", JSONValue.number(.infinity), "option 'rate' of 'comp' must be a finite number, got inf"),
        ("patch", JSONValue.number(0), "option 'patch' of 'comp' = 0 is out of range: it must be ≥ 1 and ≤ 4096"),
        ("patch", JSONValue.number(-8), "option 'patch' of 'comp' = -8 is out of range"),
        ("rate", JSONValue.number(1.5), "option 'rate' of 'comp' = 1.5 is out of range: it must be ≥ 0 and ≤ 1"),
        ("sizes", JSONValue.array([5, 0]), "option 'sizes[1]' of 'comp' = 0 is out of range"),
    ])
    func badNumbersAreUsageErrorsNamingTheOption(_ key: String, _ value: JSONValue, _ expected: String) {
        let m = message { _ = try schema.validate([key: value], component: "comp") }
        #expect(m.contains(expected), "\(m)")
        // The SDK's decode goes through the same check (a plugin never sees the value).
        let d = message { _ = try RangedOptions.decode(.object([key: value]), component: "comp") }
        #expect(d.contains(expected), "\(d)")
    }

    @Test(arguments: ["1e300", "3.5", "nan", "99999999999999999999", "0", "-8"])
    func setTextOutsideTheIntegerRangeIsRefused(_ text: String) {
        let m = message { _ = try schema.parse(text, for: "patch", component: "comp") }
        #expect(m.contains("option 'patch' of 'comp'"), "\(m)")
    }

    @Test func valuesInRangeAreAccepted() throws {
        let o = try RangedOptions.decode(["patch": 16, "rate": 1, "sizes": [1, 100], "free": -7], component: "comp")
        #expect(o.patch == 16 && o.rate == 1 && o.sizes == [1, 100] && o.free == -7)
        #expect(try schema.parse("4096", for: "patch", component: "comp") == 4096)
    }
}

/// Issue 19: a JSON number beyond the range of a double parsed to ±inf and flowed into configs,
/// options and responses; the reader refuses it, naming the number.
@Suite struct JSONNumberLimitsTests {
    @Test(arguments: ["1e999", "-1e999", "[1, 2e400]"])
    func infiniteNumbersAreRefused(_ text: String) {
        do {
            _ = try JSONValue.parse(text, source: "t.json")
            Issue.record("\(text) was accepted")
        } catch {
            #expect(String(describing: error).contains("out of the range of a double"), "\(error)")
        }
    }

    @Test func theLargestDoubleStillParses() throws {
        #expect(try JSONValue.parse("1.7976931348623157e308") == .number(.greatestFiniteMagnitude))
        #expect(try JSONValue.parse("1e-400") == .number(0))
    }

    /// Through --config: an option file with 1e999 is a usage error, not an infinite option.
    @Test func optionFileWithAnInfiniteNumber() throws {
        let text = #"{"max_proposals": 1e999}"#
        #expect(throws: (any Error).self) { _ = try JSONValue.parse(text, source: "--config c.json") }
    }
}
