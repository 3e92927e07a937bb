import ArgumentParser
import Foundation
import MenagerieHost
import MenagerieKit

struct CallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call", abstract: "Call an exported C function of a plugin through libffi.",
        discussion: """
            SIGNATURE is RET(ARG,...) with types void i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 ptr str.
            Example: menagerie call segmentation-metrics segmentation_metrics_iou 'f64(i64,i64,i64)' 8 2 4
            """)

    @Argument(help: "A plugin name, a component id, or a path to a plugin .so.")
    var plugin: String

    @Argument(help: "The exported function's name.")
    var symbol: String

    @Argument(help: "The function's signature, e.g. 'f64(f64,i32)'.")
    var signature: String

    @Argument(parsing: .allUnrecognized, help: "The arguments.")
    var arguments: [String] = []

    @OptionGroup var global: GlobalOptions

    func run() throws {
        let sig = try ForeignCall.Signature(parsing: signature)
        let path: String
        if plugin.contains("/") {
            path =
                (plugin as NSString).standardizingPath.hasPrefix("/")
                ? (plugin as NSString).standardizingPath
                : FileManager.default.currentDirectoryPath + "/" + plugin
            if let p = Trust.problem(path: path) { throw HostError(.refused, p) }
            // An unscanned file is first opened in a child: a crash at load is reported, not suffered.
            let report = ChildProbe().probe([path])[path]
            guard report?.ok == true else { throw HostError(.failed, "\(path): \(report?.reason ?? "scan failed")") }
        } else {
            let registry = try global.registry()
            guard
                let entry = registry.entries.first(where: {
                    $0.status == .ok && ($0.metadata?.name == plugin || $0.metadata?.components.contains { $0.id == plugin } == true)
                })
            else {
                let names = registry.entries.compactMap(\.metadata?.name)
                throw HostError(.notFound, "no plugin '\(plugin)'.\(didYouMean(plugin, in: names)) Run `menagerie plugins`.")
            }
            path = entry.path
            if let lock = try global.lockFile(), !entry.builtIn {
                if let p = lock.file.problem(path: path, digest: try FileDigest.sha256(path: path), lockPath: lock.path) { throw HostError(.refused, p) }
            }
        }
        let opened: Handshake.Opened
        switch Handshake.open(path: path) {
        case .success(let o): opened = o
        case .failure(let e): throw HostError(e.kind, "\(path): \(e.message)")
        }
        guard let fn = dlsym(opened.handle, symbol) else {
            throw HostError(.notFound, "\(path) exports no function '\(symbol)' (list them with: nm -D --defined-only \(path))")
        }
        let out = try ForeignCall.call(fn, signature: sig, arguments: arguments)
        if sig.returns != .void { print(out) }
    }
}
