#pragma once
// Expert-parallel training (issue 5): the decoder's MoE blocks with each device computing only
// its own routed experts (a moe::Placement), the rest of the model data-parallel.
//
// Every device runs its own micro-batch of T tokens through a replica of the dense model
// (attention, norms, router, shared expert, embeddings: their gradients are summed over the
// devices by the trainer). In a MoE block, as in the paper's scheme (MOGE.md §4):
//   forward:  route the own T tokens (the aux loss is the micro-batch's, as on one device);
//             all-gather every device's tokens and routing; run the own experts on the rows
//             routed to them; reduce-scatter the weighted partial outputs (each device gets its
//             tokens' sum over all experts); add the shared expert of the own tokens.
//   backward: all-gather the output gradients; the own experts' backward over every device's
//             rows gives their whole weight gradient (no sum over devices needed) and partial
//             input and routing-weight gradients, reduce-scattered to the tokens' devices; then
//             the router's backward on the own tokens.
// So D devices with one micro-batch each compute what one process computes with the D
// micro-batches accumulated, up to the order of f32 sums.
//
// Every device must pass the same number of tokens (equal micro-batches).
#include <cstdint>
#include <vector>

#include "moge/moe/placement.h"
#include "moge/train/collectives.h"
#include "moge/train/decoder.h"

namespace moge::train {

class ExpertParallelTraining : public MoeTrainRunner {
 public:
  // comm.size() must equal placement.devices(); both must outlive this.
  ExpertParallelTraining(Collectives& comm, const moe::Placement& placement, int num_layers);

  float forward(int layer, const moe::MoeLayer& moe, const float* x, int64_t tokens, float* y,
                moe::MoeCache& cache) override;
  void backward(int layer, const moe::MoeLayer& moe, const float* x, moe::MoeCache& cache, const float* dy,
                float aux_grad, float* dx, moe::MoeWeights& grads) override;

  moe::ExpertRange own_experts() const { return own_; }

 private:
  // The rows of the (all-device) dispatch that this device's experts serve.
  moe::RowRange own_rows(const moe::MoeCache& cache) const;

  Collectives& comm_;
  const moe::Placement& placement_;
  moe::ExpertRange own_;
  // Per layer, from forward to backward: every device's routing (the cache's own routing stays
  // the device's tokens'; its dispatch becomes the all-device one).
  std::vector<moe::Routing> all_routing_;
  // Scratch.
  std::vector<float> all_rows_, partial_, slice_, all_d_weight_;
};

}  // namespace moge::train
