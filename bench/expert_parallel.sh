#!/usr/bin/env bash
# Expert parallelism, MoGE against top-k on the shipped trained models (models/tiny-moge and its
# twin models/tiny-topk): `moge bench --devices D --json` (pp and tg, the first repetition a
# warm-up) for D = 2, 4, 8 in-process devices and D = 2, 4 MPI ranks, and one markdown row each:
# prefill/decode tokens/s, IS (mean per call over layers), balancedness, the routed experts' time
# against perfect balance (slowest device / mean, per call), and wait and communication time as
# shares of the MoE blocks' wall time.
#
#   bench/expert_parallel.sh [--moge BIN] [-p PROMPT] [-n GEN] [-r REPS] [-t THREADS] [--svg DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
moge=$root/build/release/tools/moge/moge prompt=256 gen=32 reps=3 threads=$(nproc) svg=""
while [ $# -gt 0 ]; do
  case $1 in
    --moge) moge=$2; shift 2 ;;
    -p) prompt=$2; shift 2 ;;
    -n) gen=$2; shift 2 ;;
    -r) reps=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    --svg) svg=$2; shift 2 ;;
    *) echo "usage: $0 [--moge BIN] [-p PROMPT] [-n GEN] [-r REPS] [-t THREADS] [--svg DIR]" >&2; exit 2 ;;
  esac
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mpi_yield_when_idle=1 OMP_WAIT_POLICY=passive
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| model | devices | dispatch | pp$prompt tok/s | tg$gen tok/s | IS | balancedness | expert time / balanced | wait % of MoE | comm % of MoE |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for model in tiny-moge tiny-topk; do
  for run in "local 2" "local 4" "local 8" "mpi 2" "mpi 4"; do
    set -- $run
    kind=$1 d=$2
    echo "bench: $model, $kind $d devices..." >&2
    extra=()
    [ -n "$svg" ] && extra=(--load-svg "$svg/$model-$kind$d.svg")
    if [ "$kind" = local ]; then
      "$moge" bench -m "$root/models/$model" -p "$prompt" -n "$gen" -r "$reps" -t "$threads" --devices "$d" --json \
        "${extra[@]}" > "$tmp/out.json" 2> /dev/null
    else
      per_rank=$(( threads / d > 0 ? threads / d : 1 ))
      mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$d" "$moge" bench -m "$root/models/$model" \
        -p "$prompt" -n "$gen" -r "$reps" -t "$per_rank" --devices mpi --json "${extra[@]}" > "$tmp/out.json" 2> /dev/null
    fi
    /usr/bin/python3 - "$tmp/out.json" "$model" "$kind $d" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
ep = j["expert_parallel"]
layers = ep["per_device_layer"]
dev0 = layers[0]
mean = lambda xs: sum(xs) / len(xs)
is_ = mean([l["is_mean"] for l in dev0])
bal = mean([l["balancedness_mean"] for l in dev0])
moe = sum(l["compute_s"] + l["wait_s"] + l["comm_s"] for d in layers for l in d)
wait = sum(l["wait_s"] for d in layers for l in d)
comm = sum(l["comm_s"] for d in layers for l in d)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {ep['dispatch']} | {j['pp_tokens_per_s']:.0f} | {j['tg_tokens_per_s']:.1f} | "
      f"{is_:.3f} | {bal:.3f} | {ep['expert_time_over_balanced']:.3f} | {100 * wait / moe:.0f} | {100 * comm / moe:.0f} |")
PY
  done
done
