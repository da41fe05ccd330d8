#!/usr/bin/env bash
# `moge sim predict --trace` and `moge sim sweep` from the command line:
# - a routing trace recorded by `moge generate --trace` on models/tiny-topk replays into a
#   prediction for that model (the JSON says the load came from the trace; max >= mean), and a
#   malformed trace ends with one error line naming the file and the field;
# - a sweep of Pangu Pro MoE on the 800I A2 profile finds a plan under the latency limit that
#   fits, writes its SVG, and a limit nothing meets ends with one line saying so.
set -euo pipefail
moge=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
profile=$src/docs/sim/profiles/ascend-800i-a2.json
pangu=$src/tests/data/pangu_pro_moe
tiny=$src/models/tiny-topk

"$moge" generate -m "$tiny" -p "The state of the union" -n 24 --temp 0 --trace "$tmp/trace.json" > /dev/null 2>&1
"$moge" sim predict --profile "$profile" -m "$tiny" --plan attn=dp4,experts=ep4,shared=tp4 --batch 8 --prompt 16 \
  --gen 8 --trace "$tmp/trace.json" --json 2> "$tmp/predict.err" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["expert_load"].startswith("trace "), j["expert_load"]
d = j["decode"]
assert d["expert_pairs_max"] >= d["expert_pairs_mean"] == 8 * 8 / 4, d
'
expect_error() {  # pattern, arguments...
  local pattern=$1 err rc=0
  shift
  err=$("$moge" sim "$@" 2>&1 > /dev/null) || rc=$?
  [ "$rc" != 0 ] || { echo "accepted: $*" >&2; exit 1; }
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || { echo "not one line: $err" >&2; exit 1; }
  printf '%s\n' "$err" | grep -q -- "$pattern" || { echo "error without '$pattern': $err" >&2; exit 1; }
}
echo '{"top_k": 8, "num_experts": 32, "tokens": 1, "layers": [[0, 1, 2]]}' > "$tmp/bad.json"
expect_error "bad.json: field 'layers\[0\]' has 3 expert ids" predict --profile "$profile" -m "$tiny" \
  --trace "$tmp/bad.json" --batch 4 --prompt 16 --gen 4
expect_error "field 'num_experts' is 32 but the model has 64" predict --profile "$profile" -m "$pangu" \
  --plan attn=tp8,experts=ep8,shared=tp8 --trace "$tmp/trace.json" --batch 4 --prompt 16 --gen 4

"$moge" sim sweep --profile "$profile" -m "$pangu" --latency-ms 100 --batches 1,64,456 --dtype int8 \
  --kv-dtype int8 --json --svg "$tmp/sweep.svg" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["feasible"] > 0 and j["results"], j
b = j["results"][0]["best"]
assert 0 < b["decode_ms"] < 100 and b["tokens_per_s_per_device"] > 0, b
tps = [r["best"]["tokens_per_s_per_device"] for r in j["results"]]
assert tps == sorted(tps, reverse=True), tps
'
grep -q "<svg" "$tmp/sweep.svg"
expect_error "no configuration has a decode latency under 0.001 ms" sweep --profile "$profile" -m "$pangu" \
  --latency-ms 0.001 --batches 1,8
expect_error "--batches: 'x' is not a positive integer" sweep --profile "$profile" -m "$pangu" --batches 1,x
echo "sim sweep/trace CLI: ok"
