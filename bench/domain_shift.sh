#!/usr/bin/env bash
# What fleet data buys when the agents' text is not the public text (docs/QUANTIZATION.md, "Domain
# shift"). The coordinator's public reference text stays TinyStories, the agents hold another domain's
# text, and one real round (deploy/local-fleet.sh: coordinator and agents as processes on loopback)
# calibrates the model. The round report's rows - fleet-calibrated, public-text-calibrated and the
# calibration-free dynamic ones - are each agent's local check on its own held-out text.
#   bench/domain_shift.sh [AGENTS] [METHOD] [DOMAIN] [MODEL_DIR] [local-fleet options...]
#     (default 4 agents, mse, fortunes, models/tinystories-1.8m; per-channel weights)
# DOMAIN fortunes: fortune-cookie text from Debian's fortunes-min package (fortunes, literature,
#   riddles: one entry per line; apt-get install fortunes-min).
# DOMAIN kjv: King James Version chapters none of data/kjv/kjv-sample.txt holds, 3 verses a line
#   (apt-get install bible-kjv); for models/tinystories-kjv-1.8m, trained on TinyStories and that sample.
# DOMAIN tinystories: the in-domain reference (the agents' shards of the TinyStories training lines).
# Further options go to deploy/local-fleet.sh (e.g. --weight-bits 4, or --smooth). Prints the report as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:-4}
method=${2:-mse}
domain=${3:-fortunes}
model_dir=${4:-models/tinystories-1.8m}
shift $(($# < 4 ? $# : 4))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One fortune per line (its lines joined by spaces), the three databases shuffled with a fixed seed so
# that every agent gets a mix of them.
fortune_lines() {
  python3 - "$@" <<'PY'
import random, sys
entries = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for entry in f.read().split("\n%\n"):
            entry = " ".join(entry.split())
            if entry and entry != "%":
                entries.append(entry)
random.Random(1).shuffle(entries)
print("\n".join(entries))
PY
}
private=()
case $domain in
  fortunes)
    fortunes=/usr/share/games/fortunes
    for db in fortunes literature riddles; do
      [[ -f $fortunes/$db ]] || { echo "missing $fortunes/$db: apt-get install fortunes-min" >&2; exit 1; }
    done
    fortune_lines "$fortunes/fortunes" "$fortunes/literature" "$fortunes/riddles" > "$work/fortunes.txt"
    echo "[domain-shift] $(wc -l < "$work/fortunes.txt") fortunes over $agents agents, a quarter of each agent's held out" >&2
    private=(--private-text "$work/fortunes.txt") ;;
  kjv)
    command -v bible > /dev/null || { echo "missing the bible program: apt-get install bible-kjv" >&2; exit 1; }
    python3 data/kjv/make_sample.py --offset 3 --all --verses-per-line 3 > "$work/kjv.txt"
    echo "[domain-shift] $(wc -l < "$work/kjv.txt") lines of KJV chapters over $agents agents, a quarter of each agent's held out" >&2
    private=(--private-text "$work/kjv.txt") ;;
  tinystories) ;;
  *) echo "unknown domain $domain: fortunes, kjv or tinystories" >&2; exit 2 ;;
esac
deploy/local-fleet.sh --agents "$agents" --sequences 1000 --seq-len 128 --recipe plain --per-channel --method "$method" \
  "${private[@]}" --heldout-fraction 0.25 --model "$model_dir" --json "$@"
