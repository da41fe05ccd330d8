#!/usr/bin/env bash
# `moge tokenizer train` and `moge data` on a small text written here (no network corpus): the
# outputs exist and agree with meta.json, and bad flags fail with one error line naming the flag.
set -euo pipefail
moge=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# 60 short "addresses", a blank line after each.
for i in $(seq 1 60); do
  echo "Address $i. Fellow citizens of the Senate and House of Representatives, the state of the union is strong."
  echo "In year $((1790 + i)) the people of our great nation shall trade in peace and keep the public credit."
  echo
done > "$dir/text.txt"

"$moge" tokenizer train --input "$dir/text.txt" --vocab-size 320 --out "$dir/tok" --seed 1 2> "$dir/log" > "$dir/out"
test -s "$dir/tok/tokenizer.model"
grep -q '"eos_token": "</s>"' "$dir/tok/tokenizer_config.json"
grep -q "320 pieces" "$dir/out"

"$moge" data --tokenizer "$dir/tok" --input "$dir/text.txt" --out "$dir/data" --val-fraction 0.1 --seed 3 \
  2> "$dir/log" > "$dir/out"
grep -q "train 54 documents" "$dir/out"
/usr/bin/python3 - "$dir/data" <<'PY'
import json, os, struct, sys
d = sys.argv[1]
meta = json.load(open(os.path.join(d, "meta.json")))
assert meta["val"]["documents"] == 6 and meta["train"]["documents"] == 54, meta
for split in ("train", "val"):
    b = open(os.path.join(d, split + ".bin"), "rb").read()
    magic, version, width, count, vocab, _ = struct.unpack("<8sIIQII", b[:32])
    assert (magic, version, width, vocab) == (b"MOGETOK1", 1, 2, 320), (magic, version, width, vocab)
    assert count == meta[split]["tokens"] and len(b) == 32 + 2 * count, (count, len(b))
    tokens = struct.unpack("<%dH" % count, b[32:])
    assert tokens.count(2) == meta[split]["documents"] and tokens[-1] == 2  # one </s> per document
PY

# Same inputs and seed: the same bytes.
"$moge" data --tokenizer "$dir/tok" --input "$dir/text.txt" --out "$dir/again" --val-fraction 0.1 --seed 3 2> /dev/null > /dev/null
cmp "$dir/data/train.bin" "$dir/again/train.bin"
cmp "$dir/data/val.bin" "$dir/again/val.bin"

# Bad flag values: nonzero exit, exactly one line on stderr, naming the flag.
expect_one_line_error() {  # pattern, command...
  local pattern=$1
  shift
  if "$@" 2> "$dir/err" > /dev/null; then echo "should have failed: $*" >&2; exit 1; fi
  [ "$(wc -l < "$dir/err")" -eq 1 ] || { echo "not one line:" >&2; cat "$dir/err" >&2; exit 1; }
  grep -q -- "$pattern" "$dir/err" || { echo "no '$pattern' in:" >&2; cat "$dir/err" >&2; exit 1; }
}
expect_one_line_error "--vocab-size 10" "$moge" tokenizer train --input "$dir/text.txt" --vocab-size 10 --out "$dir/t2"
expect_one_line_error "--model-type words" "$moge" tokenizer train --input "$dir/text.txt" --model-type words --out "$dir/t2"
expect_one_line_error "--val-fraction" "$moge" data --tokenizer "$dir/tok" --input "$dir/text.txt" --out "$dir/d2" --val-fraction 1.5
expect_one_line_error "nothing.txt" "$moge" data --tokenizer "$dir/tok" --input "$dir/nothing.txt" --out "$dir/d2"
echo ok
