#include "moge/model/config.h"

#include <sstream>

#include <nlohmann/json.hpp>

#include "moge/core/error.h"
#include "moge/core/file.h"

namespace moge::model {
namespace {

using nlohmann::json;

// Reads key from j as T; `required` keys must be present. Errors name the source and the key.
class Fields {
 public:
  Fields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  template <class T>
  T get(const char* key, T fallback, bool required) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      check(!required, source_ + ": missing field '" + key + "'");
      return fallback;
    }
    try {
      if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        check(it->is_number_integer(), source_ + ": field '" + key + "' must be an integer");
        return it->get<T>();
      } else {
        return it->get<T>();
      }
    } catch (const json::exception&) {
      throw Error(source_ + ": field '" + key + "' has the wrong type (" + it->type_name() + ")");
    }
  }

  void positive(const char* key, double v) const {
    check(v > 0, source_ + ": field '" + key + "' must be positive (got " + num(v) + ")");
  }
  void fail(const std::string& what) const { throw Error(source_ + ": " + what); }

  static std::string num(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }

 private:
  const json& j_;
  std::string source_;
};

}  // namespace

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(source + ": invalid JSON: " + e.what());
  }
  check(j.is_object(), source + ": expected a JSON object");
  Fields f(j, source);
  ModelConfig c;
  c.vocab_size = f.get<int64_t>("vocab_size", 0, true);
  c.hidden_size = f.get<int>("hidden_size", 0, true);
  c.num_hidden_layers = f.get<int>("num_hidden_layers", 0, true);
  c.num_attention_heads = f.get<int>("num_attention_heads", 0, true);
  c.num_key_value_heads = f.get<int>("num_key_value_heads", c.num_attention_heads, false);
  c.num_experts = f.get<int>("num_experts", 0, true);
  c.num_experts_per_tok = f.get<int>("num_experts_per_tok", 0, true);
  c.moe_intermediate_size = f.get<int>("moe_intermediate_size", 0, true);
  c.shared_expert_intermediate_size = f.get<int>("shared_expert_intermediate_size", 0, false);
  c.rms_norm_eps = f.get<float>("rms_norm_eps", 1e-5f, false);
  c.rope_theta = f.get<double>("rope_theta", 1.6e7, false);
  c.max_position_embeddings = f.get<int64_t>("max_position_embeddings", 32768, false);
  c.tie_word_embeddings = f.get<bool>("tie_word_embeddings", false, false);
  c.router_aux_loss_coef = f.get<float>("router_aux_loss_coef", 0.0f, false);
  c.num_expert_groups = f.get<int>("num_expert_groups", c.num_experts_per_tok, false);
  try {
    c.routing_mode = moe::parse_routing_mode(f.get<std::string>("routing_mode", "grouped", false));
  } catch (const Error& e) {
    f.fail(std::string("field 'routing_mode': ") + e.what());
  }
  c.norm_topk_prob = f.get<bool>("norm_topk_prob", false, false);
  c.topk_group = f.get<int>("topk_group", 0, false);

  const std::string act = f.get<std::string>("hidden_act", "silu", false);
  if (act != "silu") f.fail("field 'hidden_act' is '" + act + "'; only silu is supported");

  f.positive("vocab_size", double(c.vocab_size));
  f.positive("hidden_size", c.hidden_size);
  f.positive("num_hidden_layers", c.num_hidden_layers);
  f.positive("num_attention_heads", c.num_attention_heads);
  f.positive("num_key_value_heads", c.num_key_value_heads);
  f.positive("moe_intermediate_size", c.moe_intermediate_size);
  f.positive("rms_norm_eps", c.rms_norm_eps);
  f.positive("rope_theta", c.rope_theta);
  f.positive("max_position_embeddings", double(c.max_position_embeddings));
  if (c.shared_expert_intermediate_size < 0) f.fail("field 'shared_expert_intermediate_size' must not be negative");
  if (c.router_aux_loss_coef < 0) f.fail("field 'router_aux_loss_coef' must not be negative");

  c.head_dim = f.get<int>("head_dim", 0, false);
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_attention_heads != 0)
      f.fail("field 'hidden_size' (" + std::to_string(c.hidden_size) + ") is not divisible by 'num_attention_heads' (" +
             std::to_string(c.num_attention_heads) + ")");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  f.positive("head_dim", c.head_dim);
  if (c.head_dim % 2 != 0) f.fail("field 'head_dim' (" + std::to_string(c.head_dim) + ") must be even for RoPE");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    f.fail("field 'num_attention_heads' (" + std::to_string(c.num_attention_heads) +
           ") is not a multiple of 'num_key_value_heads' (" + std::to_string(c.num_key_value_heads) + ")");

  try {
    c.moe_config().validate();
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) { return from_json_text(read_text_file(path), path); }

moe::MoeConfig ModelConfig::moe_config() const {
  moe::MoeConfig m;
  m.d_model = hidden_size;
  m.expert_ff = moe_intermediate_size;
  m.shared_ff = shared_expert_intermediate_size;
  m.aux_alpha = router_aux_loss_coef;
  m.router.num_experts = num_experts;
  m.router.num_groups = num_expert_groups;
  m.router.top_k = num_experts_per_tok;
  m.router.mode = routing_mode;
  m.router.renormalize = norm_topk_prob;
  m.router.topk_group = topk_group;
  return m;
}

namespace {
// Everything in a decoder layer except the routed experts.
int64_t layer_fixed_parameters(const ModelConfig& c) {
  const int64_t d = c.hidden_size;
  const int64_t attention = (d * c.q_dim() + c.q_dim()) + 2 * (d * c.kv_dim() + c.kv_dim()) + (c.q_dim() * d + d);
  const int64_t norms = 2 * d;
  const int64_t router = int64_t(c.num_experts) * d + c.num_experts;  // gate + router_scale
  const int64_t shared = 3 * d * c.shared_expert_intermediate_size;
  return attention + norms + router + shared;
}
int64_t expert_parameters(const ModelConfig& c) { return 3 * int64_t(c.hidden_size) * c.moe_intermediate_size; }
int64_t embedding_parameters(const ModelConfig& c) {
  return c.vocab_size * c.hidden_size * (c.tie_word_embeddings ? 1 : 2) + c.hidden_size;  // + final norm
}
}  // namespace

int64_t ModelConfig::total_parameters() const {
  return embedding_parameters(*this) +
         num_hidden_layers * (layer_fixed_parameters(*this) + num_experts * expert_parameters(*this));
}

int64_t ModelConfig::active_parameters() const {
  return embedding_parameters(*this) +
         num_hidden_layers * (layer_fixed_parameters(*this) + num_experts_per_tok * expert_parameters(*this));
}

}  // namespace moge::model
