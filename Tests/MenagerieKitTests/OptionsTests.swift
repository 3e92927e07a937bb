import Foundation
import MenagerieKit
import Testing

struct SampleOptions: ComponentOptions {
    var count = 3
    var ratio: Double = 1
    var label = "a"
    var ranks = [1, 2, 3]
    var weights: [Float] = [0.5]
    var target: Int? = nil
    var enabled = false
    static let help = ["count": "how many"]
    static let choices = ["label": ["a", "b"]]
}

@Suite struct OptionsTests {
    let schema = OptionSchema(SampleOptions.schema)

    @Test func schemaComesFromTheDefaults() {
        #expect(schema.types(of: "count") == ["integer"])
        #expect(schema.types(of: "ratio") == ["number"]) // a Double default of 1 is still a number
        #expect(schema.types(of: "label") == ["string"])
        #expect(schema.types(of: "target") == ["integer", "null"])
        #expect(schema.types(of: "enabled") == ["boolean"])
        #expect(schema.properties["ranks"]?["items"]?["type"] == "integer")
        #expect(schema.properties["weights"]?["items"]?["type"] == "number")
        #expect(schema.properties["count"]?["default"] == 3)
        #expect(schema.properties["count"]?["description"] == "how many")
        #expect(schema.properties["label"]?["enum"] == ["a", "b"])
        #expect(SampleOptions.schema["additionalProperties"] == false)
    }

    @Test func setTextIsParsedByType() throws {
        #expect(try schema.parse("7", for: "count", component: "c") == 7)
        #expect(try schema.parse("0.25", for: "ratio", component: "c") == 0.25)
        #expect(try schema.parse("3", for: "ratio", component: "c") == 3)
        #expect(try schema.parse("null", for: "target", component: "c") == .null)
        #expect(try schema.parse("4", for: "target", component: "c") == 4)
        #expect(try schema.parse("on", for: "enabled", component: "c") == true)
        #expect(try schema.parse("[4, 5]", for: "ranks", component: "c") == [4, 5])
        #expect(try schema.parse("4,5", for: "ranks", component: "c") == [4, 5])
        #expect(try schema.parse("", for: "ranks", component: "c") == [])
        #expect(try schema.parse("0.5,1", for: "weights", component: "c") == [0.5, 1])
        #expect(throws: MenagerieError.self) { try schema.parse("2.5", for: "count", component: "c") }
        #expect(throws: MenagerieError.self) { try schema.parse("c", for: "label", component: "c") }
        #expect(throws: MenagerieError.self) { try schema.parse("1,x", for: "ranks", component: "c") }
        #expect(throws: MenagerieError.self) { try schema.parse("nan", for: "ratio", component: "c") }
    }

    @Test func unknownKeysGetSuggestions() {
        do {
            _ = try schema.validate(["cuont": 1], component: "comp")
            Issue.record("an unknown option was accepted")
        } catch let e as MenagerieError {
            #expect(e.status == .invalidArgument)
            #expect(e.message.contains("'comp' has no option 'cuont'. Did you mean 'count'?"))
        } catch { Issue.record("unexpected \(error)") }
    }

    @Test func partialJSONTakesDefaults() throws {
        let o = try SampleOptions.decode(["count": 9, "target": 2], component: "c")
        #expect(o.count == 9 && o.target == 2 && o.ratio == 1 && o.ranks == [1, 2, 3] && o.label == "a")
        #expect(throws: MenagerieError.self) { try SampleOptions.decode(["count": "nine"], component: "c") }
        #expect(throws: MenagerieError.self) { try SampleOptions.decode(["weights": [1, "x"]], component: "c") }
    }

    @Test func closestNamesRankByEditDistance() {
        #expect(closestNames(to: "evaluat", in: ["evaluate", "export", "tour"]) == ["evaluate"])
        #expect(closestNames(to: "xyz", in: ["evaluate", "describe"]).isEmpty)
        #expect(didYouMean("Metric", in: ["metric", "dataset"]) == " Did you mean 'metric'?")
    }

    @Test func jsonValueRoundTrips() throws {
        let text = #"{"a":[1,2.5,"x",true,null],"b":{"c":-3}}"#
        let v = try JSONValue.parse(text)
        #expect(try JSONValue.parse(v.compactText) == v)
        #expect(v["b"]?["c"]?.intValue == -3)
        #expect(v["a"]?.arrayValue?[1].doubleValue == 2.5)
        #expect(v["a"]?.arrayValue?[3] == true)
        #expect(throws: JSONParseError.self) { try JSONValue.parse("{\"a\": }", source: "test") }
    }
}

struct NestedArrayOptions: ComponentOptions {
    var points: [[Double]] = []
    var labels: [Int] = []
}

@Suite struct NestedArrayOptionTests {
    /// An array of arrays (sam2-tracker's `points` [[x, y], …]) takes JSON only; its elements must be arrays.
    @Test func arraysOfArraysTakeJSON() throws {
        let schema = OptionSchema(NestedArrayOptions.schema)
        #expect(schema.properties["points"]?["items"]?["type"] == "array")
        #expect(schema.properties["points"]?["items"]?["items"]?["type"] == "number")
        #expect(try schema.parse("[[1, 2.5], [3, 4]]", for: "points", component: "c") == [[1, 2.5], [3, 4]])
        #expect(try schema.parse("[]", for: "points", component: "c") == [])
        #expect(throws: MenagerieError.self) { try schema.parse("[1, 2]", for: "points", component: "c") }
        #expect(throws: MenagerieError.self) { try schema.parse("1,2", for: "points", component: "c") }
        #expect(throws: MenagerieError.self) { try schema.parse("[[NaN, 2]]", for: "points", component: "c") }
        // An integer array whose default is empty still takes integers only.
        #expect(schema.properties["labels"]?["items"]?["type"] == "integer")
        #expect(try schema.parse("1,0", for: "labels", component: "c") == [1, 0])
        #expect(throws: MenagerieError.self) { try schema.parse("[0.5]", for: "labels", component: "c") }
        let decoded = try NestedArrayOptions.decode(["points": [[1, 2], [3, 4]]], component: "c")
        #expect(decoded.points == [[1, 2], [3, 4]])
    }
}
