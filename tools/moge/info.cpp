// `moge info`: what a model directory holds: its shape and parameter counts.
#include <cstdio>

#include "commands.h"
#include "moge/model/config.h"

namespace moge::cli {

void add_info_command(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("info", "print a model's configuration and parameter counts");
  cmd->add_option("-m,--model", *dir, "model directory (or its config.json)")->required();
  cmd->callback([dir] {
    std::string path = *dir;
    if (path.size() < 5 || path.substr(path.size() - 5) != ".json") path += "/config.json";
    model::ModelConfig c = model::ModelConfig::from_file(path);
    moe::MoeConfig m = c.moe_config();
    std::printf("layers %d, hidden %d, heads %d (kv %d, head dim %d), vocab %lld\n", c.num_hidden_layers,
                c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, (long long)c.vocab_size);
    std::printf("experts %d in %d groups, top-%d (%s), expert width %d, shared width %d\n", m.router.num_experts,
                m.router.num_groups, m.router.top_k, moe::routing_mode_name(m.router.mode), m.expert_ff, m.shared_ff);
    std::printf("parameters: %lld total, %lld active per token\n", (long long)c.total_parameters(),
                (long long)c.active_parameters());
  });
}

}  // namespace moge::cli
