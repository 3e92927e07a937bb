import Foundation
import TestSupport
import Testing

/// Shell completion: the bash script `--generate-completion-script bash` prints is sourced into a
/// real bash, and a TAB is simulated the way bash calls a completion function (COMP_WORDS split at
/// '=' as COMP_WORDBREAKS does, COMP_CWORD, COMP_LINE, COMP_POINT); COMPREPLY is what bash would
/// offer. Expected candidates come from `list --json` and `info --json`, not from this file.
@Suite struct CompletionTests {
    let dir = TempDir("completion")
    let cli = CLI()

    /// The candidates bash would offer for `line` (the text up to the cursor), in a folder with a
    /// `photos/` folder and a `photo.png` file.
    func complete(_ line: String) throws -> [String] {
        let script = dir.path + "/menagerie.bash"
        if !FileManager.default.fileExists(atPath: script) {
            let r = try cli.run("--generate-completion-script", "bash")
            guard r.status == 0 else { throw TestSupportError("--generate-completion-script bash: \(r.stderr)") }
            try r.stdout.write(toFile: script, atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: dir.path + "/work/photos", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: dir.path + "/work/photo.png", contents: Data())
            _ = FileManager.default.createFile(atPath: dir.path + "/work/notes.txt", contents: Data())
        }
        let simulate = #"""
            set -f
            source "$1"
            line="$2"
            COMP_LINE="$line"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=()
            for w in $line; do
                while [[ "$w" == *=* ]]; do
                    [[ -n "${w%%=*}" ]] && COMP_WORDS+=("${w%%=*}")
                    COMP_WORDS+=("=")
                    w="${w#*=}"
                done
                [[ -n "$w" ]] && COMP_WORDS+=("$w")
            done
            [[ "$line" == *" " ]] && COMP_WORDS+=("")
            COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
            cur="${COMP_WORDS[COMP_CWORD]}"; [[ "$cur" == "=" ]] && cur=""
            COMPREPLY=()
            set +f
            _menagerie_key_value "${COMP_WORDS[0]}" "$cur" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\n' "${COMPREPLY[@]}"
            """#
        let r = try runProcess(
            "/bin/bash", ["-c", simulate, "simulate", script, TestPaths.menagerie + " " + line],
            environment: cli.environment, directory: dir.path + "/work")
        guard r.status == 0 else { throw TestSupportError("bash exited \(r.status): \(r.stderr)") }
        return r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func info(_ id: String) throws -> [String: Any] {
        let d = try cli.json("info", id, "--json") as! [String: Any]
        return d["component"] as! [String: Any]
    }

    @Test func componentsThenOperations() throws {
        let ids = (try cli.json("list", "--json") as! [[String: Any]]).compactMap { $0["id"] as? String }
        #expect(ids.count > 10)
        #expect(Set(try complete("run ")) == Set(ids))
        #expect(try complete("run bioc") == ids.filter { $0.hasPrefix("bioc") })
        #expect(Set(try complete("info ")) == Set(ids))
        let component = try info("bioclip2")
        let operations =
            (component["operations"] as! [[String: Any]]).compactMap { $0["name"] as? String } + (component["tour"] as? Bool == true ? ["tour"] : [])
        #expect(Set(try complete("run bioclip2 ")) == Set(operations))
        #expect(try complete("run bioclip2 pre") == operations.filter { $0.hasPrefix("pre") })
        // Options before the component do not hide it.
        #expect(Set(try complete("run --seed 3 bioclip2 ")) == Set(operations))
    }

    @Test func setOffersOptionKeysThenValues() throws {
        let component = try info("bioclip2")
        let properties = (component["options"] as! [String: Any])["properties"] as! [String: [String: Any]]
        #expect(Set(try complete("run bioclip2 predict --set ")) == Set(properties.keys.map { $0 + "=" }))
        let r = try complete("run bioclip2 predict --set ra")
        #expect(!r.isEmpty && r == properties.keys.filter { $0.hasPrefix("ra") }.sorted().map { $0 + "=" })
        // After `rank=`: the enum's values (bash completes the part after '=').
        let ranks = properties["rank"]?["enum"] as? [String] ?? []
        #expect(!ranks.isEmpty)
        #expect(Set(try complete("run bioclip2 predict --set rank=")) == Set(ranks))
        #expect(try complete("run bioclip2 predict --set rank=sp") == ranks.filter { $0.hasPrefix("sp") })
        // A boolean option: true/false; a free number: nothing to offer.
        if let flag = properties.first(where: { ($0.value["type"] as? String) == "boolean" })?.key {
            #expect(Set(try complete("run bioclip2 predict --set \(flag)=")) == ["true", "false"])
        }
        #expect(try complete("run bioclip2 predict --set k=").isEmpty)
        // Earlier --set pairs (split by bash at '=') do not confuse the component's position.
        #expect(Set(try complete("run bioclip2 predict --set k=2 --set rank=")) == Set(ranks))
    }

    @Test func inputOffersNamesThenFiles() throws {
        let component = try info("bioclip2")
        let predict = (component["operations"] as! [[String: Any]]).first { $0["name"] as? String == "predict" }!
        let inputs = (predict["inputs"] as! [[String: Any]]).compactMap { $0["name"] as? String }
        #expect(!inputs.isEmpty)
        #expect(Set(try complete("run bioclip2 predict --input ")) == Set(inputs.map { $0 + "=" }))
        // After NAME=: files and folders, as bash's own file completion gives them.
        #expect(Set(try complete("run bioclip2 predict --input images=pho")) == ["photos", "photo.png"])
        #expect(Set(try complete("run bioclip2 predict --input images=")) == ["photos", "photo.png", "notes.txt"])
        // --out: folders.
        #expect(try complete("run bioclip2 predict --out ph") == ["photos"])
    }

    @Test func subcommandsAndFlags() throws {
        let top = try complete("")
        for command in ["list", "info", "run", "plugins", "doctor"] { #expect(top.contains(command), "\(top)") }
        let flags = try complete("run bioclip2 predict --")
        for flag in ["--set", "--input", "--out", "--seed", "--json"] { #expect(flags.contains(flag), "\(flags)") }
    }

    /// zsh and fish scripts are generated and call back into the executable for the dynamic parts.
    @Test(arguments: ["zsh", "fish"])
    func otherShellsGetScriptsWithDynamicCompletion(_ shell: String) throws {
        let r = try cli.run("--generate-completion-script", shell)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("---completion run -- --set"), "the --set keys come from the executable")
        #expect(r.stdout.contains("---completion run -- positional@0"), "the component ids come from the executable")
    }

    /// The executable answers a completion request quickly (it reads the registry cache).
    @Test func aCompletionRequestIsFast() throws {
        _ = try cli.run("list") // the cache is written
        let start = Date()
        let r = try cli.run("---completion", "run", "--", "positional@0", "2", "0", "menagerie", "run", "")
        let seconds = Date().timeIntervalSince(start)
        #expect(r.status == 0 && r.stdout.contains("bioclip2"), "\(r.stderr)")
        #expect(seconds < 1.0, "a TAB took \(seconds) s")
    }
}
