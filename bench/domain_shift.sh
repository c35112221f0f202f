#!/usr/bin/env bash
# What fleet data buys when the agents' text is not the public text (docs/QUANTIZATION.md, "Domain
# shift"). The agents hold fortune-cookie text from Debian's fortunes-min package (fortunes, literature,
# riddles: one entry per line), the coordinator's public reference text stays TinyStories, and one real
# round (deploy/local-fleet.sh: coordinator and agents as processes on loopback) calibrates the
# project's TinyStories model. The round report's rows - fleet-calibrated, public-text-calibrated and
# the calibration-free dynamic ones - are each agent's local check on its own held-out fortunes.
#   bench/domain_shift.sh [AGENTS] [METHOD]    (default 4 agents, mse; per-channel weights)
# Needs /usr/share/games/fortunes (apt-get install fortunes-min). Prints the report as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:-4}
fortunes=/usr/share/games/fortunes
for db in fortunes literature riddles; do
  [[ -f $fortunes/$db ]] || { echo "missing $fortunes/$db: apt-get install fortunes-min" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# One entry per line (its lines joined by spaces), the three databases shuffled with a fixed seed so
# that every agent gets a mix of them.
python3 - "$fortunes/fortunes" "$fortunes/literature" "$fortunes/riddles" > "$work/fortunes.txt" <<'PY'
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
echo "[domain-shift] $(wc -l < "$work/fortunes.txt") fortunes over $agents agents, a quarter of each agent's held out" >&2
method=${2:-mse}
deploy/local-fleet.sh --agents "$agents" --sequences 1000 --seq-len 128 --recipe plain --per-channel --method "$method" --private-text "$work/fortunes.txt" --heldout-fraction 0.25 --json
