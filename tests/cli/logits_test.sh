#!/usr/bin/env bash
# `moge logits` end to end: the PyTorch reference writes a checkpoint and its logits; moge's .npy
# must match them (f32, 1e-4), and bad input must fail with one error line.
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
# A token outside the vocabulary and a broken config: one line on stderr, non-zero exit.
if "$moge" logits -m "$dir/f32" --tokens "1 99999" -o "$dir/x.npy" 2> "$dir/err"; then exit 1; fi
grep -q "outside the vocabulary" "$dir/err"
[ "$(wc -l < "$dir/err")" -eq 1 ]
echo '{"vocab_size": 10' > "$dir/f32/config.json"
if "$moge" logits -m "$dir/f32" --tokens "1" -o "$dir/x.npy" 2> "$dir/err"; then exit 1; fi
grep -q "config.json: invalid JSON" "$dir/err"
