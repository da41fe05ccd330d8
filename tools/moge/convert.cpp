// `moge convert`: re-writes a float checkpoint with its GEMM weights in bf16, int8 (W8A8) or
// int4 (W4A8, blocks of 32); layout in docs/quantization.md.
#include <omp.h>

#include <cstdio>

#include "commands.h"
#include "moge/core/error.h"
#include "moge/model/convert.h"

namespace moge::cli {

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string model, out, type;
    double shard_gb = 2.0;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("convert", "write a checkpoint with bf16, int8 or int4 weights");
  cmd->add_option("-m,--model", a->model, "input model directory (float safetensors)")->required();
  cmd->add_option("-o,--out", a->out, "output model directory")->required();
  cmd->add_option("--type", a->type, "bf16, int8 (W8A8: per-channel int8 weights) or int4 (blocks of 32)")->required();
  cmd->add_option("--shard-size", a->shard_gb, "largest shard, GB")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  cmd->callback([a] {
    if (a->threads > 0) omp_set_num_threads(a->threads);
    const kernels::WeightFormat format = kernels::parse_weight_format(a->type);
    check(a->shard_gb > 0, "--shard-size must be positive");
    const model::ConvertStats s =
        model::convert_checkpoint(a->model, a->out, format, size_t(a->shard_gb * 1e9));
    std::printf("%s: %lld tensors, %lld GEMM weights in %s%s; %.3f GB -> %.3f GB\n", a->out.c_str(),
                static_cast<long long>(s.tensors), static_cast<long long>(s.quantized), a->type.c_str(),
                s.int8_fallback ? (" (" + std::to_string(s.int8_fallback) + " in int8: width not a multiple of 32)").c_str()
                                : "",
                s.in_bytes / 1e9, s.out_bytes / 1e9);
  });
}

}  // namespace moge::cli
