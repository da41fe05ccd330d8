#!/usr/bin/env bash
# `moge logits` and `moge convert` end to end: the PyTorch reference writes a checkpoint and its
# logits; moge's .npy must match them (f32: 1e-4; converted to int8 and int4: the reference's
# W8A8 and int4 logits, 2e-3), and bad input must fail with one error line.
set -euo pipefail
moge=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
/usr/bin/python3 "$src/tests/reference/pangu_model.py" --out "$dir" > /dev/null
tokens=$(/usr/bin/python3 -c "import numpy as np; print(' '.join(map(str, np.load('$dir/reference/tokens.npy'))))")
"$moge" logits -m "$dir/f32" --tokens "$tokens" -o "$dir/logits.npy"
/usr/bin/python3 - "$dir" <<'PY'
import sys, numpy as np
d = sys.argv[1]
got, want = np.load(d + "/logits.npy"), np.load(d + "/reference/logits_f32.npy")
assert got.shape == want.shape, (got.shape, want.shape)
err = np.abs(got - want).max()
assert err < 1e-4, err
print("max |moge - reference| =", err)
PY
for type in int8 int4; do
  "$moge" convert -m "$dir/f32" -o "$dir/$type" --type "$type" > /dev/null 2>&1
  "$moge" logits -m "$dir/$type" --tokens "$tokens" -o "$dir/logits_$type.npy"
done
/usr/bin/python3 - "$dir" <<'PY'
import sys, numpy as np
d = sys.argv[1]
for got, want in (("int8", "w8a8"), ("int4", "int4")):
    err = np.abs(np.load(f"{d}/logits_{got}.npy") - np.load(f"{d}/reference/logits_{want}.npy")).max()
    assert err < 2e-3, (got, err)
    print(f"max |moge {got} - reference {want}| =", err)
PY
if "$moge" convert -m "$dir/f32" -o "$dir/x" --type int3 2> "$dir/err"; then exit 1; fi
grep -q "int3" "$dir/err"
[ "$(wc -l < "$dir/err")" -eq 1 ]
# A token outside the vocabulary and a broken config: one line on stderr, non-zero exit.
if "$moge" logits -m "$dir/f32" --tokens "1 99999" -o "$dir/x.npy" 2> "$dir/err"; then exit 1; fi
grep -q "outside the vocabulary" "$dir/err"
[ "$(wc -l < "$dir/err")" -eq 1 ]
echo '{"vocab_size": 10' > "$dir/f32/config.json"
if "$moge" logits -m "$dir/f32" --tokens "1" -o "$dir/x.npy" 2> "$dir/err"; then exit 1; fi
grep -q "config.json: invalid JSON" "$dir/err"
