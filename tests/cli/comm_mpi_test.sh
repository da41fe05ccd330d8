#!/usr/bin/env bash
# The MPI back end of parallel::Comm under mpirun (tests/comm_mpi_check.cpp).
#   comm_mpi_test.sh CHECK collectives NP   every collective checked on NP ranks
#   comm_mpi_test.sh CHECK failures NP      a rank that throws, and one that dies, make mpirun
#                                           exit non-zero within seconds (never a hang)
set -euo pipefail
check=$1 what=$2 np=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

source "$(dirname "$0")/mpi_env.sh"
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np")

case "$what" in
  collectives)
    timeout 120 "${mpirun[@]}" "$check" collectives > "$dir/out" 2> "$dir/err" ||
      { echo "mpirun failed:" >&2; cat "$dir/out" "$dir/err" >&2; exit 1; }
    [ "$(grep -c 'every collective ok' "$dir/out")" -eq "$np" ] ||
      { echo "not every rank passed:" >&2; cat "$dir/out" "$dir/err" >&2; exit 1; }
    ;;
  failures)
    for mode in throw die; do
      start=$(date +%s%N)
      rc=0
      timeout 60 "${mpirun[@]}" "$check" "$mode" > "$dir/$mode.out" 2> "$dir/$mode.err" || rc=$?
      took_ms=$((($(date +%s%N) - start) / 1000000))
      [ "$rc" -ne 0 ] || { echo "$mode: mpirun should have failed" >&2; exit 1; }
      [ "$rc" -ne 124 ] || { echo "$mode: mpirun hung (killed by timeout)" >&2; cat "$dir/$mode.err" >&2; exit 1; }
      [ "$took_ms" -lt 20000 ] || { echo "$mode: took ${took_ms} ms to fail" >&2; exit 1; }
      if [ "$mode" = throw ]; then
        grep -q "^comm_mpi_check: error: rank $((np - 1)) of $np: rank fails on purpose" "$dir/$mode.err" ||
          { echo "throw: no error line naming the rank:" >&2; cat "$dir/$mode.err" >&2; exit 1; }
      fi
      echo "$mode: mpirun exited with $rc after ${took_ms} ms"
    done
    ;;
  *) echo "usage: $0 CHECK collectives|failures NP" >&2; exit 2 ;;
esac
echo ok
