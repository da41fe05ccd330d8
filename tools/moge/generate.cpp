// `moge generate`: text in, streamed text out, llama.cpp style flags. Timings go to stderr.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "moge/core/error.h"
#include "moge/infer/sampler.h"
#include "moge/model/model.h"
#include "moge/tokenizer/tokenizer.h"

namespace moge::cli {

namespace {
struct GenerateArgs {
  std::string model, prompt, dtype = "f32";
  int n_predict = 64, threads = 0, context = 4096;
  bool json = false;
  infer::SamplerConfig sampling;
};

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run_generate(GenerateArgs& a) {
  if (a.threads > 0) omp_set_num_threads(a.threads);
  check(a.n_predict >= 0, "-n must be >= 0");
  infer::Sampler sampler(a.sampling);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(a.model);
  model::Model m = model::Model::load(a.model);
  m.set_compute_dtype(parse_dtype(a.dtype));
  check(tok.vocab_size() <= m.config().vocab_size,
        a.model + ": tokenizer has " + std::to_string(tok.vocab_size()) + " pieces, the model " +
            std::to_string(m.config().vocab_size));

  std::vector<int32_t> tokens = tok.encode(a.prompt, tok.bos_id() >= 0);
  check(!tokens.empty(), "-p: the prompt encodes to no tokens");
  model::KvCache cache(m.config(), std::min<int64_t>(a.context, int64_t(tokens.size()) + a.n_predict));
  std::vector<float> logits(m.config().vocab_size);

  auto t0 = std::chrono::steady_clock::now();
  m.forward(tokens.data(), int64_t(tokens.size()), cache, logits.data(), 1);
  const double prefill_s = since(t0);

  tokenizer::StreamDecoder stream(tok);
  std::string text;
  const size_t prompt_tokens = tokens.size();
  auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < a.n_predict; ++i) {
    int32_t next = sampler.sample(logits.data(), m.config().vocab_size, tokens);
    tokens.push_back(next);
    if (tok.is_eos(next)) break;
    std::string piece = next < tok.vocab_size() ? stream.push(next) : "";
    text += piece;
    if (!a.json) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }
    if (i + 1 == a.n_predict || cache.length >= cache.capacity) break;
    m.forward(&next, 1, cache, logits.data());
  }
  std::string tail = stream.finish();
  text += tail;
  const double decode_s = since(t1);
  const size_t generated = tokens.size() - prompt_tokens;
  if (a.json) {
    nlohmann::json j = {{"prompt", a.prompt},
                        {"text", text},
                        {"prompt_tokens", prompt_tokens},
                        {"prompt_token_ids", std::vector<int32_t>(tokens.begin(), tokens.begin() + prompt_tokens)},
                        {"generated_tokens", generated},
                        {"tokens", std::vector<int32_t>(tokens.begin() + prompt_tokens, tokens.end())},
                        {"prefill_tokens_per_s", prompt_tokens / prefill_s},
                        {"decode_tokens_per_s", generated / decode_s}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s\n", tail.c_str());
    std::fprintf(stderr, "\nprompt: %zu tokens, %.1f tok/s; generated: %zu tokens, %.1f tok/s\n", prompt_tokens,
                 prompt_tokens / prefill_s, generated, generated / decode_s);
  }
}
}  // namespace

void add_sampling_options(CLI::App* cmd, infer::SamplerConfig& s) {
  cmd->add_option("--temp", s.temperature, "temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-k", s.top_k, "top-k sampling (0 = off)")->capture_default_str();
  cmd->add_option("--top-p", s.top_p, "top-p (nucleus) sampling (1 = off)")->capture_default_str();
  cmd->add_option("--repeat-penalty", s.repetition_penalty, "repetition penalty (1 = off)")->capture_default_str();
  cmd->add_option("--repeat-last-n", s.penalty_window, "tokens the penalty looks back on")->capture_default_str();
  cmd->add_option("-s,--seed", s.seed, "random seed")->capture_default_str();
}

void add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  cmd->add_option("-m,--model", a->model, "model directory (config.json, safetensors, tokenizer.model)")->required();
  cmd->add_option("-p,--prompt", a->prompt, "prompt text")->required();
  cmd->add_option("-n,--n-predict", a->n_predict, "tokens to generate")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)");
  cmd->add_option("-c,--ctx-size", a->context, "context size (KV cache positions)")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "compute dtype: f32 or bf16")->capture_default_str();
  cmd->add_flag("--json", a->json, "print one JSON object instead of streaming");
  add_sampling_options(cmd, a->sampling);
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace moge::cli
