#include "moge/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "moge/core/clock.h"
#include "moge/core/error.h"
#include "moge/core/file.h"
#include "moge/core/progress.h"
#include "moge/core/rng.h"
#include "moge/model/safetensors.h"
#include "moge/report/svg.h"
#include "moge/train/data.h"
#include "moge/train/decoder.h"
#include "moge/train/expert_parallel.h"
#include "moge/train/grad_clip.h"
#include "moge/train/optimizer.h"
#include "moge/train/schedule.h"

namespace moge::train {

namespace fs = std::filesystem;
using nlohmann::json;

TrainConfig TrainConfig::from_json(const json& j, const std::string& source) {
  check(j.is_object(), source + ": \"train\" must be an object");
  TrainConfig c;
  for (const auto& [key, value] : j.items()) {
    const std::string field = source + ": train." + key;
    auto integer = [&](auto& out, int64_t lo) {
      check(value.is_number_integer() && value.get<int64_t>() >= lo, field + " must be an integer >= " + std::to_string(lo));
      out = static_cast<std::remove_reference_t<decltype(out)>>(value.get<int64_t>());
    };
    auto real = [&](double& out, double lo, double hi) {
      check(value.is_number() && std::isfinite(value.get<double>()) && value.get<double>() >= lo &&
                value.get<double>() <= hi,
            field + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      out = value.get<double>();
    };
    if (key == "micro_batch") integer(c.micro_batch, 1);
    else if (key == "seq_len") integer(c.seq_len, 1);
    else if (key == "grad_accum") integer(c.grad_accum, 1);
    else if (key == "steps") integer(c.steps, 1);
    else if (key == "lr") real(c.lr, 0, 10);
    else if (key == "min_lr") real(c.min_lr, 0, 10);
    else if (key == "warmup") integer(c.warmup, 0);
    else if (key == "weight_decay") real(c.weight_decay, 0, 10);
    else if (key == "beta1") real(c.beta1, 0, 0.999999);
    else if (key == "beta2") real(c.beta2, 0, 0.999999);
    else if (key == "grad_clip") real(c.grad_clip, 0, 1e9);
    else if (key == "eval_every") integer(c.eval_every, 0);
    else if (key == "eval_batches") integer(c.eval_batches, 1);
    else if (key == "save_every") integer(c.save_every, 0);
    else if (key == "keep_checkpoints") integer(c.keep_checkpoints, 1);
    else if (key == "seed") integer(c.seed, 0);
    else if (key == "devices") integer(c.devices, 1);
    else throw Error(field + ": unknown key");
  }
  check(c.warmup <= c.steps, source + ": train.warmup must not exceed train.steps");
  check(c.min_lr <= c.lr, source + ": train.min_lr must not exceed train.lr");
  return c;
}

namespace {

json read_json_file(const std::string& path) {
  json j = json::parse(read_text_file(path), nullptr, false);
  check(!j.is_discarded(), path + ": invalid JSON");
  return j;
}

std::string checkpoint_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "checkpoint-%06lld", static_cast<long long>(step));
  return buf;
}

// Imbalance of one micro-batch's routing in one layer: experts on `devices` devices in contiguous
// blocks. Returns {IS, MaxVio}.
std::pair<double, double> imbalance(const std::vector<int64_t>& counts, int64_t tokens, int devices) {
  const int n = int(counts.size());
  const int d = std::min(devices, n);
  std::vector<int64_t> load(d, 0);
  int64_t total = 0, busiest = 0;
  for (int e = 0; e < n; ++e) {
    load[int64_t(e) * d / n] += counts[e];
    total += counts[e];
    busiest = std::max(busiest, counts[e]);
  }
  const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
  const double mean = double(total) / n;
  return {double(*hi - *lo) / double(tokens), mean > 0 ? (double(busiest) - mean) / mean : 0.0};
}

struct History {
  std::vector<double> step, loss, val_step, val_loss;
};

// Rebuilds the curves from an existing log, keeping lines up to `upto` (a resume) and rewriting
// the file without the later ones.
History reload_log(const std::string& path, int64_t upto) {
  History h;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step") || j["step"].get<int64_t>() > upto) continue;
    kept += line + "\n";
    if (j.contains("loss")) h.step.push_back(j["step"].get<double>()), h.loss.push_back(j["loss"].get<double>());
    if (j.contains("val_loss"))
      h.val_step.push_back(j["step"].get<double>()), h.val_loss.push_back(j["val_loss"].get<double>());
  }
  write_file_atomically(path, kept);
  return h;
}

void copy_tokenizer(const std::string& from, const std::string& to) {
  for (const char* name : {"tokenizer.model", "tokenizer_config.json", "generation_config.json",
                           "special_tokens_map.json"}) {
    const fs::path src = fs::path(from) / name;
    if (!fs::exists(src)) continue;
    std::error_code ec;
    fs::copy_file(src, fs::path(to) / name, fs::copy_options::overwrite_existing, ec);
    check(!ec, (fs::path(to) / name).string() + ": cannot copy the tokenizer (" + ec.message() + ")");
  }
}

class Run {
 public:
  explicit Run(const RunOptions& o) : o_(o) {
    const json cfg = read_json_file(o.config_path);
    check(cfg.is_object() && cfg.contains("model") && cfg["model"].is_object(),
          o.config_path + ": needs a \"model\" object (the Hugging Face config)");
    model_json_ = cfg["model"];
    model_json_["torch_dtype"] = "float32";
    model_cfg_ = model::ModelConfig::from_json_text(model_json_.dump(), o.config_path + ": model");
    tc_ = TrainConfig::from_json(cfg.value("train", json::object()), o.config_path);
    check(!o.expert_parallel || o.comm, "expert-parallel training needs a communicator");
    rank_ = o.comm ? o.comm->rank() : 0;
    ranks_ = o.comm ? o.comm->size() : 1;
    check(tc_.grad_accum % ranks_ == 0, o.config_path + ": train.grad_accum (" + std::to_string(tc_.grad_accum) +
                                            ") must be a multiple of the number of ranks (" + std::to_string(ranks_) + ")");

    const json meta = read_json_file(o.data_dir + "/meta.json");
    tokenizer_dir_ = !o.tokenizer_dir.empty() ? o.tokenizer_dir : meta.value("tokenizer", std::string());
    check(!tokenizer_dir_.empty(), o.data_dir + "/meta.json: no \"tokenizer\"; pass --tokenizer");
    train_ = std::make_unique<TokenShard>(o.data_dir + "/train.bin");
    val_ = std::make_unique<TokenShard>(o.data_dir + "/val.bin");
    check(train_->vocab_size() <= model_cfg_.vocab_size,
          o.data_dir + "/train.bin: vocabulary " + std::to_string(train_->vocab_size()) +
              " is larger than the model's vocab_size " + std::to_string(model_cfg_.vocab_size));
  }

  RunResult run() {
    init_model();
    RunResult result;
    const LrSchedule schedule({tc_.lr, tc_.min_lr, tc_.warmup, tc_.steps});
    const int local_micro = tc_.grad_accum / ranks_;
    const int64_t rows = int64_t(tc_.micro_batch) * tc_.seq_len;
    std::vector<int32_t> inputs(rows), targets(rows);
    std::vector<float> packed;  // the replicated gradients in one buffer for the all-reduce
    // Gradients every rank holds whole (summed over the ranks), and those of the own experts only.
    std::vector<std::span<float>> replicated, sharded;
    for (const Param& p : params_) {
      const Shard sh = shard(p);
      (sh.sharded ? sharded : replicated).emplace_back(p.grad->f32() + sh.offset, size_t(sh.n));
    }

    const int64_t end = o_.stop_after >= 0 ? std::min(tc_.steps, o_.stop_after) : tc_.steps;
    Progress progress("train", tc_.steps, "steps");
    double tokens_per_s = 0;
    // The gradients start at zero; after that AdamW zeroes what it reads (step(..., zero_grads)).
    // Under expert parallelism the other ranks' expert shards are never written here: zero too.
    model_->zero_grad();
    for (int64_t step = step_; step < end; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      // Sums over this rank's micro-batches: ce, aux, IS, MaxVio, then expert counts.
      const int layers = model_cfg_.num_hidden_layers, n = model_cfg_.num_experts;
      std::vector<double> sums(4 + size_t(layers) * n, 0.0);
      for (int m = 0; m < local_micro; ++m) {
        const int global_micro = rank_ * local_micro + m;
        Rng rng(tc_.seed * 0x9e3779b97f4a7c15ull ^ (uint64_t(step) << 20) ^ uint64_t(global_micro));
        sample_batch(*train_, tc_.micro_batch, tc_.seq_len, rng, inputs.data(), targets.data());
        LossParts l = model_->forward_backward(inputs.data(), targets.data(), tc_.micro_batch, tc_.seq_len,
                                               1.0f / float(tc_.grad_accum));
        sums[0] += l.ce, sums[1] += l.aux;
        const auto counts = model_->expert_counts();
        for (int i = 0; i < layers; ++i) {
          auto [is, vio] = imbalance(counts[i], rows, tc_.devices);
          sums[2] += is / layers, sums[3] += vio / layers;
          for (int e = 0; e < n; ++e) sums[4 + size_t(i) * n + e] += double(counts[i][e]);
        }
      }
      if (o_.comm) {
        // One all-reduce for all gradients (a few large messages beat ~100 small ones).
        packed.clear();
        for (const auto& g : replicated) packed.insert(packed.end(), g.begin(), g.end());
        o_.comm->allreduce_sum(packed.data(), int64_t(packed.size()));
        size_t at = 0;
        for (auto& g : replicated) std::copy_n(packed.begin() + at, g.size(), g.begin()), at += g.size();
        o_.comm->allreduce_sum(sums.data(), int64_t(sums.size()));
      }
      for (size_t k = 0; k < 4; ++k) sums[k] /= tc_.grad_accum;
      for (size_t k = 4; k < sums.size(); ++k) expert_load_[k - 4] += sums[k];
      const double norm = global_grad_norm(replicated, sharded);
      // Clipping is folded into the update (one pass over the gradients less).
      const float clip = tc_.grad_clip > 0 ? clip_coefficient(norm, tc_.grad_clip) : 1.0f;
      const double lr = schedule.at(step);
      if (std::isfinite(norm)) optimizer_->step(lr, clip, /*zero_grads=*/true);
      else model_->zero_grad();  // a skipped step
      const double seconds = seconds_since(t0);
      tokens_per_s = double(rows) * tc_.grad_accum / seconds;
      step_ = step + 1;

      const double loss = sums[0] + sums[1];
      result.last_loss = loss;
      history_.step.push_back(double(step_)), history_.loss.push_back(loss);
      log({{"step", step_}, {"loss", loss}, {"ce", sums[0]}, {"aux", sums[1]}, {"lr", lr}, {"grad_norm", norm},
           {"is", sums[2]}, {"max_vio", sums[3]}, {"tokens_per_s", tokens_per_s}, {"seconds", seconds}});
      char extra[160];
      std::snprintf(extra, sizeof extra, "loss %.4f  lr %.2e  |g| %.2f  IS %.3f  %.0f tok/s", loss, lr, norm, sums[2],
                    tokens_per_s);
      if (!o_.quiet && rank_ == 0) progress.update(step_, extra);

      const bool last = step_ == end;
      if ((tc_.eval_every > 0 && step_ % tc_.eval_every == 0) || step_ == tc_.steps) {
        result.last_val_loss = validate();
        history_.val_step.push_back(double(step_)), history_.val_loss.push_back(result.last_val_loss);
        log({{"step", step_}, {"val_loss", result.last_val_loss}});
      }
      if ((tc_.save_every > 0 && step_ % tc_.save_every == 0) || last) save();
    }
    if (!o_.quiet && rank_ == 0) progress.finish("done");
    result.steps_done = step_;
    result.tokens_per_second = tokens_per_s;
    return result;
  }

 private:
  void init_model() {
    const fs::path latest = fs::path(o_.out_dir) / "latest";
    if (o_.resume) {
      check(fs::exists(latest), o_.out_dir + ": nothing to resume (no 'latest' checkpoint)");
      const std::string dir = fs::canonical(latest).string();
      model_ = std::make_unique<TrainableDecoder>(TrainableDecoder::load(dir));
      place_experts();
      const json state = read_json_file(dir + "/trainer_state.json");
      step_ = state.at("step").get<int64_t>();
      expert_load_ = state.at("expert_load").get<std::vector<double>>();
      make_optimizer();
      optimizer_->load_state(model::SafetensorsFile(dir + "/optimizer.safetensors"), state.at("optimizer_steps"));
      history_ = rank_ == 0 ? reload_log(log_path(), step_) : History{};
      return;
    }
    model_ = std::make_unique<TrainableDecoder>(o_.init_from.empty() ? TrainableDecoder::random(model_cfg_, tc_.seed)
                                                                      : TrainableDecoder::load(o_.init_from));
    place_experts();
    expert_load_.assign(size_t(model_cfg_.num_hidden_layers) * model_cfg_.num_experts, 0.0);
    make_optimizer();
    if (rank_ == 0) {
      fs::create_directories(o_.out_dir);
      write_file_atomically(log_path(), "");
    }
  }

  // With expert parallelism: this rank's experts (moe::Placement: an error naming the numbers
  // when the ranks cannot share the experts) and the runner that computes only them.
  void place_experts() {
    if (!o_.expert_parallel) return;
    placement_ = std::make_unique<moe::Placement>(model_cfg_.moe_config().router, ranks_);
    ep_ = std::make_unique<ExpertParallelTraining>(*o_.comm, *placement_, model_cfg_.num_hidden_layers);
    model_->set_moe_runner(ep_.get());
  }

  // The part of a parameter this rank updates: all of it, or its own experts' rows of a stacked
  // routed-expert matrix under expert parallelism.
  struct Shard {
    bool sharded;
    int64_t offset, n;
  };
  Shard shard(const Param& p) const {
    const int64_t total = p.value->numel();
    if (!ep_ || !p.routed_experts) return {false, 0, total};
    const int64_t per_expert = total / model_cfg_.num_experts;
    const moe::ExpertRange own = ep_->own_experts();
    return {true, own.begin * per_expert, own.size() * per_expert};
  }

  void make_optimizer() {
    optimizer_ = std::make_unique<AdamW>(AdamWConfig{tc_.lr, tc_.beta1, tc_.beta2, 1e-8, tc_.weight_decay});
    params_ = model_->parameters();
    for (const Param& p : params_) {
      const Shard sh = shard(p);
      optimizer_->add_shard(p.name, p.value->f32() + sh.offset, p.grad->f32() + sh.offset, sh.n, p.decay, sh.offset,
                            p.value->numel());
    }
  }

  // The L2 norm over every gradient: the replicated ones (the same on every rank) and the sum of
  // every rank's own experts'.
  double global_grad_norm(std::span<const std::span<float>> replicated, std::span<const std::span<float>> sharded) {
    double own = sum_of_squares(sharded);
    if (ep_) o_.comm->allreduce_sum(&own, 1);
    return std::sqrt(sum_of_squares(replicated) + own);
  }

  // Every rank's shard of parameter p (its values or one of its optimizer moments; `own` is this
  // rank's) into `whole`, the parameter's full size, on every rank.
  void gather_shard(const Param& p, const float* own, float* whole) {
    const Shard sh = shard(p);
    const std::vector<float> mine(own, own + sh.n);  // send and receive must not overlap
    o_.comm->all_gather(mine.data(), sh.n, whole);
  }

  double validate() {
    SequentialBatches batches(*val_, tc_.micro_batch, tc_.seq_len);
    const int64_t rows = int64_t(tc_.micro_batch) * tc_.seq_len;
    std::vector<int32_t> inputs(rows), targets(rows);
    double sum = 0;
    int64_t count = 0;
    for (int b = 0; b < tc_.eval_batches; ++b) {
      const int got = batches.next(inputs.data(), targets.data());
      if (got == 0) break;
      LossParts l = model_->evaluate(inputs.data(), targets.data(), got, tc_.seq_len);
      sum += l.ce * double(l.targets), count += l.targets;
    }
    check(count > 0, o_.data_dir + "/val.bin: too short for one validation window of " + std::to_string(tc_.seq_len) +
                         " tokens");
    return sum / double(count);
  }

  void log(const json& j) {
    if (rank_ != 0) return;
    std::ofstream out(log_path(), std::ios::app);
    out << j.dump() << "\n";
  }
  std::string log_path() const { return o_.out_dir + "/log.jsonl"; }

  void save() {
    // Under expert parallelism every rank first gathers the others' experts (weights and
    // optimizer moments): a collective, so before rank 0 alone goes on.
    std::vector<model::NamedTensor> optimizer_state = optimizer_->state_tensors();  // 2 a parameter
    std::vector<std::vector<float>> gathered(optimizer_state.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      const Param& p = params_[i];
      const Shard sh = shard(p);
      if (!sh.sharded) continue;
      gather_shard(p, p.value->f32() + sh.offset, p.value->f32());
      for (size_t m = 2 * i; m < 2 * i + 2; ++m) {
        gathered[m].resize(size_t(p.value->numel()));
        gather_shard(p, static_cast<const float*>(optimizer_state[m].data), gathered[m].data());
        optimizer_state[m].shape = {p.value->numel()};
        optimizer_state[m].data = gathered[m].data();
      }
    }
    if (rank_ != 0) return;
    const fs::path out(o_.out_dir);
    const std::string name = checkpoint_name(step_);
    const fs::path tmp = out / ("." + name + ".tmp"), final_dir = out / name;
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    model::write_safetensors((tmp / "model.safetensors").string(), model_->checkpoint_tensors(), {{"format", "pt"}});
    write_file_atomically((tmp / "config.json").string(), model_json_.dump(2) + "\n");
    copy_tokenizer(tokenizer_dir_, tmp.string());
    model::write_safetensors((tmp / "optimizer.safetensors").string(), optimizer_state);
    const json state = {{"step", step_}, {"optimizer_steps", optimizer_->step_count()}, {"seed", tc_.seed},
                        {"expert_load", expert_load_}};
    write_file_atomically((tmp / "trainer_state.json").string(), state.dump() + "\n");
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    // Point `latest` at it: a new symlink renamed over the old one (atomic).
    const fs::path link_tmp = out / ".latest.tmp";
    fs::remove(link_tmp);
    fs::create_directory_symlink(name, link_tmp);
    fs::rename(link_tmp, out / "latest");
    prune();
    plots();
  }

  // Keeps the newest keep_checkpoints checkpoints.
  void prune() {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(o_.out_dir)) {
      const std::string n = e.path().filename().string();
      if (e.is_directory() && n.rfind("checkpoint-", 0) == 0) names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    for (size_t i = 0; i + size_t(tc_.keep_checkpoints) < names.size(); ++i)
      fs::remove_all(fs::path(o_.out_dir) / names[i]);
  }

  void plots() {
    std::vector<report::LineSeries> lines = {{"train loss", history_.step, history_.loss}};
    if (!history_.val_step.empty()) lines.push_back({"validation loss", history_.val_step, history_.val_loss});
    report::write_line_chart_svg(o_.out_dir + "/loss.svg", "Loss", "step", "loss (cross-entropy + aux)", lines);
    const int layers = model_cfg_.num_hidden_layers, n = model_cfg_.num_experts;
    std::vector<std::vector<double>> share(layers, std::vector<double>(n));
    std::vector<std::string> rows, cols;
    for (int i = 0; i < layers; ++i) {
      double total = 0;
      for (int e = 0; e < n; ++e) total += expert_load_[size_t(i) * n + e];
      for (int e = 0; e < n; ++e) share[i][e] = total > 0 ? expert_load_[size_t(i) * n + e] / total * n : 0;
      rows.push_back("layer " + std::to_string(i));
    }
    for (int e = 0; e < n; ++e) cols.push_back(std::to_string(e));
    report::write_heatmap_svg(o_.out_dir + "/expert_load.svg", "Expert load over the run (1 = uniform)", "expert",
                              "layer", share, rows, cols, "load / uniform");
  }

  RunOptions o_;
  json model_json_;
  model::ModelConfig model_cfg_;
  TrainConfig tc_;
  int rank_ = 0, ranks_ = 1;
  std::string tokenizer_dir_;
  std::unique_ptr<TokenShard> train_, val_;
  std::unique_ptr<TrainableDecoder> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<moe::Placement> placement_;
  std::unique_ptr<ExpertParallelTraining> ep_;
  std::vector<Param> params_;
  int64_t step_ = 0;
  std::vector<double> expert_load_;
  History history_;
};

}  // namespace

RunResult run_training(const RunOptions& options) { return Run(options).run(); }

}  // namespace moge::train
