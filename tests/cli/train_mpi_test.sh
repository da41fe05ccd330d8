#!/usr/bin/env bash
# `moge train --mpi`: data-parallel training under mpirun. Two ranks, each running one of the
# step's two micro-batches, must train what one process running both does: every step's loss and
# gradient norm, the validation losses and the final weights agree within 1e-5 relative (the f32
# gradient sums are rounded in a different order; the key biases, 1e-3: see below), and `--mpi`
# without mpirun writes the same bytes as no --mpi. A run where every rank fails at startup must
# end within seconds with the error on one line, and so must a run where only rank 1 fails (rank 0
# is then left waiting in a collective until rank 1 aborts the job).
set -euo pipefail
moge=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

source "$(dirname "$0")/mpi_env.sh"
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2)

source "$(dirname "$0")/train_data.sh"
make_train_data "$moge" "$dir"

cat > "$dir/cfg.json" <<'JSON'
{"model": {"vocab_size": 320, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 4, "moe_intermediate_size": 16,
           "shared_expert_intermediate_size": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "max_position_embeddings": 256, "tie_word_embeddings": true, "router_aux_loss_coef": 0.01},
 "train": {"micro_batch": 4, "seq_len": 16, "grad_accum": 2, "steps": 4, "lr": 1e-2, "min_lr": 1e-3,
           "warmup": 2, "eval_every": 2, "eval_batches": 2, "save_every": 0, "seed": 5}}
JSON

"$moge" train --config "$dir/cfg.json" --data "$dir/data" -o "$dir/one" -t 1 -q > "$dir/one.out" 2> "$dir/one.err"
timeout 300 "${mpirun[@]}" "$moge" train --mpi --config "$dir/cfg.json" --data "$dir/data" -o "$dir/two" -t 1 \
  > "$dir/two.out" 2> "$dir/two.err" || { echo "mpirun failed:" >&2; cat "$dir/two.err" >&2; exit 1; }
# Rank 0 alone prints the result line.
[ "$(grep -c ': 4 steps, loss' "$dir/two.out")" -eq 1 ] || { echo "result lines:" >&2; cat "$dir/two.out" >&2; exit 1; }

# --mpi without mpirun: an MPI singleton, one rank, the same bytes as without --mpi.
"$moge" train --mpi --config "$dir/cfg.json" --data "$dir/data" -o "$dir/single" -t 1 -q > /dev/null 2> "$dir/single.err" ||
  { echo "singleton failed:" >&2; cat "$dir/single.err" >&2; exit 1; }
cmp "$dir/one/latest/model.safetensors" "$dir/single/latest/model.safetensors"

/usr/bin/python3 "$(dirname "$0")/compare_runs.py" "$dir/one" "$dir/two" "1 process vs 2 ranks"

# A rank that fails must not leave the others waiting in a collective: mpirun ends quickly,
# non-zero, with the error on one line (each failing rank prints it once, naming itself).
mkdir "$dir/noval"
cp "$dir/data/train.bin" "$dir/data/meta.json" "$dir/noval/"
expect_quick_failure() {  # name, mpirun arguments...
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  timeout 60 mpirun --allow-run-as-root --oversubscribe --bind-to none "$@" > /dev/null 2> "$dir/$name.err" || rc=$?
  [ "$rc" -ne 0 ] || { echo "$name: should have failed" >&2; exit 1; }
  [ "$rc" -ne 124 ] || { echo "$name: mpirun hung (killed by timeout)" >&2; cat "$dir/$name.err" >&2; exit 1; }
  [ $(($(date +%s) - start)) -lt 30 ] || { echo "$name: took too long to fail" >&2; exit 1; }
  grep '^moge: ' "$dir/$name.err" | sed 's/rank [0-9]* of [0-9]*: //' | sort -u > "$dir/$name.lines" || true
  [ "$(wc -l < "$dir/$name.lines")" -eq 1 ] || { echo "$name: not one error line:" >&2; cat "$dir/$name.err" >&2; exit 1; }
  grep -q "^moge: error: .*noval/val.bin: " "$dir/$name.lines" ||
    { echo "$name: no val.bin error:" >&2; cat "$dir/$name.err" >&2; exit 1; }
}
train=("$moge" train --mpi --config "$dir/cfg.json" -t 1)
# Every rank fails at startup (no val.bin).
expect_quick_failure allfail -np 2 "${train[@]}" --data "$dir/noval" -o "$dir/bad"
# Only rank 1 fails; rank 0 would wait for it in the first all-reduce.
expect_quick_failure rank1fail -np 1 "${train[@]}" --data "$dir/data" -o "$dir/bad1" : -np 1 "${train[@]}" \
  --data "$dir/noval" -o "$dir/bad1"
grep -q "rank 1 of 2" "$dir/rank1fail.err" || { echo "the error does not name rank 1:" >&2; cat "$dir/rank1fail.err" >&2; exit 1; }
echo ok
