// The `tandem` binary: one entry point, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "server/commands.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(const tandem::Args&);
  const char* summary;
};

const Subcommand kSubcommands[] = {
    {"serve", tandem::cmd_serve, "OpenAI-compatible HTTP server"},
    {"run", tandem::cmd_run, "generate text from a prompt, or dump logits for given token ids"},
    {"bench", tandem::cmd_bench, "prompt-processing and generation throughput (llama-bench style)"},
    {"gen-model", tandem::cmd_gen_model, "write a random-weight GGUF of a real MoE architecture"},
    {"sim", tandem::cmd_sim, "replay routing through the CPU/GPU planner"},
    {"plan", tandem::cmd_plan, "what a config puts in VRAM, predicted speed"},
    {"calibrate", tandem::cmd_calibrate, "time CPU experts here, fit and check the cost model"},
    {"inspect", tandem::cmd_inspect, "print a GGUF file's architecture, metadata and tensors"},
};

void print_usage() {
  std::printf("Tandem: MoE inference server for one workstation (CPU experts + GPU cache)\n\n");
  std::printf("usage: tandem <command> [options]   (tandem <command> --help for details)\n\n");
  for (const Subcommand& s : kSubcommands) std::printf("  %-10s %s\n", s.name, s.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage();
    return argc < 2 ? 1 : 0;
  }
  tandem::Args args(argv + 2, argv + argc);
  for (const Subcommand& s : kSubcommands) {
    if (std::strcmp(argv[1], s.name) != 0) continue;
    try {
      return s.run(args);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tandem %s: error: %s\n", s.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "tandem: unknown command '%s'\n\n", argv[1]);
  print_usage();
  return 1;
}
