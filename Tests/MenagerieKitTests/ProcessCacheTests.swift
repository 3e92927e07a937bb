import Foundation
import MenagerieKit
import Testing

@Suite struct ProcessCacheTests {
    @Test func buildsOncePerKeyAndAgainWhenTheFileChanges() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("process-cache-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/weights.bin"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: file))
        let cache = ProcessCache<Int>()
        var builds = 0
        let build = { () throws -> Int in
            builds += 1
            return builds
        }
        #expect(try cache.value("a", stamp: file, build: build) == 1)
        #expect(try cache.value("a", stamp: file, build: build) == 1)
        #expect(try cache.value("b", stamp: file, build: build) == 2)
        // New weights of another size in the same place: the entry is rebuilt.
        try Data([1, 2, 3, 4]).write(to: URL(fileURLWithPath: file))
        #expect(try cache.value("a", stamp: file, build: build) == 3)
        #expect(try cache.value("a", stamp: file, build: build) == 3)
        // A failed build stores nothing.
        struct Failure: Error {}
        #expect(throws: Failure.self) { try cache.value("c") { throw Failure() } }
        #expect(cache.cached("c") == nil)
        cache.store("c", 7)
        #expect(cache.cached("c") == 7)
        #expect(fileIdentity(dir + "/absent") == "missing")
    }
}
