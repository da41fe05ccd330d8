// `moge train`: trains a MoGE (or top-k / group-limited MoE) model on token shards from
// `moge data`; checkpoints in the Hugging Face layout that `moge generate` loads.
// With --mpi (under mpirun): data-parallel, each rank runs its share of the step's micro-batches
// and the gradients are summed over the ranks; rank 0 prints, logs and writes the checkpoints.
// With --devices D (in-process devices) or --devices mpi: the same, and expert-parallel too:
// each device computes and updates only its own routed experts (train/expert_parallel.h).
#include <omp.h>

#include <cstdio>
#include <exception>
#include <string>

#include "commands.h"
#include "devices.h"
#include "moge/core/error.h"
#include "moge/parallel/mpi_comm.h"
#include "moge/train/trainer.h"

namespace moge::cli {

namespace {

using CollectivesOver = train::CollectivesOver<parallel::Comm>;

void print_result(const std::string& out_dir, const train::RunResult& r) {
  std::printf("%s: %lld steps, loss %.4f, validation loss %.4f, %.0f tokens/s\n", out_dir.c_str(),
              static_cast<long long>(r.steps_done), r.last_loss, r.last_val_loss, r.tokens_per_second);
}

// One MPI rank's run. A rank that fails prints its error on one line and ends every rank
// (MPI_Abort): the others would otherwise wait forever in their next all-reduce.
void run_mpi(train::RunOptions run) {
  parallel::MpiSession session;
  int rank = 0, size = 1;
  try {
    parallel::MpiComm mpi;
    rank = mpi.rank(), size = mpi.size();
    CollectivesOver comm(mpi);
    run.comm = &comm;
    if (rank != 0) run.quiet = true;
    const train::RunResult r = train::run_training(run);
    mpi.barrier();  // rank 0 may still be writing the last checkpoint
    if (rank == 0) print_result(run.out_dir, r);
  } catch (const std::exception& e) {
    const bool ours = dynamic_cast<const Error*>(&e) != nullptr;
    const std::string where = size > 1 ? "rank " + std::to_string(rank) + " of " + std::to_string(size) + ": " : "";
    std::fflush(stdout);
    std::fprintf(stderr, "moge: %s: %s%s\n", ours ? "error" : "internal error", where.c_str(), e.what());
    std::fflush(stderr);
    parallel::abort_world(ours ? 1 : 2);
  }
}

}  // namespace

void add_train_command(CLI::App& app) {
  struct Args {
    train::RunOptions run;
    int threads = 0;
    bool mpi = false;
    std::string devices;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("train", "train a model (AdamW, warmup + cosine, checkpoints, resume)");
  cmd->add_option("--config", a->run.config_path, "run config: {\"model\": {HF config}, \"train\": {...}}")->required();
  cmd->add_option("--data", a->run.data_dir, "token shards from `moge data` (train.bin, val.bin, meta.json)")
      ->required();
  cmd->add_option("-o,--out", a->run.out_dir, "run directory (checkpoints, log.jsonl, plots)")->required();
  cmd->add_option("--tokenizer", a->run.tokenizer_dir, "tokenizer directory (default: the one in meta.json)");
  cmd->add_option("--init", a->run.init_from, "start from this checkpoint instead of a random init");
  cmd->add_flag("--resume", a->run.resume, "continue the run in --out from its latest checkpoint");
  cmd->add_option("--stop-after", a->run.stop_after, "stop after this step (with a checkpoint)");
  cmd->add_flag("-q,--quiet", a->run.quiet, "no progress bar");
  cmd->add_option("-t,--threads", a->threads, "threads per process (default: all cores)");
  cmd->add_flag("--mpi", a->mpi,
                "data-parallel over the ranks of mpirun: train.grad_accum (a multiple of the ranks) is split "
                "among them, gradients are summed; rank 0 logs and writes checkpoints");
  cmd->add_option("--devices", a->devices,
                  "expert-parallel (and data-parallel) over D in-process devices, or 'mpi' (one device a rank, "
                  "under mpirun): each device computes and updates only its own routed experts");
  cmd->callback([a] {
    if (a->threads > 0) omp_set_num_threads(a->threads);
    const DevicesSpec devices = parse_devices(a->devices);
    check(!(a->mpi && devices.kind != DevicesSpec::Kind::single), "--mpi and --devices: choose one");
    if (a->mpi) return run_mpi(a->run);
    if (devices.kind != DevicesSpec::Kind::single) {
      run_on(devices, a->threads, [&](parallel::Comm* comm, int device) {
        CollectivesOver collectives(*comm);
        train::RunOptions run = a->run;
        run.comm = &collectives;
        run.expert_parallel = true;
        run.quiet = run.quiet || device != 0;
        const train::RunResult r = train::run_training(run);
        comm->barrier();  // device 0 may still be writing the last checkpoint
        if (device == 0) print_result(run.out_dir, r);
      });
      return;
    }
    print_result(a->run.out_dir, train::run_training(a->run));
  });
}

}  // namespace moge::cli
