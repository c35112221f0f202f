# Sourced by the accuracy benchmarks (quantization_table.sh, fidelity_table.sh) after `cd` to the
# repository root: arguments MODEL_DIR (default models/tinystories-1.8m) and THREADS (default 1), a
# scratch folder $work removed on exit, and in it the TinyStories split as data/tinystories/README
# fixes it: train.txt (lines 1-7003), heldout.txt (lines 7004-8659) and sensitivity.txt (the first
# 4,000 bytes of train.txt, for the searches that measure KL on one window). For a model trained on
# several domains (its metrics.json lists "corpora": models/tinystories-kjv-1.8m), their split.
model_dir=${1:-models/tinystories-1.8m}
threads=${2:-1}
bin=${FEDCAL_MODEL:-build/bin/fedcal-model}
data=data/tinystories/tinystories-sample.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if grep -q '"corpora"' "$model_dir/metrics.json" 2>/dev/null; then
  # A model trained on several domains (models/train/train_tinystories.py --corpus): the split its
  # metrics.json records. train.txt interleaves the domains' training lines in proportion (so the
  # searches' first windows see each), heldout.txt is their held-out lines one domain after another.
  python3 - "$model_dir/metrics.json" "$work" <<'PY'
import json, os, sys
corpora = json.load(open(sys.argv[1]))["corpora"]
def lines(name, first, last):
    path = next(os.path.join(d, name) for d in ("data/tinystories", "data/kjv") if os.path.exists(os.path.join(d, name)))
    return open(path, "rb").read().split(b"\n")[first - 1:last]
train = [lines(c["corpus"], *c["training_lines"]) for c in corpora]
total = [sum(len(line) + 1 for line in t) for t in train]
taken, written = [0] * len(train), [0] * len(train)
with open(os.path.join(sys.argv[2], "train.txt"), "wb") as out:
    while any(k < len(t) for k, t in zip(taken, train)):
        # The next line from the domain with the smallest share of its bytes written so far.
        i = min((k for k in range(len(train)) if taken[k] < len(train[k])), key=lambda k: written[k] / total[k])
        out.write(train[i][taken[i]] + b"\n")
        written[i] += len(train[i][taken[i]]) + 1
        taken[i] += 1
with open(os.path.join(sys.argv[2], "heldout.txt"), "wb") as out:
    for c in corpora:
        out.write(b"".join(line + b"\n" for line in lines(c["corpus"], *c["heldout_lines"])))
PY
else
  sed -n '1,7003p' "$data" > "$work/train.txt"
  sed -n '7004,8659p' "$data" > "$work/heldout.txt"
fi
head -c 4000 "$work/train.txt" > "$work/sensitivity.txt"
model=(-m "$model_dir/model.bin" --tokenizer "$model_dir/tokenizer.bin")

# A step's output only when it fails.
quiet() { "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; }; }
# The training split's statistics with importance sums ($work/train.stats) and the FP32 package
# ($work/fp32.pkg, its size in $fp32_bytes): what the fidelity tables measure against.
training_stats_and_fp32() {
  quiet $bin calibrate "${model[@]}" --text "$work/train.txt" --sequences 100000 --seq-len 256 --importance -o "$work/train.stats" -q -t "$threads"
  quiet $bin quantize "${model[@]}" -o "$work/fp32.pkg"
  fp32_bytes=$(stat -c %s "$work/fp32.pkg")
}
# A markdown row of a package's fidelity against $work/fp32.pkg on the held-out split:
#   fidelity_row LABEL PACKAGE   ->   | model | LABEL | ppl change | mean KL | top-1 | package bytes |
fidelity_row() {
  local eval bytes
  eval=$($bin eval -m "$2" --text "$work/heldout.txt" --reference "$work/fp32.pkg" --json -t "$threads" 2>/dev/null)
  bytes=$(stat -c %s "$2")
  python3 - "$(basename "$model_dir")" "$1" "$eval" "$bytes" "$fp32_bytes" <<'PY'
import json, sys
name, label, e, size, fp32_bytes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"| {name} | {label} | {100 * (e['perplexity'] / e['reference_perplexity'] - 1):+.3f}% | {e['mean_kl']:.5f} "
      f"| {e['top1_agreement']:.4f} | {size / 1e6:.3f} MB ({100 * size / fp32_bytes:.1f}%) |")
PY
}
