#!/usr/bin/env bash
# A local fleet in one command: a coordinator and N agents on loopback, each agent with its own shard
# of the TinyStories training split as private text; imports the project's model, runs one federated
# calibration round and prints its report.
#
#   deploy/local-fleet.sh [--agents N] [--sequences S] [--seq-len L] [--runtime R] [--recipe recommended|plain]
#                         [--method M] [--per-channel|--per-tensor] [--smooth|--no-smooth] [--target-kl T|none]
#                         [--fallback fp32|fine-grained|5-bit] [--weight-bits 8|5|4] [--dp-epsilon E] [--private-text FILE]
#                         [--heldout-fraction F] [--keep DIR] [--json] [--model DIR]
#
# --model: a folder with model.bin and tokenizer.bin (default models/tinystories-1.8m). The recipe
# options go to `round start`: with none, the round uses the recipe measured best for --runtime
# (default engine: smoothing, mse per-channel, sensitive layers fine-grained; docs/QUANTIZATION.md),
# and the report is the smoothing round's follow-up's.
# --private-text deals FILE's lines (one sequence each) to the agents instead of the TinyStories
# training lines; the public reference text stays TinyStories (bench/domain_shift.sh uses it).
# --heldout-fraction: the last part of each agent's text kept for its local checks (default 0.1).
#
# Everything lives in a scratch folder (--keep DIR keeps it in DIR), processes are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

agents=8 sequences=48 seq_len=128 dp="" keep="" json="" private="" heldout=0.1
model=$repo/models/tinystories-1.8m round_extra=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --agents) agents=$2; shift 2 ;;
    --sequences) sequences=$2; shift 2 ;;
    --seq-len) seq_len=$2; shift 2 ;;
    --runtime|--recipe|--method|--target-kl|--fallback|--weight-bits) round_extra+=("$1" "$2"); shift 2 ;;
    --per-channel|--per-tensor|--smooth|--no-smooth) round_extra+=("$1"); shift ;;
    --dp-epsilon) dp="--dp-epsilon $2"; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --private-text) private=$(realpath "$2"); shift 2 ;;
    --heldout-fraction) heldout=$2; shift 2 ;;
    --json) json=--json; shift ;;
    --model) model=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

text=$repo/data/tinystories/tinystories-sample.txt
[[ -f $text ]] || { echo "missing $text (the repository's data/ folder)" >&2; exit 1; }
bin=$repo/build/bin
if [[ ! -x $bin/fedcal-coordinator || ! -x $bin/fedcal-agent ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build --target fedcal-coordinator fedcal-agent
fi

if [[ -n $keep ]]; then root=$keep; mkdir -p "$root"; else root=$(mktemp -d /tmp/fedcal-fleet.XXXXXX); fi
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $keep ]] || rm -rf "$root"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
# Training split = lines 1-7003. The last 1003 lines play the operator's public reference text; the
# first 6000 are dealt out to the agents in contiguous shards.
head -n 7003 "$text" | tail -n 1003 > "$root/public.txt"
cat > "$root/coordinator.toml" <<TOML
listen = "tcp://127.0.0.1:$port"
state_dir = "coordinator"
heartbeat_interval_ms = 500
agent_timeout_ms = 3000
stage_timeout_ms = 30000
join_timeout_ms = 300000
reference_text = "public.txt"
TOML
coordinator() { "$bin/fedcal-coordinator" --config "$root/coordinator.toml" "$@"; }
"$bin/fedcal-coordinator" --config "$root/coordinator.toml" serve 2> "$root/coordinator.log" &
pids+=($!)
for _ in $(seq 100); do coordinator keys >/dev/null 2>&1 && coordinator --json agents list >/dev/null 2>&1 && break; sleep 0.1; done
key=$(coordinator --json keys | sed -n 's/.*"curve_public_key": "\(.*\)".*/\1/p')

# The agents' private text: TinyStories training lines 1-6000, or --private-text's lines.
if [[ -n $private ]]; then cp "$private" "$root/private-all.txt"; else head -n 6000 "$text" > "$root/private-all.txt"; fi
shard_lines=$(($(wc -l < "$root/private-all.txt") / agents))
for i in $(seq 0 $((agents - 1))); do
  dir=$root/agent-$i
  mkdir -p "$dir/text"
  head -n $(((i + 1) * shard_lines)) "$root/private-all.txt" | tail -n "$shard_lines" > "$dir/text/private.txt"
  token=$(coordinator --json token create | sed -n 's/.*"token": "\(.*\)".*/\1/p')
  cat > "$dir/agent.toml" <<TOML
coordinator = "tcp://127.0.0.1:$port"
coordinator_key = "$key"
state_dir = "state"
data_dir = "text"
name = "local-$i"
labels = ["x86", "local"]
threads = 1
eval_max_tokens = 2048
heldout_fraction = $heldout
enroll_token = "$token"
TOML
  "$bin/fedcal-agent" --config "$dir/agent.toml" run 2> "$dir/agent.log" &
  pids+=($!)
done

model_id=$(coordinator --json models import "$model/model.bin" --tokenizer "$model/tokenizer.bin" | sed -n 's/^  "id": \([0-9]*\),*/\1/p')
echo "[fleet] coordinator on 127.0.0.1:$port, $agents agents, model $model_id; state in $root" >&2
for _ in $(seq 300); do
  online=$(coordinator --json agents list | grep -c '"online": true' || true)
  [[ $online -ge $agents ]] && break
  sleep 0.1
done
echo "[fleet] $online agents online; starting the round" >&2
# shellcheck disable=SC2086
coordinator $json round start --model "$model_id" --min-agents 3 --sequences-per-agent "$sequences" --seq-len "$seq_len" \
  $dp "${round_extra[@]}" --wait
