#!/usr/bin/env bash
# `moge init` writes a random model that `moge generate` and `moge bench` run; bad configs fail
# with one error line naming the file.
set -euo pipefail
moge=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/cfg.json" <<'JSON'
{"vocab_size": 800, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
 "num_experts": 8, "num_experts_per_tok": 4, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64}
JSON
"$moge" init --config "$dir/cfg.json" -o "$dir/model" --tokenizer "$src/tests/data/tokenizer" 2> /dev/null
"$moge" generate -m "$dir/model" -p "hello" -n 4 --temp 0 --json > "$dir/gen.json"
/usr/bin/python3 -c "import json; j = json.load(open('$dir/gen.json')); assert j['generated_tokens'] == 4, j"
"$moge" bench -m "$dir/model" -p 16 -n 4 -r 1 --json 2> /dev/null > "$dir/bench.json"
/usr/bin/python3 -c "
import json; j = json.load(open('$dir/bench.json'))
assert j['pp_tokens_per_s'] > 0 and j['tg_tokens_per_s'] > 0 and j['stream_read_gbs'] > 0, j
assert j['params'] == 2 * 800 * 64 + 64 + 2 * (2 * (64 * 64 + 64) + 2 * (64 * 32 + 32) + 2 * 64 + 8 * 64 + 8 + 8 * 3 * 64 * 32 + 3 * 64 * 64), j
# The parts of a forward are pieces of the step bench timed: each took some time, and together no
# more than the step (the prefill step of 16 tokens; a decoded token), and most of it.
for key, step_ms in (('pp_phase_ms', 16e3 / j['pp_tokens_per_s']), ('tg_phase_ms_per_token', 1e3 / j['tg_tokens_per_s'])):
    parts = j[key]
    assert all(parts[p] > 0 for p in ('embed', 'attention', 'moe', 'head')), parts
    assert 0.5 * step_ms < sum(parts.values()) <= step_ms * (1 + 1e-9), (parts, step_ms)"
# A checkpoint stored int8 runs as stored whatever --type says (bf16 by default): the JSON names
# the kernel that ran, not the one --type asked for.
"$moge" convert -m "$dir/model" -o "$dir/int8" --type int8 2> /dev/null
"$moge" bench -m "$dir/int8" -p 8 -n 2 -r 1 --json 2> /dev/null > "$dir/bench8.json"
/usr/bin/python3 -c "
import json; j = json.load(open('$dir/bench8.json'))
assert j['decode_kernel'].startswith('quant '), j['decode_kernel']"
echo '{"vocab_size": 800}' > "$dir/bad.json"
if "$moge" init --config "$dir/bad.json" -o "$dir/x" 2> "$dir/err"; then exit 1; fi
grep -q "bad.json: missing field 'hidden_size'" "$dir/err"
