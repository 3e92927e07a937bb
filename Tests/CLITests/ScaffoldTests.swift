import Foundation
import TestSupport
import Testing

/// `menagerie new` → build → list → run, for the Swift and the C template.
@Suite(.serialized) struct ScaffoldTests {
    func npy(_ path: String, _ python: String) throws {
        let r = try runProcess("/usr/bin/env", ["python3", "-c", "import numpy as np; np.save('\(path)', \(python))"])
        guard r.status == 0 else { throw TestSupportError("numpy failed: \(r.stderr)") }
    }

    @Test func swiftTemplateBuildsLoadsRunsAndCallsAnotherPlugin() throws {
        let dir = TempDir("scaffold-swift")
        let cli = CLI()
        let new = try cli.run("new", "my-metric", "--kind", "metric", "--dir", dir.path)
        #expect(new.status == 0, "\(new.stderr)")
        let package = dir.path + "/my-metric"
        for f in [
            "Package.swift", "Sources/MyMetric/Plugin.swift", "Sources/MyMetric/MyMetricComponent.swift",
            "Tests/MyMetricTests/MyMetricTests.swift", "Docs/my-metric.md",
        ] {
            #expect(FileManager.default.fileExists(atPath: package + "/" + f), "\(f)")
        }
        // A second component that calls the C plugin through the SDK's typed proxy.
        try """
        import MenagerieKit
        import Tensors

        struct ProxyProbe: Metric {
            static let id = "proxy-probe"
            static let summary = "calls segmentation-metrics through the host"
            static let operations = [OperationSpec("evaluate", summary: "nested evaluate")]
            func evaluate(_ request: Request<NoOptions>) throws -> Response {
                let metric = try MetricProxy(request.host, id: "segmentation-metrics")
                let mask = try Tensor([UInt8(0), 1, 1, 1], shape: [2, 2])
                let out = try metric.evaluate(inputs: [("prediction", mask), ("target", mask)])
                return Response(result: ["miou": out.result["miou"] ?? .null,
                                         "confusionShape": .array(out.tensors["confusion"]!.shape.map { .number(Double($0)) })])
            }
        }
        """.write(toFile: package + "/Sources/MyMetric/ProxyProbe.swift", atomically: true, encoding: .utf8)
        let pluginFile = package + "/Sources/MyMetric/Plugin.swift"
        let source = try String(contentsOfFile: pluginFile, encoding: .utf8)
        try source.replacingOccurrences(of: "[MyMetricComponent.self]", with: "[MyMetricComponent.self, ProxyProbe.self]")
            .write(toFile: pluginFile, atomically: true, encoding: .utf8)

        let build = try runProcess("/usr/bin/env", ["swift", "build", "--build-tests"], directory: package)
        #expect(build.status == 0, "\(build.output.suffix(3000))")
        guard build.status == 0 else { return }
        let test = try runProcess("/usr/bin/env", ["swift", "test", "--skip-build"], directory: package)
        #expect(test.status == 0, "\(test.output.suffix(2000))")

        cli.pluginPath = [package + "/.build/debug"]
        let list = try cli.run("list", "--json")
        #expect(list.stdout.contains("\"my-metric\"") && list.stdout.contains("\"proxy-probe\""), "\(list.output)")
        let p = dir.path + "/p.npy", t = dir.path + "/t.npy"
        try npy(p, "np.array([1, 2, 3], dtype=np.float32)")
        try npy(t, "np.array([1, 4, 0], dtype=np.float32)")
        let run = try cli.run("run", "my-metric", "--input", "prediction=\(p)", "--input", "target=\(t)", "--json")
        #expect(run.status == 0, "\(run.stderr)")
        let result = (try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any]
        #expect(abs((result?["mae"] as? Double ?? 0) - 5.0 / 3.0) < 1e-12)
        let proxy = try cli.run("run", "proxy-probe", "--json")
        #expect(proxy.status == 0, "\(proxy.stderr)")
        let nested = (try? JSONSerialization.jsonObject(with: Data(proxy.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any]
        #expect(nested?["miou"] as? Double == 1)
        #expect(nested?["confusionShape"] as? [Int] == [2, 2])
        let validate = try cli.run("validate", package + "/.build/debug/libMyMetric.so")
        #expect(validate.status == 0, "\(validate.output)")
    }

    @Test func cTemplateBuildsLoadsAndRuns() throws {
        let dir = TempDir("scaffold-c")
        let cli = CLI()
        let new = try cli.run("new", "my-c-stats", "--kind", "segmenter", "--lang", "c", "--dir", dir.path)
        #expect(new.status == 0, "\(new.stderr)")
        let package = dir.path + "/my-c-stats"
        let make = try runProcess("/usr/bin/make", ["-C", package, "test"])
        #expect(make.status == 0, "\(make.output)")
        let build = try runProcess("/usr/bin/make", ["-C", package])
        #expect(build.status == 0, "\(build.output)")
        #expect(make.stdout.contains("2 passed, 0 failed"))
        cli.pluginPath = [package]
        let x = dir.path + "/x.npy"
        try npy(x, "np.array([1, 2, 3, 4], dtype=np.float32)")
        let run = try cli.run("run", "my-c-stats", "--input", "x=\(x)", "--json")
        #expect(run.status == 0, "\(run.stderr)")
        let result = (try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any]
        #expect(result?["mean"] as? Double == 2.5)
        #expect(abs((result?["std"] as? Double ?? 0) - 1.25.squareRoot()) < 1e-12)
        let info = try cli.run("info", "my-c-stats")
        #expect(info.stdout.contains("(segmenter)"))
    }

    /// `make install`'s layout (scripts/install on this build), then a Swift and a C plugin
    /// scaffolded by the INSTALLED menagerie, built against the installed SDK alone, listed and run by it.
    @Test func pluginsBuildAgainstTheInstalledSDK() throws {
        let prefix = TempDir("install")
        let installer = try runProcess("/usr/bin/env", ["bash", TestPaths.sourceRoot + "/scripts/install", prefix.path, TestPaths.products])
        #expect(installer.status == 0, "\(installer.output)")
        guard installer.status == 0 else { return }
        let menagerie = prefix.path + "/bin/menagerie"
        let cli = CLI()
        var env = cli.environment
        env.removeValue(forKey: "MENAGERIE_SDK")
        env.removeValue(forKey: "MENAGERIE_TEMPLATES")
        let dir = TempDir("installed-scaffold")
        let list = try runProcess(menagerie, ["list"], environment: env)
        #expect(list.status == 0 && list.stdout.contains("segmentation-metrics"), "\(list.output)")

        // Swift: the SDK's Package.swift must name every module MenagerieKit imports (CJPEG, CZlib, Text…).
        let new = try runProcess(menagerie, ["new", "leaf-area", "--kind", "metric", "--dir", dir.path], environment: env)
        #expect(new.status == 0, "\(new.output)")
        let package = dir.path + "/leaf-area"
        let manifest = try String(contentsOfFile: package + "/Package.swift", encoding: .utf8)
        #expect(manifest.contains(prefix.path + "/share/menagerie/sdk"), "the scaffold must point at the installed SDK")
        let build = try runProcess("/usr/bin/env", ["swift", "build"], directory: package)
        #expect(build.status == 0, "\(build.output.suffix(3000))")
        guard build.status == 0 else { return }
        env["MENAGERIE_PLUGIN_PATH"] = package + "/.build/debug"
        let p = dir.path + "/p.npy", t = dir.path + "/t.npy"
        try npy(p, "np.array([1, 2, 3], dtype=np.float32)")
        try npy(t, "np.array([1, 4, 0], dtype=np.float32)")
        let run = try runProcess(menagerie, ["run", "leaf-area", "--input", "prediction=\(p)", "--input", "target=\(t)", "--json"], environment: env)
        #expect(run.status == 0, "\(run.stderr)")
        let result = (try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])?["result"] as? [String: Any]
        #expect(abs((result?["mae"] as? Double ?? 0) - 5.0 / 3.0) < 1e-12)

        // C: the header from the installed SDK alone.
        let newC = try runProcess(menagerie, ["new", "c-stats", "--kind", "segmenter", "--lang", "c", "--dir", dir.path], environment: env)
        #expect(newC.status == 0, "\(newC.output)")
        let make = try runProcess("/usr/bin/make", ["-C", dir.path + "/c-stats"])
        #expect(make.status == 0, "\(make.output)")
        env["MENAGERIE_PLUGIN_PATH"] = dir.path + "/c-stats"
        let x = dir.path + "/x.npy"
        try npy(x, "np.array([1, 2, 3, 4], dtype=np.float32)")
        let runC = try runProcess(menagerie, ["run", "c-stats", "--input", "x=\(x)", "--json"], environment: env)
        #expect(runC.status == 0, "\(runC.stderr)")
        #expect(runC.stdout.contains("\"mean\" : 2.5") || runC.stdout.contains("\"mean\": 2.5"), "\(runC.stdout)")
    }
}
