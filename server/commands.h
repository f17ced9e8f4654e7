// Subcommands of the `tandem` binary. Each takes the arguments after its name and returns the
// process exit code; each prints its own --help.
#pragma once

#include <string>
#include <vector>

namespace tandem {

using Args = std::vector<std::string>;

int cmd_inspect(const Args& args);
int cmd_gen_model(const Args& args);
int cmd_run(const Args& args);
int cmd_bench(const Args& args);
int cmd_serve(const Args& args);
int cmd_sim(const Args& args);
int cmd_calibrate(const Args& args);
int cmd_plan(const Args& args);

}  // namespace tandem
