// `moge logits`: f32 logits [T, vocab] of a token sequence, as NumPy .npy, for verification by
// anyone with NumPy.
#include <omp.h>

#include <sstream>

#include "commands.h"
#include "devices.h"
#include "moge/core/error.h"
#include "moge/core/npy.h"
#include "moge/model/model.h"

namespace moge::cli {

namespace {
struct LogitsArgs {
  std::string model, tokens, out, dtype = "f32", devices, dispatch;
  int threads = 0;
};

std::vector<int32_t> parse_ids(const std::string& text) {
  std::istringstream in(text);
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    try {
      size_t used = 0;
      long long v = std::stoll(word, &used);
      check(used == word.size() && v >= 0 && v <= INT32_MAX, "");
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      throw Error("--tokens: '" + word + "' is not a token id");
    }
  }
  check(!ids.empty(), "--tokens: no token ids given");
  return ids;
}
}  // namespace

void add_logits_command(CLI::App& app) {
  auto a = std::make_shared<LogitsArgs>();
  CLI::App* cmd = app.add_subcommand("logits", "write the logits of a token sequence as .npy");
  cmd->add_option("-m,--model", a->model, "model directory (config.json + safetensors)")->required();
  cmd->add_option("--tokens", a->tokens, "token ids, space-separated")->required();
  cmd->add_option("-o,--output", a->out, "output .npy file")->required();
  add_weight_type_option(cmd, a->dtype);
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  add_devices_options(cmd, a->devices, a->dispatch);
  cmd->callback([a] {
    if (a->threads > 0) omp_set_num_threads(a->threads);
    auto ids = parse_ids(a->tokens);
    const DevicesSpec spec = parse_devices(a->devices);
    const kernels::WeightFormat format = kernels::parse_weight_format(a->dtype);
    run_on(spec, a->threads, [&](parallel::Comm* comm, int device) {
      DeviceModel dm(a->model, format, comm, a->dispatch);
      const model::Model& m = dm.model();
      model::KvCache cache(m.config(), int64_t(ids.size()));
      Tensor logits({int64_t(ids.size()), m.config().vocab_size});
      m.forward(ids.data(), int64_t(ids.size()), cache, logits.f32());
      if (device == 0) write_npy(a->out, logits.f32(), logits.shape());
    });
  });
}

}  // namespace moge::cli
