#!/usr/bin/env bash
# `moge sim calibrate --quick` measures this machine into a profile that `moge sim predict` loads
# (a finite, positive prediction for models/tiny-moge), whose sources name the calibration and
# this CPU; --accumulate takes the median across runs; an output path that cannot be written ends
# with one error line naming it.
set -euo pipefail
moge=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$moge" sim calibrate --quick -t 1 -o "$tmp/cpu.json" 2> "$tmp/err"
grep -q "calibrate: wrote $tmp/cpu.json" "$tmp/err"
grep -q "calibrate .*measurements" "$tmp/err"  # the progress line
[ ! -e "$tmp/cpu.json.tmp" ]
cpu=$(grep -m1 "model name" /proc/cpuinfo | sed 's/^[^:]*: *//')
"$moge" sim predict --profile "$tmp/cpu.json" -m "$src/models/tiny-moge" --prompt 16 --gen 4 --kv-dtype f32 \
  --json | CPU="$cpu" /usr/bin/python3 -c '
import json, math, os, sys
j = json.load(sys.stdin)
for phase in ("prefill", "decode"):
    s = j[phase]
    assert math.isfinite(s["step_ms"]) and s["step_ms"] > 0, s
    assert s["tokens_per_s_per_device"] > 0, s
    assert s["ms"]["elementwise"] > 0, s
p = json.load(open(sys.argv[1]))
src = p["sources"][0]
assert src.startswith("measured by moge sim calibrate --quick on " + os.environ["CPU"] + ", "), src
assert p["devices_per_node"] == 1 and p["device"]["activation_bytes"] == 4, p["device"]
for t in ("f32", "bf16", "int8", "int4"):
    assert p["device"]["peak_tflops"][t] > 0, p["device"]
assert {r["type"] for r in p["efficiency"]["gemv"]} == {"f32", "bf16", "int8", "int4"}
' "$tmp/cpu.json"

# --accumulate: the second run takes the median of both and says so; the raw file keeps each run's
# numbers; a raw file of other settings is one error naming it.
"$moge" sim calibrate --quick -t 1 --accumulate "$tmp/acc.raw" -o "$tmp/a1.json" 2> "$tmp/err"
"$moge" sim calibrate --quick -t 1 --accumulate "$tmp/acc.raw" -o "$tmp/a2.json" 2> "$tmp/err"
grep -q "the median of this run and 1 before it ($tmp/acc.raw)" "$tmp/err"
/usr/bin/python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); assert j["runs"] == 2 and len(j["fields"]) == 2 and min(j["team"]) > 0, j' "$tmp/acc.raw"
echo '{"runs": 1, "coll_devices": 2, "team": 1e-6, "fields": [1, 2, 3]}' > "$tmp/bad.raw"
out=$("$moge" sim calibrate --quick -t 1 --accumulate "$tmp/bad.raw" -o "$tmp/a3.json" 2>&1) && { echo "expected a failure"; exit 1; }
echo "$out" | grep -q "$tmp/bad.raw: measurements of other settings" || { echo "bad raw file: $out"; exit 1; }

out=$("$moge" sim calibrate --quick -t 1 -o "$tmp/no/such/dir/cpu.json" 2>&1) && { echo "expected a failure"; exit 1; }
[ "$(echo "$out" | grep -c .)" -ge 1 ]
echo "$out" | grep -q "$tmp/no/such/dir/cpu.json" || { echo "error does not name the path: $out"; exit 1; }
echo "sim calibrate CLI: ok"
