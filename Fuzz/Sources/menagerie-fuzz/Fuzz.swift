import CFuzzer
import Foundation
import FuzzTargets

/// The target named by MENAGERIE_FUZZ_TARGET (one of FuzzTargets.names); read once.
let target: String = {
    let name = ProcessInfo.processInfo.environment["MENAGERIE_FUZZ_TARGET"] ?? ""
    guard FuzzTargets.names.contains(name) else {
        FileHandle.standardError.write(Data("menagerie-fuzz: set MENAGERIE_FUZZ_TARGET to one of \(FuzzTargets.names.joined(separator: ", "))\n".utf8))
        exit(2)
    }
    return name
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = bytes.map { Data(bytes: $0, count: count) } ?? Data()
    FuzzTargets.run(target, data)
    return 0
}

/// main(): SwiftPM links an executable's main to `<module>_main` on Linux; this one hands the
/// command line (libFuzzer's flags, corpus folders or files to replay) to libFuzzer's driver.
@_cdecl("menagerie_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    _ = target
    FuzzTargets.configureLimits()
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { bytes, count in fuzzOneInput(bytes, count) }
}
