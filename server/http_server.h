// The HTTP front of `tandem serve`: OpenAI routes on cpp-httplib. Handler threads parse and
// validate requests, post them to the Batcher and stream its output back; they never run the
// model (DESIGN.md rule 5).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "engine/batcher.h"
#include "engine/chat_template.h"
#include "server/config.h"
#include "server/metrics.h"

namespace httplib {
class Server;
class Request;
class Response;
}  // namespace httplib

namespace tandem {

class Tokenizer;
struct CompletionRequest;

// What the routes need once the model is loaded.
struct ServeBackend {
  const Tokenizer* tokenizer = nullptr;
  Batcher* batcher = nullptr;
  std::string model_id;
  int32_t n_vocab = 0;
  std::optional<ChatFamily> chat_family;  // nullopt: chat requests get `chat_error`
  std::string chat_error;
};

class HttpServer {
 public:
  explicit HttpServer(const ServeConfig& config);
  ~HttpServer();

  // Binds the configured host and port (port 0: any free port) and returns the port.
  // Throws std::runtime_error when the address cannot be bound.
  int bind();
  // Serves until stop(); run it on its own thread. /health answers 503 until set_backend().
  void listen();
  void set_backend(const ServeBackend& backend);
  // New generation requests get 503 from now on (shutdown has begun).
  void refuse_new_work();
  void stop();

 private:
  void install_routes();
  void handle_completion(const httplib::Request& req, httplib::Response& res, bool chat);
  void handle_health(httplib::Response& res);
  void handle_models(httplib::Response& res);
  bool authorized(const httplib::Request& req) const;
  GenerationRequest to_generation(const CompletionRequest& cr, const ServeBackend& be) const;
  void respond_blocking(httplib::Response& res, const std::shared_ptr<GenerationStream>& stream,
                        const CompletionRequest& cr, const std::string& model_id);
  void respond_streaming(httplib::Response& res, const std::shared_ptr<GenerationStream>& stream,
                         const CompletionRequest& cr, const std::string& model_id);
  std::optional<ServeBackend> backend() const;

  ServeConfig config_;
  std::unique_ptr<httplib::Server> server_;
  HttpCounters counters_;
  mutable std::mutex mutex_;  // guards backend_
  std::optional<ServeBackend> backend_;
  std::atomic<bool> refusing_{false};
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace tandem
