#!/usr/bin/env bash
# docs_check.sh REPO BIN_DIR: the docs still agree with the tree and the binaries.
#  1. Every file or folder README.md and docs/*.md name in backticks exists: a path from the
#     repository's root, or a tail of one (`engine/dot_int8.h` is models/engine/dot_int8.h), with or
#     without its extension. Placeholders (`STATE/...`, `x/`), build outputs (`build*/`) and absolute
#     paths of an installed system are not files of the repository and are left alone.
#  2. Every command line of their code blocks that runs fedcal-model, fedcal-coordinator or fedcal-agent
#     names a real (sub)command, and each --option on it is one that command's --help lists.
# Prints each mismatch with its file and line; exits 1 if there is one.
set -euo pipefail
repo=$(realpath "$1")
bin=$(realpath "$2")
cd "$repo"
docs=(README.md docs/*.md)
failures=0 paths=0 commands=0
fail() {
  echo "$1"
  failures=$((failures + 1))
}

# Every path of the repository, once, for the tail matches.
mapfile -t tree < <(git ls-files 2>/dev/null || find . -path ./build\* -prune -o -print | sed 's|^\./||')
exists_in_tree() {
  local path=${1%/}
  [[ -e $path ]] && return 0
  compgen -G "$path.*" >/dev/null && return 0
  local entry
  for entry in "${tree[@]}"; do
    case "/$entry" in
      */"$path" | */"$path".* | */"$path"/*) return 0 ;;
    esac
  done
  return 1
}

# 1. Paths.
while IFS=: read -r file line token; do
  path=${token//\`/}
  first=${path%%/*}
  [[ $path == /* || $path == build* || $path == *'*'* ]] && continue
  [[ $first =~ ^[A-Z_]+$ || $first =~ ^[a-z]$ ]] && continue  # STATE/, BUILD/, x/: placeholders
  # A name with a slash that is no path (`attn_q/k/v`): no extension, no trailing slash, and no
  # top-level folder of the repository as its first part.
  if [[ $path != */ && ${path##*/} != *.* && ! -d $first ]]; then continue; fi
  paths=$((paths + 1))
  exists_in_tree "$path" || fail "$file:$line: \`$path\` names no file or folder of the repository"
done < <(grep -noE '`[A-Za-z0-9_.][A-Za-z0-9_./-]*/[A-Za-z0-9_./-]*`' "${docs[@]}")

# 2. Command lines in code blocks (indented by four spaces, or inside ``` fences; a line ending in a
#    backslash joined with the next).
for file in "${docs[@]}"; do
  while IFS=$'\t' read -r line text; do
    # A command line that starts with fedcal-model / fedcal-coordinator / fedcal-agent (a folder, sudo
    # or variables before it): from there to the end of the line, a comment or a pipe.
    [[ $text =~ ^[[:space:]]*((sudo|[A-Z_]+=[^[:space:]]*)[[:space:]]+)*([^[:space:]]*/)?(fedcal-model|fedcal-coordinator|fedcal-agent)([[:space:]].*)?$ ]] ||
      continue
    program=${BASH_REMATCH[4]}
    rest=${BASH_REMATCH[5]%%#*}
    rest=${rest%%|*}
    rest=${rest%%&&*}
    read -ra words <<<"$rest"
    # The subcommand: the leading words that are plain names.
    command=()
    for word in "${words[@]}"; do
      [[ $word =~ ^[a-z][a-z0-9-]*$ ]] || break
      command+=("$word")
    done
    [[ ${#command[@]} -gt 0 ]] || continue
    # Nested commands (fedcal-coordinator round start): the longest prefix whose --help is its own
    # (CLI11 answers an unknown name with the parent's help, whose usage line does not name it).
    help=""
    while [[ ${#command[@]} -gt 0 ]]; do
      if help=$("$bin/$program" "${command[@]}" --help 2>&1) &&
        grep -qE "^Usage: .*$program ${command[*]}( |$)" <<<"$help"; then
        break
      fi
      help=""
      unset 'command[-1]'
    done
    commands=$((commands + 1))
    if [[ -z $help ]]; then
      fail "$file:$line: '$program ${words[0]}' is not a command of $program"
      continue
    fi
    for word in "${words[@]}"; do
      [[ $word =~ ^\[?(--[a-z][a-z0-9-]*) ]] || continue
      option=${BASH_REMATCH[1]}
      grep -qE -- "(^|[^a-z0-9-])$option([^a-z0-9-]|$)" <<<"$help" ||
        fail "$file:$line: '$program ${command[*]}' has no option $option (its --help does not list it)"
    done
  done < <(awk '/^```/ { fenced = !fenced; next }
                fenced || /^    / {                   # a line ending in \ goes on in the next one
                  if (pending == "") start = FNR
                  text = pending $0
                  if (text ~ /\\$/) { pending = substr(text, 1, length(text) - 1) " "; next }
                  pending = ""
                  print start "\t" text
                }' "$file")
done

if [[ $failures -gt 0 ]]; then
  echo "docs_check: $failures mismatch(es) between the docs and the tree or the binaries ($paths paths, $commands command lines)"
  exit 1
fi
echo "docs_check: all $paths paths and $commands command lines of README.md and docs/*.md resolve"
