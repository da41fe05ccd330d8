#pragma once
// ParallelPlan: how one serving unit of D devices splits a model (MOGE.md §4). Attention runs
// data-parallel × tensor-parallel, routed experts expert-parallel × tensor-parallel, the shared
// expert data-parallel × tensor-parallel; each part's degrees multiply to the same D.
//   parse("attn=dp2tp4,experts=ep4tp2,shared=tp8")   the paper's plan on 8 devices
// A part left out runs on all D devices: attention and experts data/expert parallel, the shared
// expert tensor parallel; "" is the one-device plan.
#include <string>

#include "moge/model/config.h"
#include "moge/sim/hardware.h"

namespace moge::sim {

struct ParallelPlan {
  int attn_dp = 1, attn_tp = 1;
  int expert_ep = 1, expert_tp = 1;
  int shared_dp = 1, shared_tp = 1;

  int devices() const { return attn_dp * attn_tp; }
  std::string to_string() const;  // canonical form of parse()'s syntax

  // Throws Error naming the plan and the part at fault (unknown part or degree, degrees whose
  // products differ).
  static ParallelPlan parse(const std::string& text);

  // Throws Error when the plan cannot run `config` on `profile`: more devices than the profile
  // has, or a degree that does not divide what it splits (heads, experts, MoGE groups, widths).
  void validate(const model::ModelConfig& config, const HardwareProfile& profile) const;
};

}  // namespace moge::sim
