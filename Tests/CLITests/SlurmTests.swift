import Foundation
import TestSupport
import Testing

/// `menagerie slurm` on a real Slurm: a one-node cluster (munged, slurmctld and slurmd from
/// Debian's slurm-wlm and munge, as root, with a slurm.conf and state in a temporary folder) runs
/// a 4-task array over 41 synthetic-tol images and the dependent merge; the merged output equals
/// an unsharded run's byte for byte. Then one task is killed midway (SIGKILL after its second
/// chunk is computed), the merge is cancelled by Slurm, and submitting the same command again
/// finishes: the killed shard continues from its committed chunk, the finished ones are kept.
@Suite(.serialized) struct SlurmTests {
    @Test(.enabled(if: SlurmCluster.unavailable == nil, Comment(rawValue: SlurmCluster.unavailable ?? "")))
    func jobArrayMergesAndResumesAfterAKilledTask() throws {
        let dir = TempDir("slurm")
        let cluster = try SlurmCluster(in: dir.path + "/cluster")
        defer { cluster.stop() }
        let cli = CLI()
        cli.extra = ["SLURM_CONF": cluster.conf]
        let export = try cli.run(
            "run", "synthetic-tol", "export", "--set", "splits=test", "--set", "test_per_species=1", "--set", "sheet_per_species=1", "--out",
            dir.path + "/tol")
        #expect(export.status == 0, "\(export.stderr)")
        let test = dir.path + "/tol/images/test"
        try FileManager.default.createDirectory(atPath: dir.path + "/imgs", withIntermediateDirectories: true)
        var i = 0
        for species in try FileManager.default.contentsOfDirectory(atPath: test).sorted() where i < 41 {
            for f in try FileManager.default.contentsOfDirectory(atPath: test + "/" + species).sorted() where f.hasSuffix(".png") && i < 41 {
                try FileManager.default.copyItem(atPath: test + "/" + species + "/" + f, toPath: dir.path + String(format: "/imgs/img_%03d.png", i))
                i += 1
            }
        }

        // 1. The array and its merge against one unsharded run.
        let full = try cli.run("run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=npy", "--out", "full", directory: dir.path)
        #expect(full.status == 0, "\(full.stderr)")
        let submit = try cli.run(
            ["slurm", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=npy", "--array", "4", "--cpus-per-task", "1", "--out", "emb"],
            directory: dir.path)
        #expect(submit.status == 0, "\(submit.stderr)")
        try cluster.waitForJobs(of: submit.stdout)
        for f in ["embeddings.npy", "files.txt"] {
            let a = FileManager.default.contents(atPath: dir.path + "/full/" + f), b = FileManager.default.contents(atPath: dir.path + "/emb/" + f)
            #expect(a != nil && a == b, "\(f): the merged array output differs from the unsharded run (\(cluster.logs(dir.path + "/emb-slurm/logs")))")
        }

        // 2. Shard 1 is killed after computing its second chunk (of 5): the array fails, the merge never runs.
        let args = [
            "slurm", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=json", "--set", "batch=2", "--chunk", "2", "--array", "4",
            "--cpus-per-task", "1", "--out", "res",
        ]
        let reference = try cli.run(
            "run", "bioclip2", "embed", "--input", "images=imgs", "--set", "output=json", "--set", "batch=2", "--out", "full-json", directory: dir.path)
        #expect(reference.status == 0, "\(reference.stderr)")
        cli.extra["MENAGERIE_FAULT_KILL"] = "1:1"
        let first = try cli.run(args, directory: dir.path)
        #expect(first.status == 0, "\(first.stderr)")
        try cluster.waitForJobs(of: first.stdout)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/res"), "the merge ran although a task was killed")
        let shard1 = dir.path + "/res-slurm/shards/00001"
        let committed = (try? FileManager.default.contentsOfDirectory(atPath: shard1 + "/.menagerie-chunks"))?.filter { $0.hasPrefix("chunk-") } ?? []
        #expect(committed.count == 1 && !FileManager.default.fileExists(atPath: shard1 + "/result.json"), "shard 1 holds \(committed)")
        for s in [0, 2, 3] {
            #expect(FileManager.default.fileExists(atPath: dir.path + String(format: "/res-slurm/shards/%05d/result.json", s)), "shard \(s) did not finish")
        }

        // 3. The same command again: shard 1 continues, the others are kept, the merge runs.
        cli.extra.removeValue(forKey: "MENAGERIE_FAULT_KILL")
        let again = try cli.run(args, directory: dir.path)
        #expect(again.status == 0, "\(again.stderr)")
        try cluster.waitForJobs(of: again.stdout)
        let merged = FileManager.default.contents(atPath: dir.path + "/res/embeddings.json")
        #expect(
            merged != nil && merged == FileManager.default.contents(atPath: dir.path + "/full-json/embeddings.json"),
            "the resumed array's output differs from the unsharded run (\(cluster.logs(dir.path + "/res-slurm/logs")))")
        let log1 = (try? String(contentsOfFile: dir.path + "/res-slurm/logs/shard-1.out", encoding: .utf8)) ?? ""
        #expect(log1.contains("1 of 5 chunk(s) already committed"), "\(log1)")
        let log0 = (try? String(contentsOfFile: dir.path + "/res-slurm/logs/shard-0.out", encoding: .utf8)) ?? ""
        #expect(log0.contains("already holds this shard's finished output"), "\(log0)")
    }
}

/// A single-node Slurm cluster in a folder, started as root and stopped (every daemon killed) by `stop`.
final class SlurmCluster: @unchecked Sendable {
    let folder: String
    let conf: String
    private var pidFiles: [String] = []

    /// Why the test cannot run here (nil when it can).
    static let unavailable: String? = {
        guard geteuid() == 0 else { return "the Slurm test starts slurmctld and slurmd, which needs root" }
        let missing = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"].filter { find($0) == nil }
        return missing.isEmpty ? nil : "Slurm is not installed (no \(missing.joined(separator: ", "))): `scripts/bootstrap --test` installs slurm-wlm and munge"
    }()

    static func find(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin"
        return path.split(separator: ":").map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init(in folder: String) throws {
        self.folder = folder
        conf = folder + "/slurm.conf"
        for sub in ["state", "spool", "log"] { try FileManager.default.createDirectory(atPath: folder + "/" + sub, withIntermediateDirectories: true) }
        var key = [UInt8](repeating: 0, count: 1024)
        for i in key.indices { key[i] = UInt8.random(in: 0...255) }
        guard FileManager.default.createFile(atPath: folder + "/munge.key", contents: Data(key), attributes: [.posixPermissions: 0o600]) else {
            throw TestSupportError("cannot write \(folder)/munge.key")
        }
        try daemon(
            "munged",
            [
                "--force", "--socket=\(folder)/munge.sock", "--key-file=\(folder)/munge.key", "--pid-file=\(folder)/munged.pid",
                "--log-file=\(folder)/log/munged.log", "--seed-file=\(folder)/munged.seed",
            ], pidFile: folder + "/munged.pid")
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        let name = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let node = name.split(separator: ".").first.map(String.init) ?? "localhost"
        let port = Int.random(in: 20_000...39_000)
        let text = """
            ClusterName=menagerie-test
            SlurmctldHost=\(node)
            SlurmctldPort=\(port)
            SlurmdPort=\(port + 1)
            AuthType=auth/munge
            AuthInfo=socket=\(folder)/munge.sock
            CredType=cred/munge
            SlurmUser=root
            SlurmdUser=root
            StateSaveLocation=\(folder)/state
            SlurmdSpoolDir=\(folder)/spool
            SlurmctldPidFile=\(folder)/slurmctld.pid
            SlurmdPidFile=\(folder)/slurmd.pid
            SlurmctldLogFile=\(folder)/log/slurmctld.log
            SlurmdLogFile=\(folder)/log/slurmd.log
            ProctrackType=proctrack/linuxproc
            TaskPlugin=task/none
            JobAcctGatherType=jobacct_gather/none
            AccountingStorageType=accounting_storage/none
            SelectType=select/cons_tres
            SelectTypeParameters=CR_Core
            MpiDefault=none
            ReturnToService=2
            SchedulerType=sched/builtin
            NodeName=\(node) CPUs=\(ProcessInfo.processInfo.activeProcessorCount) RealMemory=1000 State=UNKNOWN
            PartitionName=test Nodes=\(node) Default=YES MaxTime=INFINITE State=UP

            """
        try text.write(toFile: conf, atomically: true, encoding: .utf8)
        try daemon("slurmctld", ["-f", conf, "-i"], pidFile: folder + "/slurmctld.pid")
        try daemon("slurmd", ["-f", conf], pidFile: folder + "/slurmd.pid")
        // Up when the node is idle.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let r = try client("sinfo", ["-h", "-o", "%T"])
            if r.stdout.contains("idle") { return }
            usleep(300_000)
        }
        stop()
        throw TestSupportError("the test cluster did not come up within 60 s: \(logs(folder + "/log"))")
    }

    /// Starts a daemon that forks into the background and waits for the foreground process to
    /// exit (posix_spawn and waitpid: Foundation's Process waits on the daemon's inherited pipes
    /// or never sees the exit). Its output goes to /dev/null.
    private func daemon(_ name: String, _ args: [String], pidFile: String) throws {
        let path = SlurmCluster.find(name)!
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in [0, 1, 2] { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        let argv = ([path] + args).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
        guard rc == 0 else { throw TestSupportError("cannot start \(name): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        pidFiles.append(pidFile)
        guard status == 0 else { throw TestSupportError("\(name) did not start (wait status \(status)): \(logs(folder + "/log"))") }
    }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["SLURM_CONF"] = conf
        return env
    }

    func client(_ name: String, _ args: [String]) throws -> CommandResult { try runProcess(SlurmCluster.find(name)!, args, environment: environment) }

    /// Waits (at most 5 minutes) until the jobs `menagerie slurm` reported submitting have left the queue.
    func waitForJobs(of submitted: String) throws {
        // "submitted array job 12 (4 tasks) and merge job 13; …"
        let ids = ["array job ", "merge job "].compactMap { label -> String? in
            guard let r = submitted.range(of: label) else { return nil }
            let digits = submitted[r.upperBound...].prefix { $0.isNumber }
            return digits.isEmpty ? nil : String(digits)
        }
        guard ids.count == 2 else { throw TestSupportError("no job ids in '\(submitted)'") }
        let deadline = Date().addingTimeInterval(300)
        while Date() < deadline {
            let r = try client("squeue", ["-h", "-j", ids.joined(separator: ","), "-o", "%i %T"])
            if r.status == 0 && r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return }
            if r.status != 0 && r.stderr.contains("Invalid job id") { return } // already purged from the controller
            usleep(500_000)
        }
        throw TestSupportError("jobs \(ids) still queued after 5 minutes: \(logs(folder + "/log"))")
    }

    /// The tails of the log files in a folder, for failure messages.
    func logs(_ dir: String) -> String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir).sorted()) ?? []
        return names.map { n in
            let text = (try? String(contentsOfFile: dir + "/" + n, encoding: .utf8)) ?? ""
            return "[\(n)] " + text.split(separator: "\n").suffix(6).joined(separator: " | ")
        }.joined(separator: "\n")
    }

    func stop() {
        for file in pidFiles.reversed() {
            if let text = try? String(contentsOfFile: file, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 {
                kill(pid, SIGTERM)
                for _ in 0..<50 where kill(pid, 0) == 0 { usleep(100_000) }
                if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
            }
        }
        pidFiles = []
    }
}
