// moge: the command-line front end. Subcommands are thin layers over libmoge.
#include <cstdio>

#include "commands.h"
#include "moge/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"moge: an engine for Mixture of Grouped Experts (MoGE) language models"};
  app.require_subcommand(1);
  moge::cli::add_route_command(app);
  moge::cli::add_info_command(app);
  moge::cli::add_logits_command(app);
  moge::cli::add_generate_command(app);
  moge::cli::add_chat_command(app);
  moge::cli::add_init_command(app);
  moge::cli::add_bench_command(app);
  moge::cli::add_tokenizer_command(app);
  moge::cli::add_data_command(app);
  moge::cli::add_convert_command(app);
  moge::cli::add_train_command(app);
  moge::cli::add_eval_command(app);
  moge::cli::add_sim_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const moge::Error& e) {
    std::fprintf(stderr, "moge: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moge: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
