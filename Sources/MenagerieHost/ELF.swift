import Foundation

/// Checks an ELF header before `dlopen`, so that a wrong file gets a clear message rather than
/// dlerror's (which, for another architecture, misleadingly says "cannot open shared object file").
public enum ELFCheck {
    #if arch(x86_64)
        static let hostMachine: UInt16 = 62
        static let hostArch = "x86-64"
    #elseif arch(arm64)
        static let hostMachine: UInt16 = 183
        static let hostArch = "AArch64"
    #else
        static let hostMachine: UInt16 = 0
        static let hostArch = "this architecture"
    #endif

    static let machines: [UInt16: String] = [
        3: "x86 (32-bit)", 40: "ARM (32-bit)", 62: "x86-64", 183: "AArch64",
        243: "RISC-V", 8: "MIPS", 21: "PowerPC64",
    ]

    /// Returns nil when the file is a loadable shared object for this machine, else the reason.
    public static func problem(path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "cannot open the file for reading" }
        defer { try? handle.close() }
        let header = [UInt8]((try? handle.read(upToCount: 64)) ?? Data())
        guard header.count >= 20 else { return "not a shared library: the file is only \(header.count) bytes (an ELF header has 64)" }
        guard header[0] == 0x7F, header[1] == 0x45, header[2] == 0x4C, header[3] == 0x46 else {
            if header.prefix(16).allSatisfy({ $0 == 9 || $0 == 10 || $0 == 13 || (32..<127).contains($0) }) {
                return "not a shared library: this is a text file, not an ELF binary"
            }
            return "not a shared library: no ELF magic number at the start of the file"
        }
        guard header[4] == 2 else {
            return header[4] == 1
                ? "a 32-bit ELF (ELFCLASS32): rebuild the plugin as a 64-bit \(hostArch) shared library"
                : "unknown ELF class \(header[4])"
        }
        guard header[5] == 1 else { return "a big-endian ELF: rebuild the plugin for little-endian \(hostArch)" }
        let type = UInt16(header[16]) | UInt16(header[17]) << 8
        guard type == 3 else {
            let name = [1: "a relocatable object (.o)", 2: "an executable", 4: "a core dump"][Int(type)] ?? "ELF type \(type)"
            return "\(name), not a shared library: link it with -shared (SwiftPM: .library(type: .dynamic))"
        }
        let machine = UInt16(header[18]) | UInt16(header[19]) << 8
        guard hostMachine == 0 || machine == hostMachine else {
            return "built for \(machines[machine] ?? "machine \(machine)"), but this host is \(hostArch): rebuild the plugin here"
        }
        return nil
    }
}
