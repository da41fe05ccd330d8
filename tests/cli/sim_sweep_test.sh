#!/usr/bin/env bash
# `moge sim predict --trace` and `moge sim sweep` from the command line:
# - a routing trace recorded by `moge generate --trace` on models/tiny-topk replays into a
#   prediction for that model (the JSON says the load came from the trace; max >= mean), and a
#   malformed trace ends with one error line naming the file and the field;
# - a sweep of Pangu Pro MoE on the 800I A2 profile finds a plan under the latency limit that
#   fits, writes its SVG and its Pareto-front SVG (the front checked against one computed here
#   from the JSON), and a limit nothing meets ends with one line saying so.
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
# The Pareto plot: valid XML, and its one polyline (the front) has as many points as the front of
# every point that fits, computed here from the JSON (lower latency, higher throughput).
"$moge" sim sweep --profile "$profile" -m "$pangu" --latency-ms 100 --batches 1,16,64,256,456 --dtype int8 \
  --kv-dtype int8 --top 0 --json --pareto "$tmp/pareto.svg" > "$tmp/all.json"
/usr/bin/python3 - "$tmp/all.json" "$tmp/pareto.svg" <<'PY'
import json, sys, xml.etree.ElementTree as ET
j = json.load(open(sys.argv[1]))
pts = sorted(((p["decode_ms"], -p["tokens_per_s_per_device"]) for r in j["results"] for p in r["points"] if p["fits"]))
front, best = [], 0.0
for ms, neg in pts:
    if -neg > best:
        front.append((ms, -neg))
        best = -neg
assert len(pts) > 100 and 2 <= len(front) < len(pts), (len(pts), front)
ns = "{http://www.w3.org/2000/svg}"
svg = ET.parse(sys.argv[2]).getroot()
lines = svg.findall(f".//{ns}polyline")
assert len(lines) == 1, len(lines)
n = len(lines[0].get("points").split())
assert n == len(front), (n, len(front), front)
texts = " ".join(t.text or "" for t in svg.iter(f"{ns}text"))
assert f"Pareto front ({len(front)})" in texts and f"fits ({len(pts)})" in texts, texts
PY
expect_error "no configuration has a decode latency under 0.001 ms" sweep --profile "$profile" -m "$pangu" \
  --latency-ms 0.001 --batches 1,8
expect_error "--batches: 'x' is not a positive integer" sweep --profile "$profile" -m "$pangu" --batches 1,x
echo "sim sweep/trace CLI: ok"
