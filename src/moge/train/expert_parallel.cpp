#include "moge/train/expert_parallel.h"

#include <algorithm>

#include "moge/core/buffer.h"
#include "moge/core/error.h"
#include "moge/kernels/add.h"
#include "moge/moe/balance.h"
#include "moge/moe/dispatch.h"

namespace moge::train {

using kernels::add_into;

ExpertParallelTraining::ExpertParallelTraining(Collectives& comm, const moe::Placement& placement, int num_layers)
    : comm_(comm), placement_(placement), all_routing_(size_t(num_layers)) {
  check(comm.size() == placement.devices(), "expert-parallel training: " + std::to_string(comm.size()) +
                                                " ranks for a placement on " + std::to_string(placement.devices()) +
                                                " devices");
  own_ = placement.experts(comm.rank());
}

moe::RowRange ExpertParallelTraining::own_rows(const moe::MoeCache& c) const {
  return {c.dispatch.offsets[size_t(own_.begin)], c.dispatch.offsets[size_t(own_.end)]};
}

float ExpertParallelTraining::forward(int layer, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
                                      moe::MoeCache& c) {
  const moe::MoeConfig& cfg = moe.config();
  const int d = cfg.d_model, k = cfg.router.top_k, n = cfg.router.num_experts, devices = comm_.size();
  check(n == placement_.num_experts(), "expert-parallel training: the model has " + std::to_string(n) +
                                           " experts, the placement " + std::to_string(placement_.num_experts()));
  // Equal micro-batches on every device, or the gathers below would mix up tokens. Checked in the
  // first block of a forward only: the later blocks get the same tokens.
  if (layer == 0) {
    const int32_t mine = int32_t(tokens);
    std::vector<int32_t> counts(static_cast<size_t>(devices));
    comm_.all_gather(&mine, 1, counts.data());
    for (int p = 0; p < devices; ++p)
      check(counts[size_t(p)] == mine, "expert-parallel training: device " + std::to_string(p) + " has " +
                                           std::to_string(counts[size_t(p)]) + " tokens in a MoE block, device " +
                                           std::to_string(comm_.rank()) + " " + std::to_string(mine));
  }

  moe.route(x, tokens, c.routing);
  c.aux_loss = cfg.aux_alpha > 0 ? moe::aux_loss(c.routing, n, cfg.aux_alpha) : 0.0f;

  // Every device's tokens and routing (device-major: device p's token t is row p·T + t).
  const int64_t all_tokens = tokens * devices;
  moe::Routing& all = all_routing_.at(size_t(layer));
  all.tokens = all_tokens, all.top_k = k;
  all.expert.resize(size_t(all_tokens * k)), all.weight.resize(size_t(all_tokens * k));
  comm_.all_gather(x, tokens * d, sized(all_rows_, all_tokens * d));
  comm_.all_gather(c.routing.expert.data(), tokens * k, all.expert.data());
  comm_.all_gather(c.routing.weight.data(), tokens * k, all.weight.data());
  c.dispatch = moe::make_dispatch(all, n);

  // The own experts on their rows; their weighted outputs into every token's partial sum.
  const moe::RowRange rows = own_rows(c);
  float* xs = sized(c.xs, (rows.end - rows.begin) * d);
  float* ye = sized(c.ye, (rows.end - rows.begin) * d);
  moe::gather_rows(c.dispatch, all_rows_.data(), d, xs, rows);
  moe.run_experts(xs, ye, c, own_.begin, own_.end);
  partial_.assign(size_t(all_tokens * d), 0.0f);
  moe::combine_rows(c.dispatch, ye, all.weight.data(), d, partial_.data(), rows);
  comm_.reduce_scatter_sum(partial_.data(), y, tokens * d);

  float* shared = sized(slice_, tokens * d);
  moe.run_shared(x, tokens, shared, c);
  add_into(y, shared, tokens * d);
  return c.aux_loss;
}

void ExpertParallelTraining::backward(int layer, const moe::MoeLayer& moe, const float* x, moe::MoeCache& c,
                                      const float* dy, float aux_grad, float* dx, moe::MoeWeights& grads) {
  const moe::MoeConfig& cfg = moe.config();
  const int d = cfg.d_model, k = cfg.router.top_k;
  const int64_t tokens = c.routing.tokens, all_tokens = tokens * comm_.size();
  const moe::Routing& all = all_routing_.at(size_t(layer));
  moe.backward_shared(x, tokens, c, dy, dx, grads);

  // Every device's output gradients through the own experts.
  float* all_dy = sized(all_rows_, all_tokens * d);
  comm_.all_gather(dy, tokens * d, all_dy);
  const moe::RowRange rows = own_rows(c);
  float* d_ye = sized(c.d_ye, (rows.end - rows.begin) * d);
  float* d_xs = sized(c.d_xs, (rows.end - rows.begin) * d);
  float* all_d_weight = sized(all_d_weight_, all_tokens * k);  // 0 for the entries of other devices' experts
  moe::combine_rows_backward(c.dispatch, c.ye.data(), all.weight.data(), all_dy, d, d_ye, all_d_weight, rows);
  moe.backward_experts(c.xs.data(), d_ye, d_xs, c, own_.begin, own_.end, grads);

  // Input and routing-weight gradients back to the tokens' devices.
  partial_.assign(size_t(all_tokens * d), 0.0f);
  moe::scatter_add_rows(c.dispatch, d_xs, d, partial_.data(), rows);
  float* routed_dx = sized(slice_, tokens * d);
  comm_.reduce_scatter_sum(partial_.data(), routed_dx, tokens * d);
  add_into(dx, routed_dx, tokens * d);
  float* d_weight = sized(c.d_weight, tokens * k);
  comm_.reduce_scatter_sum(all_d_weight, d_weight, tokens * k);

  moe.backward_router(x, c.routing, d_weight, aux_grad, dx, grads, c);
}

}  // namespace moge::train
