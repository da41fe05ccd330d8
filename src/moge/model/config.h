#pragma once
// ModelConfig: a Pangu Pro MoE family model as its Hugging Face config.json describes it
// (MOGE.md §3), plus moge's optional routing keys. from_json() validates every field and throws
// moge::Error naming the file and the field.
#include <cstdint>
#include <string>

#include "moge/moe/config.h"

namespace moge::model {

struct ModelConfig {
  int64_t vocab_size = 0;
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // hidden_size / num_attention_heads unless given
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int moe_intermediate_size = 0;
  int shared_expert_intermediate_size = 0;  // 0 = no shared expert
  float rms_norm_eps = 1e-5f;
  double rope_theta = 1.6e7;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  float router_aux_loss_coef = 0.0f;
  // moge's own keys; absent, the Pangu semantics hold (one expert a group, grouped routing).
  int num_expert_groups = 0;
  moe::RoutingMode routing_mode = moe::RoutingMode::grouped;
  bool norm_topk_prob = false;
  int topk_group = 0;

  static ModelConfig from_json_text(const std::string& text, const std::string& source);
  static ModelConfig from_file(const std::string& path);

  moe::MoeConfig moe_config() const;
  int64_t kv_dim() const { return int64_t(num_key_value_heads) * head_dim; }
  int64_t q_dim() const { return int64_t(num_attention_heads) * head_dim; }

  // Parameters, both embedding matrices counted (once when tied).
  int64_t total_parameters() const;
  // Parameters a token touches: everything but the routed experts it does not choose.
  int64_t active_parameters() const;
};

}  // namespace moge::model
