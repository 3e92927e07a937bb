import Foundation
import TestSupport
import Testing

/// `menagerie run`: options typed by the schema, inputs, outputs, composition, cancellation.
@Suite struct RunTests {
    let dir = TempDir("run")
    let cli: CLI

    init() throws {
        try buildCPlugin(named: "libtestprobe.so", in: dir.sub("plugins"))
        cli = CLI(pluginPath: [dir.path + "/plugins"])
    }

    func npy(_ name: String, _ python: String) throws -> String {
        let path = dir.path + "/" + name
        let r = try runProcess("/usr/bin/env", ["python3", "-c", "import numpy as np; np.save('\(path)', \(python))"])
        guard r.status == 0 else { throw TestSupportError("numpy failed: \(r.stderr)") }
        return path
    }

    func echo(_ extra: [String]) throws -> (CommandResult, [String: Any]?) {
        let r = try cli.run(["run", "test-probe", "echo", "--json"] + extra)
        let json = r.status == 0 ? try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] : nil
        return (r, json)
    }

    @Test func setValuesAreTypedByTheSchema() throws {
        let (r, manifest) = try echo(["--set", "count=5", "--set", "ratio=0.25", "--set", "name=y", "--set", "flag=yes", "--set", "sizes=3,4"])
        #expect(r.status == 0, "\(r.stderr)")
        let sent = (manifest?["result"] as? [String: Any])?["options"] as? [String: Any]
        #expect(sent?["count"] as? Int == 5)
        #expect(sent?["ratio"] as? Double == 0.25)
        #expect(sent?["name"] as? String == "y")
        #expect(sent?["flag"] as? Bool == true)
        #expect(sent?["sizes"] as? [Int] == [3, 4])
        // result.json records the effective options: defaults plus what was set.
        let effective = manifest?["options"] as? [String: Any]
        #expect(effective?["count"] as? Int == 5)
        #expect(effective?["ratio"] as? Double == 0.25)
    }

    @Test func badOptionsAreRefusedBeforeAnyWork() throws {
        for (set, message) in [
            ("count=1.5", "option 'count' of 'test-probe' must be integer"),
            ("name=z", "must be one of \"x\", \"y\""),
            ("cuont=3", "Did you mean 'count'?"),
            ("sizes=a,b", "option 'sizes' of 'test-probe' must be array"),
            ("novalue", "must be KEY=VALUE"),
        ] {
            let r = try cli.run("run", "test-probe", "echo", "--set", set, "--out", dir.path + "/never")
            #expect(r.status == 2, "\(set)")
            #expect(r.stderr.contains(message), "\(set): \(r.stderr)")
        }
    }

    @Test func configFileThenSetOverrides() throws {
        let config = dir.path + "/config.json"
        try #"{"count": 9, "ratio": 0.75}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let (r, manifest) = try echo(["--config", config, "--set", "count=2"])
        #expect(r.status == 0, "\(r.stderr)")
        let sent = (manifest?["result"] as? [String: Any])?["options"] as? [String: Any]
        #expect(sent?["count"] as? Int == 2)
        #expect(sent?["ratio"] as? Double == 0.75)
        try "{not json".write(toFile: config, atomically: true, encoding: .utf8)
        let bad = try cli.run("run", "test-probe", "echo", "--config", config)
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("--config \(config) is not valid JSON"))
    }

    @Test func seedReachesThePlugin() throws {
        let (_, manifest) = try echo(["--seed", "42"])
        #expect((manifest?["result"] as? [String: Any])?["seed"] as? Int == 42)
    }

    @Test func tensorsCrossTheABIBothWays() throws {
        let x = try npy("x.npy", "np.arange(6, dtype=np.float32).reshape(2, 3) / 7")
        let m = try npy("m.npy", "np.array([[1, 2], [3, 255]], dtype=np.uint8)")
        let out = dir.path + "/echo-out"
        let r = try cli.run("run", "test-probe", "echo", "--input", "a=\(x)", "--input", "b=\(m)", "--out", out)
        #expect(r.status == 0, "\(r.stderr)")
        // The plugin copied what it borrowed; the host wrote it back as .npy: the bytes must match.
        let check = try runProcess(
            "/usr/bin/env",
            [
                "python3", "-c",
                """
                import numpy as np
                a, b = np.load('\(out)/a.npy'), np.load('\(out)/b.npy')
                assert a.dtype == np.float32 and a.shape == (2, 3) and (a == np.load('\(x)')).all()
                assert b.dtype == np.uint8 and (b == np.load('\(m)')).all()
                """,
            ])
        #expect(check.status == 0, "\(check.stderr)")
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/result.json"))) as! [String: Any]
        let files = (manifest["artifacts"] as! [[String: Any]]).map { $0["file"] as! String }
        #expect(Set(files) == ["a.npy", "b.npy"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).sorted() == ["a.npy", "b.npy", "result.json"])
    }

    @Test func missingInputsAndUnwritableOutAreRefused() throws {
        let r1 = try cli.run("run", "segmentation-metrics", "--input", "prediction=/nonexistent.npy", "--input", "target=/nonexistent.npy")
        #expect(r1.status == 2)
        #expect(r1.stderr.contains("input 'prediction': /nonexistent.npy does not exist"))
        let file = dir.path + "/a-file"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        let r2 = try cli.run("run", "test-probe", "echo", "--out", file)
        #expect(r2.status == 2)
        #expect(r2.stderr.contains("exists and is not a folder"))
        let r3 = try cli.run("run", "segmentation-metrics", "--input", "predicton=\(file)")
        #expect(r3.status == 2)
        #expect(r3.stderr.contains("Did you mean 'prediction'?"))
        let txt = dir.path + "/x.txt"
        try "1 2 3".write(toFile: txt, atomically: true, encoding: .utf8)
        let r4 = try cli.run("run", "test-probe", "echo", "--input", "a=\(txt)")
        #expect(r4.status == 2)
        #expect(r4.stderr.contains("unsupported extension '.txt'"))
    }

    @Test func aFailingPluginExitsOneWithItsMessageAndWritesNothing() throws {
        let out = dir.path + "/fail-out"
        let r = try cli.run("run", "test-probe", "fail", "--out", out)
        #expect(r.status == 1)
        #expect(r.stderr.contains("asked to fail (this message must reach the user)"))
        #expect(!FileManager.default.fileExists(atPath: out)) // created only when a run commits
    }

    @Test func aPluginCallsAnotherThroughTheHost() throws {
        let r = try cli.run("run", "test-probe", "nested", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let manifest = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let nested = ((manifest["result"] as! [String: Any])["nested"] as! [String: Any])
        // prediction [0 1; 1 1] vs target [0 1; 0 1]: IoU class 0 = 1/2, class 1 = 2/3.
        let iou = nested["iou"] as! [Double]
        #expect(abs(iou[0] - 0.5) < 1e-12 && abs(iou[1] - 2.0 / 3.0) < 1e-12)
        #expect(abs((nested["miou"] as! Double) - 7.0 / 12.0) < 1e-12)
    }

    @Test func ctrlCCancelsAndLeavesNoOutput() throws {
        let out = dir.path + "/cancel-out"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestPaths.menagerie)
        process.arguments = ["run", "test-probe", "progress", "--out", out]
        var env = cli.environment
        env["MENAGERIE_LOG_LEVEL"] = "info" // the plugin logs "a step" per step
        process.environment = env
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        // Read stderr in the background; interrupt once the plugin is demonstrably running.
        let lock = NSLock()
        nonisolated(unsafe) var text = ""
        let reader = DispatchGroup()
        reader.enter()
        DispatchQueue.global().async {
            let fd = err.fileHandleForReading.fileDescriptor
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n > 0 {
                    lock.lock()
                    text += String(decoding: buffer[0..<n], as: UTF8.self)
                    lock.unlock()
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            reader.leave()
        }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            lock.lock()
            let started = text.contains("a step")
            lock.unlock()
            if started { break }
            usleep(10_000)
        }
        kill(process.processIdentifier, SIGINT)
        reader.wait()
        process.waitUntilExit()
        lock.lock()
        let stderr = text
        lock.unlock()
        #expect(process.terminationStatus == 1, "\(stderr)")
        #expect(stderr.contains("cancel"))
        #expect(!FileManager.default.fileExists(atPath: out + "/result.json"))
        #expect((try? FileManager.default.contentsOfDirectory(atPath: out))?.isEmpty ?? true)
    }

    @Test func progressRunsToTheEndWhenNotInterrupted() throws {
        let manifest = try cli.json("run", "test-probe", "progress", "--json") as! [String: Any]
        #expect((manifest["result"] as! [String: Any])["done"] as? Int == 50)
    }

    /// stderr is a pipe here: progress comes as plain lines at the chosen interval (50 steps of
    /// 20 ms with a 0.2 s interval: a handful of lines, never one per step), and not at all when off.
    @Test func progressIsPlainLinesWhenStderrIsNotATerminal() throws {
        let lines = CLI(pluginPath: cli.pluginPath)
        lines.extra["MENAGERIE_PROGRESS_INTERVAL"] = "0.2"
        let r = try lines.run("run", "test-probe", "progress")
        #expect(r.status == 0, "\(r.stderr)")
        let reported = r.stderr.split(separator: "\n").filter { $0.hasPrefix("[test-probe] step ") && $0.contains("%") && $0.contains("/50)") }
        #expect((1...10).contains(reported.count), "\(r.stderr)")
        #expect(!r.stderr.contains("\u{1B}["), "no terminal escapes in a log")
        let off = CLI(pluginPath: cli.pluginPath)
        off.extra = ["MENAGERIE_PROGRESS_INTERVAL": "0.2", "MENAGERIE_PROGRESS": "off"]
        #expect(try !off.run("run", "test-probe", "progress").stderr.contains("[test-probe]"))
    }
}
