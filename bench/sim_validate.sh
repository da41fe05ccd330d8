#!/bin/bash
# The simulator against moge's own runs (docs/results/simulator.md): for each case, `moge bench`
# measures prompt processing (pp: one prefill step of P tokens) and generation (tg: N decode steps
# of one token after it), and `moge sim predict` predicts both from a calibrated profile of this
# machine (docs/sim/profiles/this-cpu*.json, `moge sim calibrate`). Prints a markdown table:
# measured and predicted tokens/s and the error of the prediction.
#
#   bench/sim_validate.sh [--quick]      MOGE=path/to/moge (default build/release/tools/moge/moge)
#   CASES="0 1 5" RAW=FILE bench/sim_validate.sh --measure   measure only those cases (indices into
#                                        the list below), appending the measurements to FILE
#   bench/sim_validate.sh --table FILE...  predict and print the table for the measurements in FILEs
#
# The pieces exist for a shared machine: QUIET should pause the others only briefly, so a run
# can be split into a few cases at a time (GAP=SECONDS waits between measurements), and the
# table made at the end from every piece, with the predictions of the tree as it is then.
#
# Each case runs `moge bench -r REPS` (the best of its repetitions, seconds apart) ROUNDS times,
# the cases taking turns so that a case's rounds fall in different minutes, and the table takes
# the median of the rounds: on a shared VM whose bandwidth swings 12-31 GB/s from minute to
# minute, the median says what a typical minute gives, and `moge sim calibrate` keeps the median
# of its rounds (each measurement the best of its short windows) the same way.
#
# Models are generated into $SIM_VALIDATE_DIR (default /tmp/sim-validate; never committed):
# models/tiny-moge as it is, docs/configs/sim-mid.json (0.3B) and docs/configs/bench-2g.json (1B).
# Run it with the machine otherwise idle: QUIET=CMD prefixes every measurement with CMD (here
# QUIET=/work/scratch/quiet.sh, which pauses other heavy processes while each runs).
set -euo pipefail
cd "$(dirname "$0")/.."
moge=${MOGE:-build/release/tools/moge/moge}
dir=${SIM_VALIDATE_DIR:-/tmp/sim-validate}
threads=${THREADS:-2}
reps=${REPS:-3}
rounds=${ROUNDS:-1}
profile1=${PROFILE:-docs/sim/profiles/this-cpu.json}
profile2=${PROFILE_2DEV:-docs/sim/profiles/this-cpu-2dev.json}
profile_mpi=${PROFILE_MPI:-docs/sim/profiles/this-cpu-mpi2.json}
quiet=${QUIET:-}
gap=${GAP:-0}
mode=all
quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  --measure) mode=measure ;;
  --table) mode=table; shift ;;
esac
mkdir -p "$dir"
for cfg in sim-mid bench-2g; do
  [ -f "$dir/$cfg/config.json" ] || "$moge" init --config "docs/configs/$cfg.json" -o "$dir/$cfg" >&2
done
source tests/cli/mpi_env.sh

# name | model dir | weights | prompt P | generated N | devices (1, 2 or mpi)
cases=(
  "tiny-moge models/tiny-moge bf16 32 32 1"
  "tiny-moge models/tiny-moge bf16 512 32 1"
  "sim-mid $dir/sim-mid bf16 32 32 1"
  "sim-mid $dir/sim-mid bf16 128 32 1"
  "sim-mid $dir/sim-mid bf16 512 32 1"
  "bench-2g $dir/bench-2g bf16 32 32 1"
  "bench-2g $dir/bench-2g bf16 128 32 1"
  "bench-2g $dir/bench-2g bf16 512 64 1"
  "bench-2g $dir/bench-2g int8 512 64 1"
  "bench-2g $dir/bench-2g int4 512 64 1"
  "bench-2g $dir/bench-2g f32 128 32 1"
  "sim-mid $dir/sim-mid bf16 128 32 2"
  "bench-2g $dir/bench-2g bf16 128 32 2"
  "bench-2g $dir/bench-2g bf16 512 64 2"
  "bench-2g $dir/bench-2g bf16 512 64 mpi"
)
[ $quick = 1 ] && cases=("${cases[0]}" "${cases[5]}" "${cases[12]}")
selected=(${CASES:-$(seq 0 $((${#cases[@]} - 1)))})

# Measurements: one line a run, "name model dtype P N devices<TAB>bench's JSON".
raw=${RAW:-}
tmp_files=()
trap 'rm -f "${tmp_files[@]}"' EXIT
if [ "$mode" != table ]; then
  [ -n "$raw" ] || { raw=$(mktemp); tmp_files+=("$raw"); }
  first=1
  for round in $(seq "$rounds"); do
  for i in "${selected[@]}"; do
    c=${cases[$i]}
    read -r name model dtype p n devices <<<"$c"
    case $devices in
      1) run=("$moge" bench -t "$threads") ;;
      2) run=("$moge" bench -t "$threads" --devices 2) ;;
      mpi) run=(mpirun -np 2 "$moge" bench -t 1 --devices mpi) ;;
    esac
    [ $first = 1 ] || sleep "$gap"
    first=0
    echo "sim_validate: round $round/$rounds: case $i: $name $dtype pp$p tg$n devices $devices ($(date -u +%H:%M:%S))" >&2
    measured=$($quiet "${run[@]}" -m "$model" --type "$dtype" -p "$p" -n "$n" -r "$reps" --json 2>/dev/null)
    printf '%s\t%s\n' "$c" "$(echo "$measured" | tr -d '\n')" >>"$raw"
  done
  done
  [ "$mode" = measure ] && exit 0
  set -- "$raw"
fi

rows=$(mktemp)
tmp_files+=("$rows")
cat "$@" | while IFS=$'\t' read -r c measured; do
  read -r name model dtype p n devices <<<"$c"
  case $devices in
    1) profile=$profile1; plan="attn=dp1"; ndev=1 ;;
    2) profile=$profile2; plan="attn=dp2,experts=ep2,shared=dp2"; ndev=2 ;;
    mpi) profile=$profile_mpi; plan="attn=dp2,experts=ep2,shared=dp2"; ndev=2 ;;
  esac
  # One sequence: the prefill step is its P tokens, decode steps of one token at the mean context
  # P + N/2 (as bench's tg runs them). The engine's KV cache is f32, and --type quantizes lm_head. Under --devices the engine
  # replicates attention, which attn=dpD with one sequence reproduces (each device runs it whole).
  predicted=$("$moge" sim predict --profile "$profile" -m "$model" --plan "$plan" --batch 1 --prefill-batch 1 \
    --prompt "$p" --gen "$n" --dtype "$dtype" --lm-head-dtype "$dtype" --kv-dtype f32 --json)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$dtype" "$p" "$n" "$devices" "$ndev" "$profile" \
    "$measured" "$(echo "$predicted" | tr -d '\n')" >>"$rows"
done

/usr/bin/python3 - "$rows" <<'PY'
import json, sys
# "read GB/s": what moge bench's bandwidth probe measured after the case (the median of its rounds), against
# the profile's memory_bandwidth_gb_s: this VM's bandwidth drifts, and a case measured on a faster
# or slower minute than the calibration is off by about that ratio (the two-device profiles give
# one device's share, about half the probe's).
# "measured ms": the parts of moge's step as bench timed them (pp_phase_ms, tg_phase_ms_per_token;
# the median of the rounds): attention block (with its norm, RoPE, bias and residual passes) / MoE
# block (router, routed and shared experts, combine, collectives and waits, its norm and residual) /
# head (final norm, lm_head); "-" for measurements made before bench reported them.
print("| model | weights | devices | test | measured tok/s | rounds: spread | predicted tok/s | error | read GB/s: bench / profile | predicted ms: attn / experts / shared / comm / lm_head / elementwise | measured ms: attn / MoE / head |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
# The median of the rounds for each case (same prediction every round); spread: (max - min) / median.
def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
cases = {}
for line in open(sys.argv[1]):
    name, dtype, p, n, devices, ndev, profile, m, pr = line.rstrip("\n").split("\t")
    key = (name, dtype, p, n, devices)
    if key not in cases:
        cases[key] = (name, dtype, p, n, devices, [], ndev, pr, profile)
    cases[key][5].append(json.loads(m))
errors = []
for name, dtype, p, n, devices, runs, ndev, pr, profile in cases.values():
    pr = json.loads(pr)
    bw = json.load(open(profile))["device"]["memory_bandwidth_gb_s"]
    read = median([r["stream_read_gbs"] for r in runs])
    for test, key, phase, parts_key in ((f"pp{p}", "pp_tokens_per_s", "prefill", "pp_phase_ms"),
                                        (f"tg{n} @ {int(p) + int(n) // 2}", "tg_tokens_per_s", "decode", "tg_phase_ms_per_token")):
        values = [r[key] for r in runs]
        meas = median(values)
        spread = (max(values) - min(values)) / meas * 100
        pred = pr[phase]["tokens_per_s_per_device"] * int(ndev)
        err = (pred - meas) / meas * 100
        errors.append(abs(err))
        ms = pr[phase]["ms"]
        parts = " / ".join(f"{ms[k]:.3g}" for k in ("attention", "experts", "shared_expert", "comm", "lm_head", "elementwise"))
        timed = [r[parts_key] for r in runs if parts_key in r]
        measured_parts = " / ".join(f"{median([t[k] for t in timed]):.3g}" for k in ("attention", "moe", "head")) if timed else "-"
        print(f"| {name} | {dtype} | {devices} | {test} | {meas:.1f} | {len(values)}: {spread:.0f}% | {pred:.1f} | {err:+.1f}% | {read:.1f} / {bw:.1f} | {parts} | {measured_parts} |")
within = sum(e <= 10 for e in errors)
print(f"\n{within} of {len(errors)} within 10%; mean |error| {sum(errors) / len(errors):.1f}%, max {max(errors):.1f}%")
PY
