import CMenagerie

/// The Swift toolchain this image was compiled with, as "swift-MAJOR.MINOR[.PATCH]".
///
/// Host and plugins each compile this file into their own image, so equal strings mean the same
/// compiler version. Swift plugins share the toolchain's one dynamic runtime with the host, and a
/// plugin built by another toolchain is refused with both versions named. The string comes from
/// `#if compiler(...)` checks, newest first; extend the list when a new toolchain ships.
public let swiftToolchain: String = {
    #if compiler(>=6.5)
        return "swift-6.5-or-later"
    #elseif compiler(>=6.4)
        return "swift-6.4"
    #elseif compiler(>=6.3.2)
        return "swift-6.3.2"
    #elseif compiler(>=6.3.1)
        return "swift-6.3.1"
    #elseif compiler(>=6.3)
        return "swift-6.3"
    #elseif compiler(>=6.2)
        return "swift-6.2"
    #elseif compiler(>=6.1)
        return "swift-6.1"
    #else
        return "swift-6.0"
    #endif
}()

/// The ABI version this SDK implements (from menagerie.h).
public let abiVersion = (major: UInt32(MENAGERIE_ABI_MAJOR), minor: UInt32(MENAGERIE_ABI_MINOR))
