#pragma once
// What the text commands (generate, chat) share: a model with its tokenizer, and their flags.
#include <string>

#include <CLI/CLI.hpp>

#include "moge/infer/generator.h"
#include "moge/infer/sampler.h"
#include "moge/model/model.h"
#include "moge/tokenizer/tokenizer.h"

namespace moge::cli {

struct LoadedModel {
  tokenizer::Tokenizer tok;
  model::Model model;
};

// Loads DIR's tokenizer and weights, computing in `dtype` (f32 or bf16).
LoadedModel load_model(const std::string& dir, const std::string& dtype);
// Error naming DIR when the tokenizer has more pieces than the model's vocabulary.
void check_tokenizer_fits(const std::string& dir, const tokenizer::Tokenizer& tok, const model::Model& model);
void add_sampling_options(CLI::App* cmd, infer::SamplerConfig& s);
void print_stats(const infer::GenerationStats& stats);  // one line on stderr

}  // namespace moge::cli
