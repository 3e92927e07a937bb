import ArgumentParser

/// The bash completion script: ArgumentParser's, registered behind a wrapper that knows what
/// bash's word splitting does to `KEY=VALUE` options. Bash breaks `--set rank=sp` into `--set`,
/// `rank`, `=`, `sp` (`=` is in COMP_WORDBREAKS), so ArgumentParser's script would see neither the
/// option nor the key; the wrapper
/// - after `--input NAME=`, completes file and folder names (bash's own: folders get their `/`);
/// - after `--set KEY=`, asks the executable for the key's values and offers them;
/// - after `--set`/`--input` alone, keeps the cursor right after a `key=` candidate (no space).
enum BashCompletion {
    static func script() -> String {
        let base = Menagerie.completionScript(for: .bash)
        let registration = "complete -o filenames -F _menagerie menagerie"
        let body = base.replacingOccurrences(of: registration, with: "")
        return body + wrapper + "\ncomplete -o filenames -F _menagerie_key_value menagerie\n"
    }

    static let wrapper = #"""
        # KEY=VALUE options (see `menagerie --generate-completion-script bash`'s source: BashCompletion.swift).
        _menagerie_key_value() {
            local -i cw="${COMP_CWORD}"
            local option='' key='' value=''
            if [[ "${COMP_WORDS[cw]}" == '=' ]] && ((cw >= 2)); then
                option="${COMP_WORDS[cw-2]}" key="${COMP_WORDS[cw-1]}" value=''
            elif ((cw >= 3)) && [[ "${COMP_WORDS[cw-1]}" == '=' ]]; then
                option="${COMP_WORDS[cw-3]}" key="${COMP_WORDS[cw-2]}" value="${COMP_WORDS[cw]}"
            fi
            case "${option}" in
            --input)
                COMPREPLY=()
                local entry
                while IFS='' read -r entry; do
                    COMPREPLY+=("${entry}")
                done < <(compgen -f -- "${value}")
                compopt -o filenames 2>/dev/null
                return 0
                ;;
            --set)
                # The executable's candidates for the whole word, KEY= stripped (bash completes after '=').
                local -i start=$((cw - 1))
                [[ "${COMP_WORDS[cw]}" == '=' ]] || start=$((cw - 2))
                local -a words=("${COMP_WORDS[@]::start}" "${key}=${value}")
                COMPREPLY=()
                local candidate
                while IFS='' read -r candidate; do
                    [[ -n "${candidate}" ]] && COMPREPLY+=("${candidate#"${key}="}")
                done < <("${COMP_WORDS[0]}" ---completion run -- --set "${start}" "$(( ${#key} + 1 + ${#value} ))" "${words[@]}" 2>/dev/null)
                compopt +o filenames 2>/dev/null
                return 0
                ;;
            esac
            _menagerie "$@"
            # A lone `key=` candidate: leave the cursor after '=' for the value.
            if [[ ${#COMPREPLY[@]} -gt 0 ]]; then
                local c all_keys=true
                for c in "${COMPREPLY[@]}"; do [[ "${c}" == *= ]] || all_keys=false; done
                # (and not as a file name, which bash would write as `rank\=`)
                "${all_keys}" && compopt -o nospace +o filenames 2>/dev/null
            fi
            return 0
        }
        """#
}

/// The zsh completion script: ArgumentParser's, with one change. zsh puts a space after every
/// candidate; after `--set rank=` or `--input images=` the value follows without one, so when
/// every candidate ends in `=` (or is a folder, `photos/`) none is added.
enum ZshCompletion {
    static let original = #"""
            _describe -V '' non_empty_completions -- empty_completions -P $'\'\''
        """#
    static let patched = #"""
            if [[ ${#non_empty_completions[@]} -gt 0 && -z "${(M)non_empty_completions:#*[^=/]}" ]]; then
                # KEY= and folders: no space after them (CompletionScripts.swift).
                _describe -V '' non_empty_completions -S '' -- empty_completions -P $'\'\''
            else
                _describe -V '' non_empty_completions -- empty_completions -P $'\'\''
            fi
        """#

    /// nil when ArgumentParser's script no longer has the line to patch (then it is printed as is).
    static func script() -> String? {
        let base = Menagerie.completionScript(for: .zsh)
        guard base.contains(original) else { return nil }
        return base.replacingOccurrences(of: original, with: patched)
    }
}
