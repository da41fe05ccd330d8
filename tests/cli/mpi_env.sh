# Sourced by the tests that run mpirun (comm_mpi_test.sh, train_mpi_test.sh,
# expert_parallel_test.sh): Open MPI in a container, possibly as root, without a network (local
# shared memory only), ranks waiting in a collective yielding the core (this machine may have
# fewer free cores than ranks: 0.5 s a training step spinning, 0.016 s yielding, on 2 busy
# cores). Under ASan: Open MPI's own allocations are suppressed by tests/lsan.supp (make
# test-asan passes it; a plain ctest gets it here), and their stacks need the slow unwinder to
# reach the libraries it names. Both are ignored by a build without sanitizers.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
export OMPI_MCA_mpi_yield_when_idle=1
mpi_env_src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
case "${LSAN_OPTIONS:-}" in
  *suppressions=*) ;;
  *) export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$mpi_env_src/tests/lsan.supp" ;;
esac
