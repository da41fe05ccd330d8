#!/usr/bin/env bash
# The MPI back end of parallel::Comm under mpirun (tests/comm_mpi_check.cpp).
#   comm_mpi_test.sh CHECK collectives NP   every collective checked on NP ranks
#   comm_mpi_test.sh CHECK failures NP      a rank that throws, and one that dies, make mpirun
#                                           exit non-zero within seconds (never a hang)
set -euo pipefail
check=$1 what=$2 np=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# Open MPI in a container, possibly as root, without a network: local shared memory only; ranks
# waiting in a collective yield the core (this machine may have fewer free cores than ranks).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
export OMPI_MCA_mpi_yield_when_idle=1
# Under ASan: Open MPI's own allocations are suppressed (tests/lsan.supp), and their stacks need
# the slow unwinder to reach the libraries it names (see tests/cli/train_mpi_test.sh).
src=$(cd "$(dirname "$0")/../.." && pwd)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
case "${LSAN_OPTIONS:-}" in
  *suppressions=*) ;;
  *) export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$src/tests/lsan.supp" ;;
esac
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
