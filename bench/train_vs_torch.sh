#!/usr/bin/env bash
# Training speed: `moge train` against the same model trained by PyTorch 1.13 on the CPU
# (bench/torch_train.py), same config, same thread count set explicitly for both, one row a
# thread count: threads | moge tok/s | torch tok/s | ratio (goal: ratio >= 2).
#
# Builds nothing. It writes synthetic token shards (uniform random tokens of the model's vocabulary,
# MOGETOK1 files written with numpy, meta.json pointing at tests/data/tokenizer) and a run config:
# the given one with train.steps = STEPS, warmup <= STEPS, eval_every 0, save_every 0,
# eval_batches 1 (one validation batch and one checkpoint after the last step, not timed). Then,
# for each thread count T:
#   - moge: `moge train --config CFG --data DATA -o OUT -q -t T` (OMP_NUM_THREADS=T too); the median
#     tokens_per_s of OUT/log.jsonl over the steps after the first SKIP (the first steps create
#     most of the oneDNN primitives);
#   - torch: bench/torch_train.py --config CFG -t T --warmup SKIP --steps STEPS-SKIP, the median of
#     its timed steps (random tokens too). torch.set_num_threads(T), set_num_interop_threads(1),
#     OMP_NUM_THREADS=T. With T > 1 Debian's torch has two thread pools, T OpenMP threads for its
#     own ops and T OpenBLAS pthreads for the GEMMs, that busy-wait while the other works: on T
#     cores that halves its speed. So torch runs three ways and the best counts: OpenBLAS T threads,
#     the same with OMP_WAIT_POLICY=PASSIVE, OpenBLAS 1 thread (--torch-naive: the first only).
#
# Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) falls back to its slowest x86-64 core ("Prescott", SSE3)
# on CPUs it does not know (Sapphire/Emerald Rapids, Zen 4). With --openblas-coretype auto (the
# default) an unset OPENBLAS_CORETYPE is set for the torch runs to SkylakeX (CPU with avx512f) or
# Haswell (avx2) when the detected core is Prescott, so that torch gets its best GEMMs;
# --openblas-coretype default leaves OpenBLAS alone; NAME sets it. --torch-default-core adds a
# column with torch on the core OpenBLAS picks by itself.
#
# --pairs N (default 1) measures each thread count N times, moge and torch alternated (moge first
# in odd rounds, torch first in even ones), and reports every pair's ratio and the median ratio:
# on a shared VM the same binary's tokens/s moves by +-25% between runs minutes apart, and a pair
# run back to back sees mostly the same spell. With T > 1 torch's three thread settings run in the
# first round only; later rounds use the setting that won it. The tok/s columns are then medians.
#
# The `others` column is the largest share of the machine's CPU time (wall x cores) that other
# processes took during one of the row's runs; above 0.05 the row is flagged: rerun on an idle
# machine (a training run or a build next to it halves either side).
#
# Usage: bench/train_vs_torch.sh [--moge BIN] [--config JSON] [--threads "1 2"] [--steps 30]
#            [--skip 5] [--openblas-coretype auto|default|NAME] [--torch-default-core]
#            [--torch-naive] [--pairs N] [--json] [--keep DIR]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOGE=build/release/tools/moge/moge
CONFIG=docs/configs/tiny-moge.json
THREADS="1 2"
STEPS=30
SKIP=5
CORETYPE=auto
DEFAULT_CORE=0
NAIVE=0
JSON=0
KEEP=""
PAIRS=1
PY=/usr/bin/python3

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --moge) MOGE=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    --openblas-coretype) CORETYPE=$2; shift 2 ;;
    --torch-default-core) DEFAULT_CORE=1; shift ;;
    --torch-naive) NAIVE=1; shift ;;
    --pairs) PAIRS=$2; shift 2 ;;
    --json) JSON=1; shift ;;
    --keep) KEEP=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "train_vs_torch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

[[ -x "$MOGE" ]] || { echo "train_vs_torch.sh: $MOGE: no moge binary (make build, or pass --moge)" >&2; exit 1; }
[[ -f "$CONFIG" ]] || { echo "train_vs_torch.sh: $CONFIG: no such config" >&2; exit 1; }
"$PY" -c "import torch, numpy" 2>/dev/null ||
  { echo "train_vs_torch.sh: $PY cannot import torch and numpy (apt-get install python3-torch)" >&2; exit 1; }
[[ "$PAIRS" =~ ^[1-9][0-9]*$ ]] || { echo "train_vs_torch.sh: --pairs must be a positive integer" >&2; exit 2; }
(( STEPS > SKIP + 2 )) || { echo "train_vs_torch.sh: --steps must exceed --skip by at least 3" >&2; exit 2; }
MOGE=$(cd "$(dirname "$MOGE")" && pwd)/$(basename "$MOGE")
CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")

if [[ -n "$KEEP" ]]; then WORK=$KEEP; mkdir -p "$WORK"; else WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; fi
say() { [[ $JSON == 1 ]] || echo "$@" >&2; }

if pgrep -f "moge train" > /dev/null; then
  echo "train_vs_torch.sh: warning: another 'moge train' is running; the numbers will be low" >&2
fi

# Synthetic data: uniform random tokens over the model's vocabulary (the tokenizer in meta.json is
# only copied into checkpoints).
"$PY" - "$CONFIG" "$WORK/data" "$ROOT/tests/data/tokenizer" <<'EOF'
import json, os, sys
import numpy as np
config, out, tokenizer = sys.argv[1:4]
vocab = json.load(open(config))["model"]["vocab_size"]
os.makedirs(out, exist_ok=True)
width = 2 if vocab <= 65536 else 4
rng = np.random.default_rng(1)
for name, n in (("train.bin", 1 << 20), ("val.bin", 1 << 16)):
    tokens = rng.integers(0, vocab, n).astype("<u2" if width == 2 else "<u4")
    header = (b"MOGETOK1" + np.array([1, width], "<u4").tobytes() + np.array([n], "<u8").tobytes()
              + np.array([vocab, 0], "<u4").tobytes())
    with open(os.path.join(out, name), "wb") as fh:
        fh.write(header + tokens.tobytes())
json.dump({"tokenizer": tokenizer, "synthetic": "uniform random tokens", "vocab_size": vocab},
          open(os.path.join(out, "meta.json"), "w"))
EOF

# The run config: the given one, STEPS steps, no evaluation or checkpoints on the way.
"$PY" - "$CONFIG" "$WORK/config.json" "$STEPS" <<'EOF'
import json, sys
src, dst, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = json.load(open(src))
t = cfg.setdefault("train", {})
t.update(steps=steps, warmup=min(t.get("warmup", 0), steps), eval_every=0, save_every=0, eval_batches=1)
t["min_lr"] = min(t.get("min_lr", 0.0), t.get("lr", 3e-3))
json.dump(cfg, open(dst, "w"), indent=2)
EOF

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
CORES=$(nproc)
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo)
# oneDNN's isa: the first verbose line of a one-step run.
ONEDNN_ISA=$(cd "$WORK" && "$PY" - "$WORK/config.json" "$WORK/isa.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1])); cfg["train"].update(steps=1, warmup=0, micro_batch=1, seq_len=8)
json.dump(cfg, open(sys.argv[2], "w"))
EOF
  ONEDNN_VERBOSE=1 DNNL_VERBOSE=1 "$MOGE" train --config "$WORK/isa.json" --data "$WORK/data" -o "$WORK/isa-run" -q -t 1 2>&1 |
    grep -m1 -o 'isa:[^,]*' | sed 's/^isa://' || true)
rm -rf "$WORK/isa-run"
[[ -n "$ONEDNN_ISA" ]] || ONEDNN_ISA="(not reported)"

# OpenBLAS core for torch.
probe_core() { "$PY" -c "
import ctypes, torch
lib = ctypes.CDLL('libblas.so.3'); lib.openblas_get_corename.restype = ctypes.c_char_p
print(lib.openblas_get_corename().decode())" 2>/dev/null || echo "(not OpenBLAS)"; }
DEFAULT_CORENAME=$(env -u OPENBLAS_CORETYPE bash -c "$(declare -f probe_core); PY=$PY; probe_core")
TORCH_CORETYPE=${OPENBLAS_CORETYPE:-}
case "$CORETYPE" in
  auto)
    if [[ -z "$TORCH_CORETYPE" && "$DEFAULT_CORENAME" == Prescott ]]; then
      if grep -qw avx512f <<< "$FLAGS"; then TORCH_CORETYPE=SkylakeX
      elif grep -qw avx2 <<< "$FLAGS"; then TORCH_CORETYPE=Haswell; fi
    fi ;;
  default) TORCH_CORETYPE="" ;;
  *) TORCH_CORETYPE=$CORETYPE ;;
esac

# measure.py OUT -- CMD...: runs CMD with its stdout to OUT and prints {"wall", "cpu" (its CPU
# seconds), "others" (the share of the machine's CPU time, wall x cores, that other processes took
# meanwhile: above 0.05 the row is flagged, the numbers are not from an idle machine)}.
cat > "$WORK/measure.py" <<'EOF'
import json, os, resource, subprocess, sys, time
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")   # all but idle and iowait
out, cmd = sys.argv[1], sys.argv[3:]
r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.monotonic()
with open(out, "w") as fh:
    rc = subprocess.call(cmd, stdout=fh)
r1, b1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.monotonic()
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
wall = t1 - t0
print(json.dumps({"wall": round(wall, 3), "cpu": round(cpu, 3),
                  "others": round(max(0.0, (b1 - b0) - cpu) / (wall * os.cpu_count()), 3)}))
sys.exit(rc)
EOF
with_load() {  # JSON, load JSON -> JSON with "load" added
  "$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); r["load"] = json.loads(sys.argv[2]); print(json.dumps(r))' "$1" "$2"
}

run_torch() {  # threads, coretype ("" = OpenBLAS's choice), OpenBLAS threads, OMP_WAIT_POLICY ("" = unset)
  local t=$1 core=$2 blas=$3 wait=$4 load   # -> torch_train.py's JSON with "load" and "setting"
  local cmd=("$PY" "$WORK/measure.py" "$WORK/torch.out" -- "$PY" "$ROOT/bench/torch_train.py"
             --config "$WORK/config.json" -t "$t" --blas-threads "$blas" --warmup "$SKIP" --steps $((STEPS - SKIP)) --quiet)
  local envs=(env -u OPENBLAS_CORETYPE -u OMP_WAIT_POLICY OMP_NUM_THREADS="$t")
  [[ -n "$core" ]] && envs+=(OPENBLAS_CORETYPE="$core")
  [[ -n "$wait" ]] && envs+=(OMP_WAIT_POLICY="$wait")
  load=$("${envs[@]}" "${cmd[@]}" 2>> "$WORK/torch.log")
  "$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); r["load"] = json.loads(sys.argv[2]); r["setting"] = sys.argv[3]
r["blas"], r["wait"] = int(sys.argv[4]), sys.argv[5]; print(json.dumps(r))' \
    "$(tail -1 "$WORK/torch.out")" "$load" "OpenBLAS $blas${wait:+, OMP $wait}" "$blas" "$wait"
}

# Torch's threads: with T > 1, Debian's torch runs T OpenMP threads for its own ops and T OpenBLAS
# pthreads for the GEMMs, and each pool busy-waits while the other works: on T cores that can halve
# its speed. Unless --torch-naive, torch is run three ways and its best counts: OpenBLAS T threads,
# the same with OMP_WAIT_POLICY=PASSIVE, and OpenBLAS 1 thread (torch's OpenMP T threads in all).
torch_best() {  # threads, coretype -> the best run's JSON with "all": every run's tokens/s
  local t=$1 core=$2 runs=()
  runs+=("$(run_torch "$t" "$core" "$t" "")")
  if (( t > 1 )) && [[ $NAIVE == 0 ]]; then
    runs+=("$(run_torch "$t" "$core" "$t" PASSIVE)")
    runs+=("$(run_torch "$t" "$core" 1 "")")
  fi
  printf '%s\n' "${runs[@]}" | "$PY" -c '
import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
best = max(runs, key=lambda r: r["tokens_per_s"])
best["all"] = {r["setting"]: r["tokens_per_s"] for r in runs}
print(json.dumps(best))'
}

run_moge() {  # threads -> {"tokens_per_s", "step_seconds", ..., "load"}
  local t=$1 load summary
  rm -rf "$WORK/run-$t"
  load=$(OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t MKL_NUM_THREADS=$t "$PY" "$WORK/measure.py" "$WORK/moge-$t.out" -- \
    "$MOGE" train --config "$WORK/config.json" --data "$WORK/data" -o "$WORK/run-$t" -q -t "$t")
  summary=$("$PY" - "$WORK/run-$t/log.jsonl" "$SKIP" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "tokens_per_s" in r and r["step"] > int(sys.argv[2])]
tps = [r["tokens_per_s"] for r in steps]
print(json.dumps({"tokens_per_s": round(statistics.median(tps), 1),
                  "step_seconds": round(statistics.median(r["seconds"] for r in steps), 6),
                  "timed_steps": len(steps), "loss_first": rows[0]["loss"], "loss_last": steps[-1]["loss"]}))
EOF
)
  with_load "$summary" "$load"
}

# One round's torch run: the three settings (torch_best) in the first round, its winner's after.
torch_round() {  # threads, the first round's torch JSON ("" in the first round)
  local t=$1 first=$2 blas wait
  if [[ -z "$first" ]]; then
    torch_best "$t" "$TORCH_CORETYPE"
    return
  fi
  blas=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["blas"])' "$first")
  wait=$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["wait"])' "$first")
  run_torch "$t" "$TORCH_CORETYPE" "$blas" "$wait"
}

ROWS=()
for t in $THREADS; do
  MOGE_RUNS=() TORCH_RUNS=()
  for round in $(seq 1 "$PAIRS"); do
    tag="threads $t"
    (( PAIRS > 1 )) && tag+=", round $round/$PAIRS"
    # Odd rounds moge first, even rounds torch first: a drift of the machine's speed within a
    # round then favours neither side over the rounds.
    sides="moge torch"
    (( round % 2 )) || sides="torch moge"
    for side in $sides; do
      if [[ $side == moge ]]; then
        say "$tag: moge train ($STEPS steps) ..."
        MOGE_RUNS+=("$(run_moge "$t")")
      else
        say "$tag: torch ($((STEPS - SKIP)) timed steps after $SKIP, OPENBLAS_CORETYPE=${TORCH_CORETYPE:-unset}) ..."
        TORCH_RUNS+=("$(torch_round "$t" "${TORCH_RUNS[0]:-}")")
      fi
    done
  done
  DEF_JSON=null
  if [[ $DEFAULT_CORE == 1 ]]; then
    say "threads $t: torch on OpenBLAS's own core ($DEFAULT_CORENAME) ..."
    DEF_JSON=$(torch_best "$t" "")
  fi
  # The row: with one round, its two runs; with several, each side's median tok/s, every pair's
  # ratio, and the median of those ratios as the row's ratio.
  ROWS+=("$("$PY" - "$t" "$DEF_JSON" "${MOGE_RUNS[@]}" "${TORCH_RUNS[@]}" <<'EOF'
import json, statistics, sys
t, default = int(sys.argv[1]), json.loads(sys.argv[2])
runs = [json.loads(a) for a in sys.argv[3:]]
moge, torch = runs[:len(runs) // 2], runs[len(runs) // 2:]
row = {"threads": t, "moge": moge[0], "torch": torch[0], "torch_default_core": default}
if len(moge) > 1:
    median = statistics.median
    ratios = [m["tokens_per_s"] / q["tokens_per_s"] for m, q in zip(moge, torch)]
    for side, runs in (("moge", moge), ("torch", torch)):
        row[side] = dict(runs[0], tokens_per_s=round(median(r["tokens_per_s"] for r in runs), 1),
                         load={"others": max(r["load"]["others"] for r in runs)})
    row["pairs"] = [{"moge": m["tokens_per_s"], "torch": q["tokens_per_s"], "ratio": round(r, 3),
                     "others": max(m["load"]["others"], q["load"]["others"])} for m, q, r in zip(moge, torch, ratios)]
    row["ratio"] = round(median(ratios), 3)
print(json.dumps(row))
EOF
)")
done

ROWS_JSON=$(IFS=,; echo "[${ROWS[*]}]")
OMP_ENV=$(env | grep -E '^(OMP_|KMP_|GOMP_|OPENBLAS_|ONEDNN_|DNNL_)' | sort | tr '\n' ' ' || true)
"$PY" - "$JSON" <<EOF
import json, sys
rows = json.loads('''$ROWS_JSON''')
info = {"config": "$CONFIG", "moge": "$MOGE", "steps": $STEPS, "skip": $SKIP, "cpu": "$CPU_MODEL",
        "cores": $CORES, "onednn_isa": "$ONEDNN_ISA", "openblas_default_core": "$DEFAULT_CORENAME",
        "torch_openblas_coretype": "${TORCH_CORETYPE}" or None, "env": "${OMP_ENV}".strip() or None}
for r in rows:
    r.setdefault("ratio", round(r["moge"]["tokens_per_s"] / r["torch"]["tokens_per_s"], 3))
    if r["torch_default_core"]:
        r["ratio_default_core"] = round(r["moge"]["tokens_per_s"] / r["torch_default_core"]["tokens_per_s"], 3)
if sys.argv[1] == "1":
    print(json.dumps(dict(info, rows=rows), indent=2))
    sys.exit(0)
t0 = rows[0]["torch"]
print(f"moge train vs PyTorch {t0['torch']}: {info['config']}, {t0['parameters']:,} parameters, "
      f"{t0['tokens_per_step']} tokens a step, {info['steps']} steps (median of the last {info['steps'] - info['skip']})")
print(f"CPU: {info['cpu']}, {info['cores']} cores; oneDNN isa: {info['onednn_isa']}")
print(f"torch: OpenBLAS core {t0['openblas_core']} (OPENBLAS_CORETYPE={info['torch_openblas_coretype'] or 'unset'}; "
      f"OpenBLAS alone picks {info['openblas_default_core']}); OMP_NUM_THREADS = torch threads = T; "
      f"environment: {info['env'] or 'no OMP_/OPENBLAS_/ONEDNN_ variables set'}")
default = any(r["torch_default_core"] for r in rows)
head = "| threads | moge tok/s | torch tok/s | ratio | torch threads (best)   |"
rule = "|--------:|-----------:|------------:|------:|:-----------------------|"
if default:
    head += f" torch tok/s ({info['openblas_default_core']}) | ratio |"
    rule += "------------:|------:|"
head += " others |"
rule += "-------:|"
print()
print(head)
print(rule)
flagged = False
for r in rows:
    line = (f"| {r['threads']:7d} | {r['moge']['tokens_per_s']:10.0f} | {r['torch']['tokens_per_s']:11.0f} | "
            f"{r['ratio']:5.2f} | {'OMP ' + str(r['threads']) + ', ' + r['torch']['setting']:22s} |")
    loads = [r["moge"]["load"]["others"], r["torch"]["load"]["others"]]
    if default:
        line += f" {r['torch_default_core']['tokens_per_s']:11.0f} | {r['ratio_default_core']:5.2f} |"
        loads.append(r["torch_default_core"]["load"]["others"])
    flag = max(loads) > 0.05
    flagged |= flag
    line += f" {max(loads):5.2f}{' !' if flag else '  '}|"
    print(line)
print()
for r in rows:
    if len(r["torch"]["all"]) > 1:
        print(f"torch at {r['threads']} threads, tok/s: " + ", ".join(f"{k}: {v:.0f}" for k, v in r["torch"]["all"].items()))
for r in rows:
    if "pairs" in r:
        print(f"{r['threads']} thread(s), {len(r['pairs'])} pairs run alternately (moge / torch tok/s = ratio): "
              + ", ".join(f"{p['moge']:.0f} / {p['torch']:.0f} = {p['ratio']:.2f}{' !' if p['others'] > 0.05 else ''}"
                          for p in r["pairs"])
              + f"; median ratio {r['ratio']:.2f} (the table's ratio; its tok/s are the medians of each side)")
if flagged:
    print("! other processes took more than 5% of the machine during this row: rerun on an idle machine")
EOF
