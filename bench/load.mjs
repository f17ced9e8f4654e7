// Load and fault generator for `tandem serve` (loopback only). Clients loop for DURATION
// seconds mixing streaming, non-streaming, cancelled (aborted mid-stream) and malformed
// requests, while a watcher polls /health. Prints a JSON summary; exits 1 when a rule breaks:
// any 5xx other than 503, a /health failure, or an accepted request that neither completed
// nor was cancelled by us.
const base = process.env.TANDEM_URL ?? "http://127.0.0.1:8080";
const clients = Number(process.env.CLIENTS ?? 64);
const duration = Number(process.env.DURATION ?? 120) * 1000;
const end = Date.now() + duration;
const codes = {};
const latencies = [];
let requests = 0, cancelled = 0, incomplete = 0, healthFailures = 0, healthChecks = 0;

const malformed = [
  "{not json", JSON.stringify({ prompt: 5 }), JSON.stringify({ messages: [] }),
  JSON.stringify({ prompt: "x", max_tokens: "many" }), JSON.stringify({ prompt: "x", temperature: -1 }),
  JSON.stringify({ messages: [{ role: "wizard", content: "x" }] }), "",
];

function count(code) { codes[code] = (codes[code] ?? 0) + 1; }

async function one(kind) {
  const t0 = Date.now();
  const chat = Math.random() < 0.5;
  const url = `${base}/v1/${chat ? "chat/completions" : "completions"}`;
  let body = chat ? { messages: [{ role: "user", content: "Tell me a story" }] } : { prompt: "Once upon a time" };
  body = { ...body, max_tokens: 16 + Math.floor(Math.random() * 32), temperature: 0.8, seed: requests };
  const ctrl = new AbortController();
  try {
    if (kind === "malformed") {
      const r = await fetch(url, { method: "POST", body: malformed[requests % malformed.length], headers: { "Content-Type": "application/json" } });
      count(r.status);
      await r.text();
      return;
    }
    body.stream = kind !== "plain";
    const r = await fetch(url, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" }, signal: ctrl.signal });
    count(r.status);
    if (r.status !== 200) { await r.text(); return; }
    if (kind === "plain") {
      const j = await r.json();
      if (!j.choices?.[0]?.finish_reason) incomplete++;
    } else {
      const reader = r.body.getReader();
      let text = "", chunks = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
        if (kind === "cancel" && ++chunks === 3) { ctrl.abort(); cancelled++; return; }
      }
      if (!text.includes("data: [DONE]")) incomplete++;
    }
    latencies.push(Date.now() - t0);
  } catch (e) {
    if (e.name === "AbortError") return;
    count("network-error");
  }
}

async function client(i) {
  const kinds = ["stream", "plain", "cancel", "malformed"];
  while (Date.now() < end) {
    requests++;
    await one(kinds[(i + requests) % kinds.length]);
  }
}

async function watchHealth() {
  while (Date.now() < end) {
    healthChecks++;
    try {
      const r = await fetch(`${base}/health`, { signal: AbortSignal.timeout(5000) });
      if (r.status !== 200) healthFailures++;
    } catch { healthFailures++; }
    await new Promise((r) => setTimeout(r, 500));
  }
}

await Promise.all([watchHealth(), ...Array.from({ length: clients }, (_, i) => client(i))]);
latencies.sort((a, b) => a - b);
const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null;
const bad5xx = Object.entries(codes).filter(([c]) => Number(c) >= 500 && Number(c) !== 503).reduce((n, [, v]) => n + v, 0);
const summary = { clients, duration_s: duration / 1000, requests, by_code: codes, cancelled, incomplete,
  p50_ms: pct(0.5), p99_ms: pct(0.99), health_checks: healthChecks, health_failures: healthFailures, bad_5xx: bad5xx };
console.log(JSON.stringify(summary));
process.exit(bad5xx || healthFailures || incomplete || codes["network-error"] ? 1 : 0);
