#include "server/metrics.h"

#include <cstdio>

namespace tandem {
namespace {

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  char line[512];
  std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type,
                name, value);
  out += line;
}

// A counter with one sample per device ({device="cpu"} and {device="gpu"}).
void device_counter(std::string& out, const char* name, const char* help, double cpu, double gpu) {
  char lines[768];
  std::snprintf(lines, sizeof lines,
                "# HELP %s %s\n# TYPE %s counter\n%s{device=\"cpu\"} %.17g\n%s{device=\"gpu\"} "
                "%.17g\n",
                name, help, name, name, cpu, name, gpu);
  out += lines;
}

}  // namespace

void HttpCounters::count(const std::string& route, int status) {
  std::lock_guard lock(mutex_);
  ++counts_[{route, status}];
}

std::map<std::pair<std::string, int>, uint64_t> HttpCounters::snapshot() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

std::string render_metrics(const BatcherMetrics& m, const HttpCounters& http, bool loading) {
  std::string out;
  metric(out, "tandem_loading", "gauge", "1 while the model is loading", loading ? 1 : 0);
  out += "# HELP tandem_http_requests_total HTTP requests answered, by route and status\n";
  out += "# TYPE tandem_http_requests_total counter\n";
  for (const auto& [key, n] : http.snapshot()) {
    out += "tandem_http_requests_total{route=\"" + key.first + "\",status=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
  }
  metric(out, "tandem_requests_finished_total", "counter",
         "generation requests finished (stop or length)",
         static_cast<double>(m.n_requests_finished));
  metric(out, "tandem_requests_cancelled_total", "counter",
         "generation requests cancelled (client gone)",
         static_cast<double>(m.n_requests_cancelled));
  metric(out, "tandem_requests_rejected_total", "counter",
         "requests refused with 503 because the queue was full",
         static_cast<double>(m.n_requests_rejected));
  metric(out, "tandem_prompt_tokens_total", "counter", "prompt tokens processed",
         static_cast<double>(m.n_prompt_tokens));
  metric(out, "tandem_generated_tokens_total", "counter", "tokens generated for finished requests",
         static_cast<double>(m.n_generated_tokens));
  metric(out, "tandem_decode_tokens_total", "counter",
         "generated tokens fed back through the model", static_cast<double>(m.n_decode_tokens));
  metric(out, "tandem_forward_steps_total", "counter", "engine forward steps",
         static_cast<double>(m.n_steps));
  metric(out, "tandem_prompt_seconds_total", "counter", "step time attributed to prompt tokens",
         m.prompt_seconds);
  metric(out, "tandem_decode_seconds_total", "counter", "step time attributed to decode tokens",
         m.decode_seconds);
  metric(out, "tandem_prompt_tokens_per_second", "gauge",
         "prompt throughput over the last 10 s of steps", m.prompt_tokens_per_second);
  metric(out, "tandem_predicted_tokens_per_second", "gauge",
         "decode throughput over the last 10 s of steps", m.decode_tokens_per_second);
  metric(out, "tandem_queue_depth", "gauge", "requests waiting for a slot", m.n_queued);
  metric(out, "tandem_active_sequences", "gauge", "sequences being generated", m.n_active);
  metric(out, "tandem_max_parallel", "gauge", "sequence slots", m.max_parallel);
  metric(out, "tandem_kv_cache_used_tokens", "gauge", "cached positions over all sequences",
         static_cast<double>(m.kv_used));
  metric(out, "tandem_kv_cache_capacity_tokens", "gauge", "positions the KV cache holds",
         static_cast<double>(m.kv_capacity));
  metric(out, "tandem_kv_cache_usage_ratio", "gauge", "kv used / capacity",
         m.kv_capacity > 0 ? static_cast<double>(m.kv_used) / static_cast<double>(m.kv_capacity)
                           : 0.0);
  device_counter(out, "tandem_expert_runs_total", "expert matmuls run, by device",
                 static_cast<double>(m.experts.cpu_experts),
                 static_cast<double>(m.experts.gpu_experts));
  device_counter(out, "tandem_expert_tokens_total", "expert token rows computed, by device",
                 static_cast<double>(m.experts.cpu_tokens),
                 static_cast<double>(m.experts.gpu_tokens));
  device_counter(out, "tandem_expert_seconds_total",
                 "time in expert work, by device (cpu: host clock; gpu: device clock, scheduled "
                 "policies)",
                 m.experts.cpu_expert_seconds, m.experts.gpu_expert_seconds);
  const uint64_t n_runs = m.experts.cpu_experts + m.experts.gpu_experts;
  metric(
      out, "tandem_expert_cache_hit_ratio", "gauge",
      "share of expert runs served from the GPU expert cache without a copy",
      n_runs > 0 ? static_cast<double>(m.experts.cache_hits) / static_cast<double>(n_runs) : 0.0);
  metric(out, "tandem_expert_copies_total", "counter",
         "experts copied to the accelerator (cache admissions and per-step staging)",
         static_cast<double>(m.experts.copied_experts));
  metric(out, "tandem_expert_copied_bytes_total", "counter", "bytes of expert weights copied",
         static_cast<double>(m.experts.copied_bytes));
  metric(out, "tandem_expert_prefetches_total", "counter",
         "experts copied ahead for the next layer's predicted routing",
         static_cast<double>(m.experts.prefetched_experts));
  metric(out, "tandem_expert_prefetch_hits_total", "counter",
         "prefetched experts that then ran on the accelerator",
         static_cast<double>(m.experts.prefetch_hits));
  metric(out, "tandem_cost_model_cpu_error_ratio", "gauge",
         "moving average of |predicted - measured| / measured CPU expert time (scheduler)",
         m.experts.cpu_cost_error);
  metric(out, "tandem_cost_model_observations_total", "counter",
         "CPU expert runs timed and fed back to the cost model",
         static_cast<double>(m.experts.cost_observations));
  metric(out, "tandem_cost_model_gpu_error_ratio", "gauge",
         "moving average of |predicted - measured| / measured accelerator expert time",
         m.experts.gpu_cost_error);
  metric(out, "tandem_cost_model_gpu_observations_total", "counter",
         "accelerator expert runs timed on the device and fed back to the cost model",
         static_cast<double>(m.experts.gpu_cost_observations));
  metric(out, "tandem_cost_model_copy_error_ratio", "gauge",
         "moving average of |predicted - measured| / measured expert copy time",
         m.experts.copy_cost_error);
  metric(out, "tandem_cost_model_copy_observations_total", "counter",
         "expert copies timed on the device and fed back to the cost model",
         static_cast<double>(m.experts.copy_cost_observations));
  metric(out, "tandem_expert_prediction_accuracy", "gauge",
         "share of activated experts that the previous layer's prediction named",
         m.experts.predicted_experts > 0 ? static_cast<double>(m.experts.predicted_correct) /
                                               static_cast<double>(m.experts.predicted_experts)
                                         : 0.0);
  metric(out, "tandem_expert_prediction_wrong_total", "counter",
         "predicted experts that the layer did not use",
         static_cast<double>(m.experts.predicted_wrong));
  metric(out, "tandem_expert_prediction_wrong_cached_total", "counter",
         "of the unused predicted experts, those already cached (their guess cost no copy)",
         static_cast<double>(m.experts.predicted_wrong_cached));
  return out;
}

}  // namespace tandem
