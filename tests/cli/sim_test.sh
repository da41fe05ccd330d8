#!/usr/bin/env bash
# `moge sim predict` from the command line: Pangu Pro MoE on the 800I A2 profile with the paper's
# plan gives finite positive throughput in JSON, MoGE's expert load is exactly T*K/EP per device
# (max = mean), and a plan needing more devices than the profile has, a missing profile and a bad
# plan each end with one error line and a non-zero exit.
set -euo pipefail
moge=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
profile=$src/docs/sim/profiles/ascend-800i-a2.json
model=$src/tests/data/pangu_pro_moe
"$moge" sim predict --profile "$profile" -m "$model" --plan attn=dp2tp4,experts=ep4tp2,shared=tp8 \
  --batch 456 --prompt 2048 --gen 256 --dtype int8 --kv-dtype int8 --json | /usr/bin/python3 -c '
import json, math, sys
j = json.load(sys.stdin)
for phase in ("prefill", "decode"):
    p = j[phase]
    assert math.isfinite(p["step_ms"]) and p["step_ms"] > 0, p
    assert p["tokens_per_s_per_device"] > 0, p
d = j["decode"]
assert d["expert_pairs_max"] == d["expert_pairs_mean"] == 456 * 8 / 4, d
'
expect_error() {  # pattern, arguments...
  local pattern=$1 err rc=0
  shift
  err=$("$moge" sim predict "$@" 2>&1 > /dev/null) || rc=$?
  [ "$rc" != 0 ] || { echo "accepted: $*" >&2; exit 1; }
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || { echo "not one line: $err" >&2; exit 1; }
  printf '%s\n' "$err" | grep -q "$pattern" || { echo "error without '$pattern': $err" >&2; exit 1; }
}
expect_error "needs 16 devices" --profile "$profile" -m "$model" --plan attn=dp4tp4,experts=ep8tp2,shared=tp16 \
  --batch 4 --prompt 16 --gen 4
expect_error "no-such.json" --profile "$src/no-such.json" -m "$model" --plan attn=tp8,experts=ep8,shared=tp8 \
  --batch 4 --prompt 16 --gen 4
expect_error "plan" --profile "$profile" -m "$model" --plan nonsense --batch 4 --prompt 16 --gen 4
echo "sim CLI: ok"
