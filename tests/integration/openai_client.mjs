// Drives `tandem serve` with the official `openai` npm client. Usage:
//   node openai_client.mjs BASE_URL API_KEY
// Exits non-zero with a message on the first failed check.
import OpenAI from "openai";
import assert from "node:assert/strict";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });

async function streamText(stream, pick) {
  let text = "";
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    text += pick(choice) ?? "";
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  return { text, finish, usage };
}

async function main() {
  const models = await client.models.list();
  assert.ok(models.data.length === 1, "one model listed");
  const model = models.data[0].id;

  // Completions: non-streaming and streaming agree (greedy), usage is counted.
  const params = { model, prompt: "Once upon a time", max_tokens: 12, temperature: 0, ignore_eos: true };
  const plain = await client.completions.create(params);
  assert.equal(plain.choices[0].finish_reason, "length");
  assert.equal(plain.usage.completion_tokens, 12);
  assert.equal(plain.usage.total_tokens, plain.usage.prompt_tokens + 12);
  const streamed = await streamText(
    await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }),
    (c) => c.text);
  assert.equal(streamed.text, plain.choices[0].text, "stream == non-stream");
  assert.equal(streamed.finish, "length");
  assert.deepEqual(streamed.usage, plain.usage);

  // Chat: non-streaming and streaming.
  const messages = [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello!" }];
  const chat = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0 });
  assert.equal(chat.choices[0].message.role, "assistant");
  assert.ok(chat.usage.prompt_tokens > 0);
  const chatStream = await streamText(
    await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, stream: true }),
    (c) => c.delta?.content);
  assert.equal(chatStream.text, chat.choices[0].message.content, "chat stream == non-stream");

  // Stop strings end the text before the stop.
  const full = plain.choices[0].text;
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
  const stopped = await client.completions.create({ ...params, stop: [stop] });
  assert.equal(stopped.choices[0].text, full.slice(0, full.indexOf(stop)));
  assert.equal(stopped.choices[0].finish_reason, "stop");

  // Seeds reproduce sampled text.
  const seeded = { model, prompt: "Hello", max_tokens: 16, temperature: 1.0, seed: 77, ignore_eos: true };
  const a = await client.completions.create(seeded);
  const b = await client.completions.create(seeded);
  assert.equal(a.choices[0].text, b.choices[0].text, "same seed, same text");

  // 8 concurrent streams equal their solo runs.
  const prompts = ["Once upon a time", "The capital of France is", "In a hole", "1 2 3", "It was the best",
                   "Call me Ishmael.", "To be or not", "A"];
  const run = async (p) => (await streamText(
    await client.completions.create({ model, prompt: p, max_tokens: 16, temperature: 0, ignore_eos: true,
                                      stream: true }), (c) => c.text)).text;
  const solo = [];
  for (const p of prompts) solo.push(await run(p));
  const together = await Promise.all(prompts.map(run));
  assert.deepEqual(together, solo, "concurrent == solo");

  // Errors come back as OpenAI errors with status and param.
  try {
    await client.completions.create({ model, prompt: "x", max_tokens: "five" });
    assert.fail("a string max_tokens must fail");
  } catch (e) {
    assert.equal(e.status, 400);
    assert.equal(e.param, "max_tokens");
  }
  const bad = new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 });
  try {
    await bad.models.list();
    assert.fail("a wrong key must fail");
  } catch (e) {
    assert.equal(e.status, 401);
  }
  console.log("openai client checks passed");
}

main().catch((e) => {
  console.error("FAILED:", e?.message ?? e);
  process.exit(1);
});
