// model::ModelConfig: the HF config.json of Pangu Pro MoE and its validation.
#include <gtest/gtest.h>

#include "moge/core/error.h"
#include "moge/model/config.h"
#include "test_util.h"

namespace moge::model {
namespace {

TEST(ModelConfig, PanguProMoeParameterCountsMatchThePaper) {
  ModelConfig c = ModelConfig::from_file(test::source_path("tests/data/pangu_pro_moe/config.json"));
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_expert_groups, 8);  // no group key: one expert a group
  EXPECT_EQ(c.routing_mode, moe::RoutingMode::grouped);
  EXPECT_EQ(c.moe_config().router.picks_per_group(), 1);
  // MOGE.md §3: 71.99B total, 16.50B active.
  EXPECT_EQ(c.total_parameters(), 71'988'781'056);
  EXPECT_EQ(c.active_parameters(), 16'498'139'136);
}

// Each broken config must fail with a message naming the field.
void expect_error(const std::string& json, const std::string& field) {
  try {
    ModelConfig::from_json_text(json, "cfg.json");
    ADD_FAILURE() << "no error for " << json;
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("cfg.json"), std::string::npos) << what;
    EXPECT_NE(what.find(field), std::string::npos) << "expected '" << field << "' in: " << what;
  }
}

std::string tiny(const std::string& extra) {
  return R"({"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 4,
             "moe_intermediate_size": 8)" + extra + "}";
}

TEST(ModelConfig, TinyConfigIsValid) {
  ModelConfig c = ModelConfig::from_json_text(tiny(""), "cfg.json");
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.num_expert_groups, 4);
  // By hand: embeddings 2*100*16 + norm 16; a layer: q,o 2*(256+16), k,v 2*(16*8+8), norms 32,
  // router 8*16+8; experts 3*16*8 = 384 each.
  const int64_t layer = 2 * (256 + 16) + 2 * (128 + 8) + 32 + 136;
  EXPECT_EQ(c.total_parameters(), 3216 + 2 * (layer + 8 * 384));
  EXPECT_EQ(c.active_parameters(), 3216 + 2 * (layer + 4 * 384));
}

TEST(ModelConfig, BadConfigsNameTheField) {
  expect_error("{not json", "invalid JSON");
  expect_error("[1, 2]", "JSON object");
  expect_error(R"({"hidden_size": 16})", "vocab_size");
  expect_error(tiny(R"(, "hidden_act": "gelu")"), "hidden_act");
  expect_error(tiny(R"(, "num_expert_groups": 3)"), "num_experts");
  expect_error(tiny(R"(, "num_expert_groups": 8, "num_experts_per_tok": 4)"), "top_k");
  expect_error(tiny(R"(, "routing_mode": "random")"), "random");
  expect_error(tiny(R"(, "rms_norm_eps": -1)"), "rms_norm_eps");
  expect_error(tiny(R"(, "num_key_value_heads": 3)"), "num_key_value_heads");
  expect_error(tiny(R"(, "head_dim": 5)"), "head_dim");
  expect_error(tiny(R"(, "moe_intermediate_size": "big")"), "moe_intermediate_size");
  expect_error(tiny(R"(, "moe_intermediate_size": 0)"), "moe_intermediate_size");
  expect_error(tiny(R"(, "routing_mode": "group_limited", "topk_group": 0)"), "topk_group");
  expect_error(R"({"vocab_size": 100, "hidden_size": 15, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_experts": 8, "num_experts_per_tok": 4, "moe_intermediate_size": 8})",
               "hidden_size");
}

TEST(ModelConfig, MissingFileNamesThePath) {
  try {
    ModelConfig::from_file("/nonexistent/config.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/config.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace moge::model
