#!/usr/bin/env bash
# Expert parallelism from the command line: `moge logits --devices D` (in-process devices) and
# `mpirun -np D moge logits --devices mpi` on the shipped MoGE and top-k models write the logits of
# the single-device run within 1e-6 relative (the library test states why not bitwise);
# `moge generate --devices` prints the same text and a load table with IS 0 for MoGE; and a
# checkpoint that lacks one device's experts ends every rank within seconds, with the error
# naming the device and the experts, before any forward pass. `moge bench --devices 4
# --isolate-experts --json` reports every device's load: equal pairs in every layer for MoGE, not
# for top-k, and expert-time ratios against perfect balance that are >= 1.
set -euo pipefail
moge=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

source "$(dirname "$0")/mpi_env.sh"
mpirun=(timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none)
tokens="5 812 33 1999 7 250 4001 64 3 77 1024 9 500"

compare() {  # reference.npy candidate.npy
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape, (a.shape, b.shape)
err = float(np.abs(a - b).max() / np.abs(a).max())
assert err < 1e-6, f"{sys.argv[2]}: relative error {err:.3g}"
PY
}

for model in tiny-moge tiny-topk; do
  m=$src/models/$model
  "$moge" logits -m "$m" --tokens "$tokens" -o "$dir/$model-1.npy" -t 1
  for d in 2 8; do
    "$moge" logits -m "$m" --tokens "$tokens" -o "$dir/$model-local$d.npy" --devices "$d" -t 2
    compare "$dir/$model-1.npy" "$dir/$model-local$d.npy"
  done
  for np in 2 4; do
    "${mpirun[@]}" -np "$np" "$moge" logits -m "$m" --tokens "$tokens" -o "$dir/$model-mpi$np.npy" --devices mpi -t 1 \
      > /dev/null 2> "$dir/mpi.err" || { cat "$dir/mpi.err" >&2; exit 1; }
    compare "$dir/$model-1.npy" "$dir/$model-mpi$np.npy"
  done
done

# Same text, and MoGE's table shows equal pairs on every device (IS 0).
prompt="The state of the union"
"$moge" generate -m "$src/models/tiny-moge" -p "$prompt" -n 12 -t 1 2> /dev/null | head -1 > "$dir/one.txt"
"$moge" generate -m "$src/models/tiny-moge" -p "$prompt" -n 12 -t 2 --devices 4 --load-svg "$dir/load.svg" \
  2> /dev/null > "$dir/four.txt"
head -1 "$dir/four.txt" | cmp - "$dir/one.txt"
grep -q "4 devices, all_gather dispatch" "$dir/four.txt"
[ "$(grep -cE '^\| [0-9]+ \| ([0-9]+) \1 \1 \1 \| [0-9.]+ \| 0\.000 \|' "$dir/four.txt")" = 4 ]
grep -q "<svg" "$dir/load.svg"

# A checkpoint without expert 13 of layer 2 (device 3 of 8, device 1 of 4).
/usr/bin/python3 - "$src/models/tiny-moge" "$dir/broken" <<'PY'
import json, os, shutil, struct, sys
src, dst = sys.argv[1:3]
os.makedirs(dst)
shutil.copy(os.path.join(src, "config.json"), dst)
raw = open(os.path.join(src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
out, blobs, offset = {}, [], 0
for name, info in header.items():
    if name == "__metadata__":
        out[name] = info
        continue
    if name.startswith("model.layers.2.mlp.experts.13."):
        continue
    a, b = info["data_offsets"]
    blobs.append(data[a:b])
    out[name] = dict(info, data_offsets=[offset, offset + b - a])
    offset += b - a
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(dst, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
start=$(date +%s)
rc=0
"${mpirun[@]}" -np 4 "$moge" logits -m "$dir/broken" --tokens "$tokens" -o "$dir/x.npy" --devices mpi -t 1 \
  > /dev/null 2> "$dir/broken.err" || rc=$?
[ "$rc" != 0 ] || { echo "a checkpoint missing experts was accepted" >&2; exit 1; }
[ $(( $(date +%s) - start )) -lt 60 ] || { echo "the failing run took too long" >&2; exit 1; }
grep -q "device 1" "$dir/broken.err" && grep -q "13" "$dir/broken.err" || { cat "$dir/broken.err" >&2; exit 1; }
[ ! -e "$dir/x.npy" ]
rc=0
"$moge" logits -m "$dir/broken" --tokens "$tokens" -o "$dir/x.npy" --devices 8 -t 1 2> "$dir/local.err" || rc=$?
[ "$rc" = 1 ] && [ "$(wc -l < "$dir/local.err")" = 1 ] && grep -q "device 3" "$dir/local.err" \
  || { echo "local devices: rc $rc"; cat "$dir/local.err"; exit 1; } >&2
for model in tiny-moge tiny-topk; do
  "$moge" bench -m "$src/models/$model" -p 32 -n 2 -r 3 -t 2 --devices 4 --isolate-experts --isolate-rounds 2 \
    --json > "$dir/bench.json" 2> /dev/null
  /usr/bin/python3 - "$dir/bench.json" "$model" <<'PY'
import json, sys
ep = json.load(open(sys.argv[1]))["expert_parallel"]
assert ep["devices"] == 4 and ep["isolated_expert_timing"] is True, ep.keys()
layers = ep["per_device_layer"]
pairs = [[l["pairs"] for l in device] for device in layers]
equal = all(len({device[i] for device in pairs}) == 1 for i in range(len(pairs[0])))
assert equal == (sys.argv[2] == "tiny-moge"), (sys.argv[2], pairs)
# Two measured repetitions (the first is a warm-up) of a 32-token prefill and 2 decode steps.
assert all(l["calls"] == 2 * 3 for device in layers for l in device), layers[0]
assert ep["expert_time_over_balanced"] >= 1 and ep["expert_time_over_balanced_best"] >= 1, ep
PY
done
rc=0
"$moge" bench -m "$src/models/tiny-moge" -p 8 -n 1 --devices 2 --isolate-experts --isolate-rounds 0 2> "$dir/rounds.err" \
  > /dev/null || rc=$?
[ "$rc" = 1 ] && [ "$(wc -l < "$dir/rounds.err")" = 1 ] && grep -q -- "--isolate-rounds" "$dir/rounds.err" \
  || { echo "--isolate-rounds 0: rc $rc"; cat "$dir/rounds.err"; exit 1; } >&2
echo "expert parallelism CLI: ok"
