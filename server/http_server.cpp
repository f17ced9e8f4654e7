#include "server/http_server.h"

#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "engine/tokenizer.h"
#include "server/openai_schema.h"

namespace tandem {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Model output is meant to be UTF-8 already; invalid bytes become U+FFFD rather than a throw.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump(error_json(e.what(), e.type, e.param, e.code)), "application/json");
}

void send_json(httplib::Response& res, const json& body) {
  res.set_content(dump(body), "application/json");
}

// Compares in time that depends only on the lengths, so a wrong key leaks no prefix.
bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() != b.size() ? 1 : 0;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// Route label for metrics; unknown paths share one label so clients cannot grow the map.
std::string route_label(const std::string& path) {
  for (const char* r : {"/health", "/metrics", "/v1/models", "/models", "/v1/chat/completions",
                        "/chat/completions", "/v1/completions", "/completions"}) {
    if (path == r) return r;
  }
  return "other";
}

ApiError default_error(int status) {
  switch (status) {
    case 404:
      return ApiError(404, "not_found_error", "no such route", "", "not_found");
    case 405:
      return ApiError(405, "invalid_request_error", "method not allowed for this route");
    case 413:
      return ApiError(413, "invalid_request_error",
                      "the request body is larger than the server's limit", "",
                      "request_too_large");
    case 414:
      return ApiError(414, "invalid_request_error", "the request URI is too long");
    default:
      break;
  }
  if (status >= 500) return ApiError(status, "server_error", "internal server error");
  return ApiError(status, "invalid_request_error", "bad request");
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool write_sse(httplib::DataSink& sink, const json& payload) {
  const std::string line = "data: " + dump(payload) + "\n\n";
  return sink.write(line.data(), line.size());
}

// Writes one generation as SSE events; false when the client went away.
bool stream_events(GenerationStream& stream, CompletionResult& r, bool chat, bool include_usage,
                   httplib::DataSink& sink) {
  bool first = true;
  GenerationStream::Chunk c;
  while (true) {
    // A closed connection fails the next write (or is_writable): the provider returns false
    // and the releaser cancels the sequence, which frees its slot within one step.
    if (!stream.read(c, 200ms)) {
      if (!sink.is_writable()) return false;
      continue;
    }
    if (!c.text.empty() || (first && chat && !c.done)) {
      if (!write_sse(sink, stream_chunk_json(r, chat, c.text, first, FinishReason::None)))
        return false;
      first = false;
    }
    if (c.done) break;
  }
  r.stats = c.stats;
  if (c.finish == FinishReason::Error || c.finish == FinishReason::Cancelled) {
    const std::string msg = c.error.empty() ? "the request was cancelled" : c.error;
    write_sse(sink, error_json(msg, c.finish == FinishReason::Error ? "server_error"
                                                                    : "unavailable_error"));
  } else {
    if (!write_sse(sink, stream_chunk_json(r, chat, "", first, c.finish))) return false;
    if (include_usage && !write_sse(sink, stream_usage_json(r, chat))) return false;
  }
  const std::string done = "data: [DONE]\n\n";
  sink.write(done.data(), done.size());
  sink.done();
  return true;
}

}  // namespace

HttpServer::HttpServer(const ServeConfig& config)
    : config_(config), server_(std::make_unique<httplib::Server>()) {
  // Each waiting or running request holds a handler thread, so the pool must fit them all:
  // requests beyond that would wait inside httplib instead of getting a 503 from the queue.
  const size_t n_threads =
      static_cast<size_t>(config.server.max_parallel + config.server.queue_limit) + 8;
  server_->new_task_queue = [n_threads] {
    return new httplib::ThreadPool(std::min<size_t>(n_threads, 1024));
  };
  server_->set_payload_max_length(static_cast<size_t>(config.server.body_limit_bytes));
  server_->set_keep_alive_timeout(2);  // idle keep-alive connections delay shutdown by this much
  install_routes();
}

HttpServer::~HttpServer() {
  stop();
}

int HttpServer::bind() {
  const int want = config_.server.port;
  const int port = want == 0 ? server_->bind_to_any_port(config_.server.host)
                             : (server_->bind_to_port(config_.server.host, want) ? want : -1);
  if (port < 0) {
    throw std::runtime_error("cannot listen on " + config_.server.host + ":" +
                             std::to_string(want) + " (address in use or not local?)");
  }
  return port;
}

void HttpServer::listen() {
  server_->listen_after_bind();
}

void HttpServer::set_backend(const ServeBackend& backend) {
  std::lock_guard lock(mutex_);
  backend_ = backend;
}

std::optional<ServeBackend> HttpServer::backend() const {
  std::lock_guard lock(mutex_);
  return backend_;
}

void HttpServer::refuse_new_work() {
  refusing_ = true;
}

void HttpServer::stop() {
  if (server_) server_->stop();
}

bool HttpServer::authorized(const httplib::Request& req) const {
  if (config_.server.api_key.empty() || req.path == "/health") return true;
  const std::string header = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  const std::string given =
      header.compare(0, prefix.size(), prefix) == 0 ? header.substr(prefix.size()) : "";
  return constant_time_equal(given, config_.server.api_key);
}

void HttpServer::install_routes() {
  using httplib::Request, httplib::Response, httplib::Server;
  server_->set_pre_routing_handler([this](const Request& req, Response& res) {
    if (authorized(req)) return Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "authentication_error",
                             "missing or invalid API key (Authorization: Bearer ...)", "",
                             "invalid_api_key"));
    return Server::HandlerResponse::Handled;
  });
  server_->set_error_handler(Server::HandlerWithResponse([](const Request&, Response& res) {
    if (!res.body.empty() || res.content_length_ > 0) return Server::HandlerResponse::Unhandled;
    send_error(res, default_error(res.status));
    return Server::HandlerResponse::Handled;
  }));
  server_->set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, "server_error", "internal error: " + what));
  });
  server_->set_logger([this](const Request& req, const Response& res) {
    counters_.count(route_label(req.path), res.status);
    if (config_.server.log_requests) {
      std::fprintf(stderr, "tandem serve: %s %s -> %d\n", req.method.c_str(), req.path.c_str(),
                   res.status);
    }
  });
  server_->Get("/health", [this](const Request&, Response& res) { handle_health(res); });
  server_->Get("/metrics", [this](const Request&, Response& res) {
    const auto be = backend();
    const BatcherMetrics m = be ? be->batcher->metrics() : BatcherMetrics{};
    res.set_content(render_metrics(m, counters_, !be), "text/plain; version=0.0.4");
  });
  for (const char* path : {"/v1/models", "/models"}) {
    server_->Get(path, [this](const Request&, Response& res) { handle_models(res); });
  }
  for (const char* path : {"/v1/chat/completions", "/chat/completions"}) {
    server_->Post(path,
                  [this](const Request& req, Response& res) { handle_completion(req, res, true); });
  }
  for (const char* path : {"/v1/completions", "/completions"}) {
    server_->Post(
        path, [this](const Request& req, Response& res) { handle_completion(req, res, false); });
  }
}

void HttpServer::handle_health(httplib::Response& res) {
  if (!backend()) {
    send_error(res, ApiError(503, "unavailable_error", "the model is loading", "", "loading"));
  } else if (refusing_) {
    send_error(res, ApiError(503, "unavailable_error", "the server is shutting down", "",
                             "shutting_down"));
  } else {
    send_json(res, {{"status", "ok"}});
  }
}

void HttpServer::handle_models(httplib::Response& res) {
  const auto be = backend();
  json data = json::array();
  if (be)
    data.push_back({{"id", be->model_id},
                    {"object", "model"},
                    {"created", unix_now()},
                    {"owned_by", "tandem"}});
  send_json(res, {{"object", "list"}, {"data", data}});
}

GenerationRequest HttpServer::to_generation(const CompletionRequest& cr,
                                            const ServeBackend& be) const {
  GenerationRequest g;
  if (cr.chat) {
    if (!be.chat_family)
      throw ApiError(400, "invalid_request_error", be.chat_error, "messages", "no_chat_template");
    std::string text;
    try {
      text = apply_chat_template(*be.chat_family, cr.messages, true,
                                 be.tokenizer->token_text(be.tokenizer->eos()));
    } catch (const ChatTemplateError& e) {
      throw ApiError(400, "invalid_request_error", e.what(), "messages");
    }
    g.prompt = be.tokenizer->encode(text, true, true);
    g.stop = chat_end_markers(*be.chat_family, "");
  } else {
    g.prompt =
        cr.prompt_is_tokens ? cr.prompt_tokens : be.tokenizer->encode(cr.prompt_text, true, true);
  }
  const int32_t n_ctx = be.batcher->n_ctx();
  const auto n_prompt = static_cast<int64_t>(g.prompt.size());
  if (n_prompt == 0)
    throw ApiError(400, "invalid_request_error", "the prompt has no tokens", "prompt");
  if (n_prompt >= n_ctx) {
    throw ApiError(400, "invalid_request_error",
                   "the prompt has " + std::to_string(n_prompt) + " tokens but the context holds " +
                       std::to_string(n_ctx) + " (prompt + at least one generated token)",
                   cr.chat ? "messages" : "prompt", "context_length_exceeded");
  }
  const int64_t wanted = cr.max_tokens.value_or(config_.server.default_max_tokens);
  g.max_tokens = static_cast<int32_t>(std::min<int64_t>(wanted, n_ctx - n_prompt));
  g.sampling = cr.sampling;
  if (!cr.seed_given) g.sampling.seed = std::random_device{}();
  g.stop.insert(g.stop.end(), cr.stop.begin(), cr.stop.end());
  g.ignore_eos = cr.ignore_eos;
  return g;
}

void HttpServer::handle_completion(const httplib::Request& req, httplib::Response& res, bool chat) {
  try {
    const auto be = backend();
    if (!be) throw ApiError(503, "unavailable_error", "the model is loading", "", "loading");
    if (refusing_)
      throw ApiError(503, "unavailable_error", "the server is shutting down", "", "shutting_down");
    json body;
    try {
      body = json::parse(req.body);
    } catch (const json::parse_error& e) {
      throw ApiError(400, "invalid_request_error",
                     std::string("the body is not valid JSON: ") + e.what());
    }
    const CompletionRequest cr = parse_completion_request(body, chat, be->n_vocab);
    std::shared_ptr<GenerationStream> stream;
    try {
      stream = be->batcher->submit(to_generation(cr, *be));
    } catch (const QueueFullError& e) {
      res.set_header("Retry-After", std::to_string(config_.server.retry_after_s));
      throw ApiError(503, "unavailable_error", std::string("server busy: ") + e.what(), "",
                     "queue_full");
    } catch (const BatcherStoppedError& e) {
      throw ApiError(503, "unavailable_error", e.what(), "", "shutting_down");
    }
    const std::string model_id = cr.model.empty() ? be->model_id : cr.model;
    if (cr.stream)
      respond_streaming(res, stream, cr, model_id);
    else
      respond_blocking(res, stream, cr, model_id);
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const std::invalid_argument& e) {
    send_error(res, ApiError(400, "invalid_request_error", e.what()));
  }
}

void HttpServer::respond_blocking(httplib::Response& res,
                                  const std::shared_ptr<GenerationStream>& stream,
                                  const CompletionRequest& cr, const std::string& model_id) {
  CompletionResult r;
  r.id = std::string(cr.chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
  r.model = model_id;
  r.created = unix_now();
  GenerationStream::Chunk c;
  while (true) {
    if (!stream->read(c, 1000ms)) continue;
    r.text += c.text;
    if (c.done) break;
  }
  r.finish = c.finish;
  r.stats = c.stats;
  if (c.finish == FinishReason::Error) throw ApiError(500, "server_error", c.error);
  if (c.finish == FinishReason::Cancelled) {
    throw ApiError(503, "unavailable_error",
                   c.error.empty() ? "the request was cancelled" : c.error);
  }
  send_json(res, completion_json(r, cr.chat));
}

void HttpServer::respond_streaming(httplib::Response& res,
                                   const std::shared_ptr<GenerationStream>& stream,
                                   const CompletionRequest& cr, const std::string& model_id) {
  auto r = std::make_shared<CompletionResult>();
  r->id = std::string(cr.chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
  r->model = model_id;
  r->created = unix_now();
  const bool chat = cr.chat, include_usage = cr.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream, r, chat, include_usage](size_t, httplib::DataSink& sink) {
        try {
          return stream_events(*stream, *r, chat, include_usage, sink);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "tandem serve: stream aborted: %s\n", e.what());
          return false;  // httplib must not see the exception: it would end the process
        }
      },
      [stream](bool) { stream->cancel(); });
}

}  // namespace tandem
