import Foundation
import FuzzTargets
import TestSupport
import Testing

/// The committed fuzz corpora (Fuzz/Corpus/<target>/: seeds and every crash reproducer found so far)
/// run through the parsers once, without libFuzzer: a reproducer that traps again fails `make test`.
@Suite struct FuzzReplayTests {
    static let corpus = TestPaths.sourceRoot + "/Fuzz/Corpus"

    @Test(arguments: FuzzTargets.names)
    func replay(_ target: String) throws {
        let dir = Self.corpus + "/" + target
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".") }.sorted()
        #expect(!files.isEmpty, "no corpus for \(target) in \(dir)")
        for name in files {
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
            #expect(FuzzTargets.run(target, data), "\(target)/\(name)")
        }
    }

    @Test func everyCorpusFolderIsATarget() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).filter { !$0.hasPrefix(".") }.sorted()
        #expect(folders == FuzzTargets.names.sorted())
    }
}
