// `moge chat`: an interactive conversation in the Pangu chat template. Each turn re-renders the
// whole conversation; the generator reuses the KV cache for the prefix it already holds.
#include <omp.h>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "moge/core/error.h"
#include "moge/tokenizer/chat_template.h"
#include "text_model.h"

namespace moge::cli {

namespace {
struct ChatArgs {
  std::string model, system, dtype = "f32";
  int n_predict = 512, threads = 0, context = 4096;
  infer::SamplerConfig sampling;
};

void run_chat(ChatArgs& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  infer::Sampler sampler(a.sampling);
  LoadedModel lm = load_model(a.model, a.dtype);
  infer::Generator gen(lm.model, a.context);
  std::vector<tokenizer::Message> messages;
  if (!a.system.empty()) messages.push_back({"system", a.system});

  std::fprintf(stderr, "moge chat: %s. Type a message; an empty line or end of input quits.\n", a.model.c_str());
  for (std::string line;;) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line.empty()) break;
    messages.push_back({"user", line});
    gen.set_context(lm.tok.encode(tokenizer::pangu_chat_prompt(messages), false));
    tokenizer::StreamDecoder stream(lm.tok);
    std::string reply;
    gen.generate(
        sampler, a.n_predict, [&](int32_t id) { return lm.tok.is_eos(id) || lm.tok.is_special(id); },
        [&](int32_t id) {
          std::string piece = stream.push(id);
          reply += piece;
          std::fputs(piece.c_str(), stdout);
          std::fflush(stdout);
          return true;
        });
    std::string tail = stream.finish();
    reply += tail;
    std::printf("%s\n", tail.c_str());
    print_stats(gen.stats());
    messages.push_back({"assistant", reply});
  }
}
}  // namespace

void add_chat_command(CLI::App& app) {
  auto a = std::make_shared<ChatArgs>();
  CLI::App* cmd = app.add_subcommand("chat", "chat interactively (Pangu chat template)");
  cmd->add_option("-m,--model", a->model, "model directory (config.json, safetensors, tokenizer.model)")->required();
  cmd->add_option("--system", a->system, "system prompt");
  cmd->add_option("-n,--n-predict", a->n_predict, "most tokens a reply")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  cmd->add_option("-c,--ctx-size", a->context, "context size (KV cache positions)")->capture_default_str();
  add_weight_type_option(cmd, a->dtype);
  add_sampling_options(cmd, a->sampling);
  cmd->callback([a] { run_chat(*a); });
}

}  // namespace moge::cli
