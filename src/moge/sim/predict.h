#pragma once
// predict(): the time of a prefill step and of a decode step of a model on one serving unit
// (a ParallelPlan over D devices of a HardwareProfile), per operator class on the slowest
// device, the throughput per device, and the memory each device needs. The step's structure
// (MOGE.md §4): attention DP×TP, then every device gathers all tokens, routes them and runs its
// experts (EP×TP) and its shard of the shared expert, and the partial outputs are reduce-
// scattered back. Equations in docs/simulator.md.
#include <cstdint>
#include <string>

#include "moge/model/config.h"
#include "moge/sim/cost.h"
#include "moge/sim/hardware.h"
#include "moge/sim/load.h"
#include "moge/sim/plan.h"

namespace moge::sim {

struct Workload {
  int64_t batch = 1;          // sequences decoding together on the unit
  int64_t prefill_batch = 0;  // sequences a prefill step takes (0: one per attention DP group)
  int64_t prompt = 2048;      // L: prompt tokens a sequence
  int64_t gen = 128;          // G: generated tokens a sequence
  WeightType weights = WeightType::bf16;  // attention, experts, shared expert; embeddings and
                                          // router stay bf16
  WeightType lm_head = WeightType::bf16;  // bf16 in the W8A8 release; moge quantizes it with the rest
  int kv_bytes = 2;           // bytes a KV cache element (bf16 2, int8 1)
  // Hide each layer's collectives behind its routed and shared experts (the paper's overlap of
  // communication with grouped matmul): only comm − (experts + shared), if positive, is exposed.
  bool overlap_comm = false;
};

// Seconds a step spends per operator class on the slowest device (all layers).
struct Breakdown {
  double attention = 0;  // QKV and O projections, attention core
  double experts = 0;    // router and routed experts
  double shared = 0;     // shared expert
  double comm = 0;       // collectives (the exposed part when overlapped)
  double lm_head = 0;
  // Memory-bound element-wise kernels between the matmuls: the two RMSNorms, RoPE, the residual
  // adds, the router's softmax and top-k, the permutation of rows to experts and back, SwiGLU.
  double elementwise = 0;
  double total() const { return attention + experts + shared + comm + lm_head + elementwise; }
};

struct StepPrediction {
  int64_t sequences = 0;
  int64_t tokens = 0;           // tokens the step processes on the whole unit
  double context = 0;           // decode: mean context length over the generation
  double seconds = 0;           // step time (prefill: the time to first token)
  double tokens_per_s_per_device = 0;
  double max_expert_pairs = 0;  // per layer, on the busiest device
  double mean_expert_pairs = 0;
  Breakdown time;
};

// Bytes a device needs; fits() compares them with the capacity.
struct MemoryUse {
  double weights = 0, kv_cache = 0, activations = 0, reserved = 0, capacity = 0;
  double total() const { return weights + kv_cache + activations + reserved; }
  bool fits() const { return total() <= capacity; }
};

struct Prediction {
  std::string model, profile, plan;
  int devices = 0;
  int devices_per_card = 1;
  StepPrediction prefill, decode;
  MemoryUse memory;
  bool in_cache = false;  // weights and KV cache fit the profile's cache: streamed at its bandwidth
};

// Validates the plan against the model and profile (Error naming what is wrong) and predicts.
// Memory that does not fit is reported in memory.fits(), not thrown: see check_memory_fit().
Prediction predict(const model::ModelConfig& config, const HardwareProfile& profile, const ParallelPlan& plan,
                   const Workload& workload, const LoadModel& load);

// Throws Error with the per-device breakdown when prediction.memory does not fit.
void check_memory_fit(const Prediction& prediction);

}  // namespace moge::sim
