#!/usr/bin/env bash
# `moge generate` end to end: a random model from the PyTorch reference paired with the test
# tokenizer; moge's greedy tokens must equal the reference's greedy continuation of the same
# prompt ids, and the streamed text must equal the JSON text.
set -euo pipefail
moge=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
/usr/bin/python3 "$src/tests/reference/pangu_model.py" --out "$dir" --vocab-size 800 --float-only --seed 3 > /dev/null
cp "$src"/tests/data/tokenizer/tokenizer.model "$src"/tests/data/tokenizer/*.json "$dir/f32/"
"$moge" generate -m "$dir/f32" -p "The free software license" -n 12 --temp 0 --json > "$dir/out.json"
read -r prompt_ids got_ids < <(/usr/bin/python3 -c "
import json; j = json.load(open('$dir/out.json'))
print(','.join(map(str, j['prompt_token_ids'])), ','.join(map(str, j['tokens'])))")
want_ids=$(/usr/bin/python3 "$src/tests/reference/pangu_model.py" --out "$dir" \
  --continue-tokens "${prompt_ids//,/ }" --steps 12)
[ "${got_ids//,/ }" = "$want_ids" ] || { echo "moge: $got_ids"; echo "reference: $want_ids"; exit 1; }
# Streaming prints the same text as --json.
"$moge" generate -m "$dir/f32" -p "The free software license" -n 12 --temp 0 2> /dev/null > "$dir/stream.txt"
/usr/bin/python3 -c "
import json; j = json.load(open('$dir/out.json')); s = open('$dir/stream.txt', encoding='utf-8').read()
assert s == j['text'] + '\n', (s, j['text'])"
# Bad flags: one error line, non-zero exit.
if "$moge" generate -m "$dir/f32" -p "x" --top-p 0 2> "$dir/err"; then exit 1; fi
grep -q -- "--top-p" "$dir/err"
if "$moge" generate -m "$dir/nonexistent" -p "x" 2> "$dir/err"; then exit 1; fi
grep -q "nonexistent" "$dir/err"
echo "greedy tokens match the reference: $want_ids"
# Chat: two turns through the chat template; the second turn reuses the cached conversation.
printf 'hello\nagain\n' | "$moge" chat -m "$dir/f32" --temp 0 -n 4 > "$dir/chat.out" 2> "$dir/chat.err"
[ "$(grep -c '^\[prompt:' "$dir/chat.err")" -eq 2 ]
first=$(grep '^\[prompt:' "$dir/chat.err" | sed -n 1p | sed -E 's/\[prompt: ([0-9]+) .*/\1/')
second=$(grep '^\[prompt:' "$dir/chat.err" | sed -n 2p | sed -E 's/\[prompt: ([0-9]+) .*/\1/')
[ "$second" -lt $((first + 8)) ] || { echo "second turn re-ran $second tokens"; exit 1; }
# Routing report: the reference model is MoGE (8 experts in 4 groups, one a group), so on 4
# devices every step loads every device equally (IS 0), and the trace holds one expert from
# every group for every token.
"$moge" generate -m "$dir/f32" -p "The free software license" -n 6 --temp 0 --load-devices 4 \
  --trace "$dir/trace.json" 2> /dev/null > "$dir/load.txt"
grep -q "mean IS per token over layers: 0.000" "$dir/load.txt"
/usr/bin/python3 -c "
import json; t = json.load(open('$dir/trace.json'))
assert t['top_k'] == 4 and t['num_experts'] == 8 and len(t['layers']) == 3, t.keys()
for layer in t['layers']:
    assert len(layer) == 4 * t['tokens'], (len(layer), t['tokens'])
    for r in range(t['tokens']):
        assert sorted(e // 2 for e in layer[4 * r:4 * r + 4]) == [0, 1, 2, 3], layer[4 * r:4 * r + 4]
"
# moge eval on a shard of random tokens (MOGETOK1, see src/moge/train/data.h): MoGE on 4 devices
# gives IS 0 in every batch; the loss is finite and near ln(800) for a random model.
/usr/bin/python3 -c "
import struct, numpy as np
tok = np.random.default_rng(1).integers(0, 800, 200).astype('<u2')
open('$dir/val.bin', 'wb').write(b'MOGETOK1' + struct.pack('<IIqII', 1, 2, len(tok), 800, 0) + tok.tobytes())"
"$moge" eval -m "$dir/f32" --data "$dir" --seq-len 32 --windows 4 --devices 4 --batch-tokens 16 --json \
  2> /dev/null > "$dir/eval.json"
/usr/bin/python3 -c "
import json, math; j = json.load(open('$dir/eval.json'))
assert j['tokens'] == 128 and j['mean_is'] == 0.0 and j['mean_balancedness'] == 1.0, j
assert 3 < j['val_loss'] < 15, j['val_loss']"
