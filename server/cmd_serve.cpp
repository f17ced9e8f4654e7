// `tandem serve`: loads the config and the model, starts the batcher and the HTTP server, and
// shuts down cleanly on SIGINT/SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "engine/batcher.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "server/accelerator_options.h"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/config.h"
#include "server/http_server.h"

namespace tandem {
namespace {

constexpr const char* kHelp = R"(usage: tandem serve [-c CONFIG.json] [-m MODEL.gguf] [options]

OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models, /health,
/metrics) with continuous batching. Options override the config file (configs/README.md).
Without a model it serves the demo model: random weights, generated on first use into
$TANDEM_CACHE_DIR (default ~/.cache/tandem).

  -c, --config FILE     JSON config (default: built-in defaults)
  -m, --model FILE      GGUF model (overrides model.path)
  --mmap                map the GGUF file instead of reading it into memory (model.mmap)
  --host HOST           bind address (default 127.0.0.1)
  --port N              port (default 8080; 0 picks a free one)
  --api-key KEY         require Authorization: Bearer KEY on every route but /health
  -np, --parallel N     sequences decoded together (server.max_parallel)
  --ctx-size N          context tokens per sequence (context_size)
  -t, --threads N       CPU threads (0: all physical cores; at most the CPUs this process
                        may use)
%s)";

// Command-line options override the config; the accelerator ones go through `accel`, which
// starts from the config's gpu section.
ServeConfig parse_args(const Args& args, AcceleratorSetup& accel) {
  ServeConfig c;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "-c" || args[i] == "--config") c = load_serve_config(args[i + 1]);
  }
  accel.gpu.device = c.gpu.device;
  accel.gpu.memory_budget_gb = c.gpu.memory_budget_gb;
  accel.gpu.expert_cache_gb = c.gpu.expert_cache_gb;
  accel.gpu.hardware_profile = c.gpu.hardware_profile;
  validate_policy(c.scheduler.policy, "config scheduler.policy");
  accel.policy = c.scheduler.policy;
  accel.defer_experts = c.scheduler.defer_experts;
  validate_eviction(c.scheduler.eviction, "config scheduler.eviction");
  accel.eviction = c.scheduler.eviction;
  accel.pin_layers = c.scheduler.pin_layers;
  ArgReader r(args);
  while (!r.done()) {
    const std::string a = r.next();
    if (a == "-c" || a == "--config")
      r.value(a);
    else if (a == "-m" || a == "--model")
      c.model.path = r.value(a);
    else if (a == "--mmap")
      c.model.mmap = true;
    else if (a == "--host")
      c.server.host = r.value(a);
    else if (a == "--port")
      c.server.port = static_cast<int32_t>(r.int_value(a, 0, 65535));
    else if (a == "--api-key")
      c.server.api_key = r.value(a);
    else if (a == "-np" || a == "--parallel")
      c.server.max_parallel = static_cast<int32_t>(r.int_value(a, 1, 256));
    else if (a == "--ctx-size")
      c.context_size = static_cast<int32_t>(r.int_value(a, 16, 1 << 22));
    else if (a == "-t" || a == "--threads")
      c.threads = static_cast<int32_t>(r.int_value(a, 0, 4096));
    else if (accel.parse_option(a, r))
      continue;
    else
      throw UsageError("unknown option '" + a + "' (see tandem serve --help)");
  }
  return c;
}

std::string cache_dir() {
  if (const char* d = std::getenv("TANDEM_CACHE_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/tandem";
}

// The demo model: written once by `tandem gen-model` (this same binary) into the cache.
std::string demo_model_path() {
  const std::string dir = cache_dir();
  const std::string path = dir + "/demo-qwen3moe-tiny-q8_0.gguf";
  if (std::filesystem::exists(path)) return path;
  std::filesystem::create_directories(dir);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  std::fprintf(stderr, "tandem serve: generating the demo model into %s\n", path.c_str());
  // Resolved here: inside the shell that std::system starts, /proc/self/exe is the shell.
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd =
      "'" + self + "' gen-model --preset tiny --arch qwen3moe --type q8_0 -o '" + tmp + "' 1>&2";
  if (std::system(cmd.c_str()) != 0 || !std::filesystem::exists(tmp)) {
    std::filesystem::remove(tmp);
    throw std::runtime_error(
        "could not generate the demo model with `tandem gen-model` (give -m MODEL)");
  }
  std::filesystem::rename(tmp, path);  // atomic: a concurrent server never sees half a file
  return path;
}

// Everything that lives from model load to shutdown.
struct Backend {
  AcceleratorSetup accel;  // outlives the engine, which holds device memory
  std::unique_ptr<Model> model;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Batcher> batcher;
};

Backend load_backend(ServeConfig& c, AcceleratorSetup accel, HttpServer& http) {
  Backend b;
  b.accel = std::move(accel);
  const bool demo = c.model.path.empty();
  if (demo) c.model.path = demo_model_path();
  b.model = Model::load(c.model.path, c.model.mmap ? GgufMemory::Map : GgufMemory::Read,
                        WeightLayout::Cpu);
  if (demo) {
    std::fprintf(
        stderr,
        "tandem serve: serving the DEMO model: its weights are random, its output is noise\n");
    if (c.model.chat_template == "auto")
      c.model.chat_template = "chatml";  // its vocab has no template
  }
  EngineOptions eo;
  eo.n_ctx = c.context_size;
  eo.n_seq_max = c.server.max_parallel;
  eo.n_threads = c.threads;
  eo.kv_type = c.kv_type == "f16" ? KvType::F16 : KvType::F32;
  b.accel.apply(eo, *b.model);
  b.engine = std::make_unique<Engine>(*b.model, eo);
  b.batcher = std::make_unique<Batcher>(
      *b.engine, b.model->tokenizer(),
      BatcherOptions{c.server.max_parallel, c.server.queue_limit, c.server.prefill_chunk});
  ServeBackend sb;
  sb.tokenizer = &b.model->tokenizer();
  sb.batcher = b.batcher.get();
  sb.model_id = std::filesystem::path(c.model.path).filename().string();
  sb.n_vocab = b.engine->n_vocab();
  const std::string tmpl = b.model->file().get_string("tokenizer.chat_template", "");
  try {
    sb.chat_family = resolve_chat_family(c.model.chat_template, tmpl);
    std::fprintf(stderr, "tandem serve: chat template: %s\n",
                 chat_family_name(*sb.chat_family).c_str());
  } catch (const ChatTemplateError& e) {
    if (!tmpl.empty()) throw;  // a template we cannot render: say so now, not per request
    sb.chat_error = e.what();
    std::fprintf(stderr, "tandem serve: chat completions disabled: %s\n", e.what());
  }
  http.set_backend(sb);
  std::fprintf(stderr, "tandem serve: model %s loaded (%d parallel sequences x %d tokens)\n",
               sb.model_id.c_str(), c.server.max_parallel, c.context_size);
  return b;
}

// Waits for SIGINT/SIGTERM on its own thread (the signals are blocked everywhere else).
class SignalWaiter {
 public:
  SignalWaiter() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);  // before any thread starts: they inherit it
    thread_ = std::thread([this] {
      int sig = 0;
      sigwait(&set_, &sig);
      std::fprintf(stderr, "tandem serve: %s received, shutting down\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      std::lock_guard lock(mutex_);
      fired_ = true;
      cv_.notify_all();
    });
    thread_.detach();  // a process that exits for another reason leaves it blocked in sigwait
  }
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return fired_; });
  }
  bool fired() {
    std::lock_guard lock(mutex_);
    return fired_;
  }

 private:
  sigset_t set_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool fired_ = false;
};

}  // namespace

int cmd_serve(const Args& args) {
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      std::printf(kHelp, AcceleratorSetup::kHelp);
      return 0;
    }
  }
  ServeConfig config;
  AcceleratorSetup accel;
  try {
    config = parse_args(args, accel);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tandem serve: %s\n", e.what());
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server
  SignalWaiter signals;
  HttpServer http(config);
  const int port = http.bind();
  std::fprintf(stderr, "tandem serve: listening on http://%s:%d\n", config.server.host.c_str(),
               port);
  std::thread listener([&http] { http.listen(); });
  Backend backend;
  try {
    backend = load_backend(config, std::move(accel), http);
  } catch (...) {
    http.stop();
    listener.join();
    throw;
  }
  signals.wait();
  http.refuse_new_work();
  const auto grace =
      std::chrono::milliseconds(static_cast<int64_t>(config.server.shutdown_grace_s * 1000));
  backend.batcher->shutdown(grace);
  http.stop();
  listener.join();
  backend.batcher.reset();
  backend.engine.reset();
  backend.accel.finish();
  std::fprintf(stderr, "tandem serve: stopped\n");
  return 0;
}

}  // namespace tandem
