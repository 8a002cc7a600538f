// The OpenAI-compatible handler (engine/server/): routes and shapes, streaming, stop strings,
// errors, slots and the queue, with the handler called directly and, for the official `openai`
// client (test-only), behind Deno.serve. tiny-a's GGUF runs every text path (its vocabulary is a
// dummy one, so the text is gibberish, but every token goes through the same decoding).

import { deepStrictEqual, ok } from "node:assert/strict";
import OpenAI from "openai"; // test-only: npm openai 7.55.0 (deno.json)
import { createHandler, type HandlerOptions, loadModel } from "../mod.ts";
import { FIXTURES, logSoftmax } from "./support/helpers.ts";
import { validator } from "./support/json_schemas.ts";
import { startCliServer } from "./support/cli_serve.ts";

const tinyGguf = `${FIXTURES}tiny-a/model.gguf`;
const model = await loadModel(tinyGguf, { threads: 1 });

function handlerWith(options: HandlerOptions = {}) {
  const handler = createHandler(model, { contextLength: 128, ...options });
  const call = (path: string, body?: unknown, init: RequestInit = {}) =>
    handler(
      new Request(`http://localhost${path}`, {
        method: body === undefined ? "GET" : "POST",
        body: body === undefined
          ? undefined
          : typeof body === "string"
          ? body
          : JSON.stringify(body),
        ...init,
      }),
    );
  return { handler, call };
}

/** A value of the handler's /metrics (a metric without labels). */
async function metric(
  call: (path: string) => Promise<Response>,
  name: string,
): Promise<number> {
  const text = await (await call("/metrics")).text();
  return Number(text.match(new RegExp(`^gemma3_${name} (\\S+)$`, "m"))![1]);
}

const chatBody = (extra: Record<string, unknown> = {}) => ({
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 20,
  temperature: 0,
  ...extra,
});

/** The text of an SSE stream's events (`data:` lines), in order. */
async function events(res: Response): Promise<string[]> {
  const text = await res.text();
  ok(text.endsWith("\n\n"), "every event ends with a blank line");
  return text.split("\n\n").filter((e) => e !== "").map((e) => {
    ok(e.startsWith("data: "), `an SSE event: ${JSON.stringify(e)}`);
    return e.slice(6);
  });
}

Deno.test("server: health, models, props, tokenize round trip", async () => {
  const { call } = handlerWith();
  deepStrictEqual(await (await call("/health")).json(), { status: "ok" });
  const models = await (await call("/v1/models")).json();
  deepStrictEqual(models.data[0].id, "gemma-3");
  const props = await (await call("/props")).json();
  deepStrictEqual([props.total_slots, props.n_ctx], [4, 128]);
  const { tokens } = await (await call("/tokenize", { content: "hello" })).json();
  deepStrictEqual(tokens, model.tokenizer.encode("hello", { addBos: false }));
  deepStrictEqual(await (await call("/detokenize", { tokens })).json(), { content: "hello" });
  const { prompt } = await (await call("/apply-template", chatBody())).json();
  deepStrictEqual(prompt, "<bos><start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n");
});

Deno.test("server: /health is 503 in OpenAI's error shape until the model is ready", async () => {
  let resolve!: (m: typeof model) => void;
  const handler = createHandler(new Promise((r) => resolve = r));
  const res = await handler(new Request("http://localhost/health"));
  deepStrictEqual(res.status, 503);
  ok((await res.json()).error.message.includes("loading"));
  resolve(model);
  await new Promise((r) => setTimeout(r, 0));
  deepStrictEqual((await handler(new Request("http://localhost/health"))).status, 200);
});

Deno.test("server: a chat completion is what model.chat says, with usage and timings", async () => {
  const { call } = handlerWith();
  const res = await call("/v1/chat/completions", chatBody());
  deepStrictEqual(res.status, 200);
  const r = await res.json();
  let want = "";
  const session = model.createSession({ contextLength: 128 });
  for await (
    const t of model.chat([{ role: "user", content: "hello" }], {
      maxTokens: 20,
      temperature: 0,
      session,
    })
  ) want += t;
  session.dispose();
  deepStrictEqual(r.object, "chat.completion");
  deepStrictEqual(r.choices[0].message, { role: "assistant", content: want });
  deepStrictEqual(r.choices[0].finish_reason, "length");
  const promptTokens = model.tokenizer.encodeChat([{ role: "user", content: "hello" }]).length;
  deepStrictEqual(r.usage.prompt_tokens, promptTokens);
  deepStrictEqual(r.usage.completion_tokens, 20);
  deepStrictEqual(r.usage.total_tokens, promptTokens + 20);
  ok(r.timings.predicted_per_second > 0 && r.timings.prompt_n > 0);
});

Deno.test("server: streaming sends role, deltas that add up to the answer, finish, usage, [DONE]", async () => {
  const { call } = handlerWith();
  const plain = await (await call("/v1/chat/completions", chatBody())).json();
  const res = await call(
    "/v1/chat/completions",
    chatBody({ stream: true, stream_options: { include_usage: true } }),
  );
  deepStrictEqual(res.headers.get("content-type"), "text/event-stream");
  const ev = await events(res);
  deepStrictEqual(ev.at(-1), "[DONE]");
  const chunks = ev.slice(0, -1).map((e) => JSON.parse(e));
  deepStrictEqual(chunks[0].choices[0].delta.role, "assistant");
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  deepStrictEqual(text, plain.choices[0].message.content);
  deepStrictEqual(chunks.at(-2).choices[0].finish_reason, "length");
  deepStrictEqual(chunks.at(-1).choices, []);
  deepStrictEqual(chunks.at(-1).usage.completion_tokens, 20);
});

Deno.test("server: a stop string ends the answer with finish_reason stop, not emitted", async () => {
  const { call } = handlerWith();
  const full =
    (await (await call("/v1/completions", { prompt: "hello", max_tokens: 24, temperature: 0 }))
      .json())
      .choices[0].text as string;
  const stop = full.slice(6, 9);
  const r = await (await call("/v1/completions", {
    prompt: "hello",
    max_tokens: 24,
    temperature: 0,
    stop,
  })).json();
  deepStrictEqual(r.choices[0].text, full.slice(0, full.indexOf(stop)));
  deepStrictEqual(r.choices[0].finish_reason, "stop");
});

Deno.test("server: a returning prompt reuses its slot's cache, and gets the same tokens", async () => {
  const { call } = handlerWith({ parallel: 2 });
  // One generated token: the slot then holds the prompt with every key still in its cache.
  const body = { prompt: "hello there, how are you", max_tokens: 1, temperature: 0 };
  const first = await (await call("/v1/completions", body)).json();
  const again = await (await call("/v1/completions", body)).json();
  deepStrictEqual(first.usage.prompt_tokens_details.cached_tokens, 0);
  deepStrictEqual(again.usage.prompt_tokens_details.cached_tokens, first.usage.prompt_tokens - 1);
  deepStrictEqual(again.choices[0].text, first.choices[0].text);
  // tiny-a's sliding window is 8 tokens, its rings 8 + SPARE_SLOTS = 24: after 10 more tokens
  // they still hold every key the prompt's end needs; after 30 they have overwritten them, and
  // the slot resumes from its checkpoint before the prompt's last token.
  const short = { ...body, prompt: "and now for something else", max_tokens: 10 };
  await call("/v1/completions", short);
  const shortAgain = await (await call("/v1/completions", short)).json();
  deepStrictEqual(
    shortAgain.usage.prompt_tokens_details.cached_tokens,
    shortAgain.usage.prompt_tokens - 1,
  );
  // (A prompt of over 64 tokens: no checkpoint is taken before position 64.)
  const long = { ...body, prompt: "and then for something else ".repeat(2), max_tokens: 30 };
  const thirty = await (await call("/v1/completions", long)).json();
  deepStrictEqual(thirty.usage.completion_tokens, 30);
  const thirtyAgain = await (await call("/v1/completions", long)).json();
  deepStrictEqual(
    thirtyAgain.usage.prompt_tokens_details.cached_tokens,
    thirtyAgain.usage.prompt_tokens - 1,
  );
  deepStrictEqual(thirtyAgain.choices[0].text, thirty.choices[0].text);
  // Without checkpoints those keys are computed again, and not reported as cached.
  const bare = handlerWith({ parallel: 1, checkpoints: { budgetBytes: 0 } });
  const bareFirst = await (await bare.call("/v1/completions", long)).json();
  const bareAgain = await (await bare.call("/v1/completions", long)).json();
  deepStrictEqual(bareAgain.usage.prompt_tokens_details.cached_tokens, 0);
  deepStrictEqual(bareAgain.choices[0].text, bareFirst.choices[0].text);
  deepStrictEqual(bareAgain.choices[0].text, thirty.choices[0].text);
});

Deno.test("server: speculative lookup gives the same answer, says what it drafted, and is checked", async () => {
  const { call } = handlerWith({ parallel: 1 });
  const body = { prompt: "one two three one two three one two", max_tokens: 40, temperature: 0 };
  const plain = await (await call("/v1/completions", body)).json();
  const drafted = await (await call("/v1/completions", {
    ...body,
    speculative: { lookup: { n: 2, k: 8 } },
  })).json();
  deepStrictEqual(drafted.choices[0].text, plain.choices[0].text);
  ok(drafted.timings.draft_n > 0, `nothing drafted: ${JSON.stringify(drafted.timings)}`);
  ok(drafted.timings.draft_n_accepted >= 0);
  deepStrictEqual(await metric(call, "draft_tokens_total"), drafted.timings.draft_n);
  deepStrictEqual(
    await metric(call, "draft_tokens_accepted_total"),
    drafted.timings.draft_n_accepted,
  );
  deepStrictEqual(plain.timings.draft_n, undefined);
  // With log-probabilities and a stop string (tokens a pass decided after it leave the slot's
  // context): the same as plain, field for field.
  const chat = {
    messages: [{ role: "user", content: "one two three one two three one two three" }],
    max_tokens: 30,
    temperature: 0,
    logprobs: true,
    top_logprobs: 2,
  };
  const plainChat = await (await call("/v1/chat/completions", chat)).json();
  const draftedChat = await (await call("/v1/chat/completions", {
    ...chat,
    speculative: { lookup: { n: 1, k: 8 } },
  })).json();
  deepStrictEqual(draftedChat.choices, plainChat.choices);
  ok(draftedChat.timings.draft_n_accepted > 0, "no pass gave several tokens");
  const text = plainChat.choices[0].message.content as string;
  const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
  const stopped = { ...chat, stop: [stop] };
  const plainStop = await (await call("/v1/chat/completions", stopped)).json();
  const draftedStop = await (await call("/v1/chat/completions", {
    ...stopped,
    speculative: { lookup: { n: 1, k: 8 } },
  })).json();
  deepStrictEqual(draftedStop.choices, plainStop.choices);
  deepStrictEqual(draftedStop.choices[0].finish_reason, "stop");
  // The handler's default applies to requests that do not say.
  const byDefault = handlerWith({ parallel: 1, speculative: { lookup: { n: 2 } } });
  const d = await (await byDefault.call("/v1/completions", body)).json();
  deepStrictEqual(d.choices[0].text, plain.choices[0].text);
  ok(d.timings.draft_n > 0);
  for (const speculative of [{ lookup: { k: 99 } }, { lookup: 3 }, { ngram: {} }, "yes"]) {
    const r = await call("/v1/completions", { ...body, speculative });
    deepStrictEqual(r.status, 400, JSON.stringify(speculative));
    deepStrictEqual((await r.json()).error.param, "speculative");
  }
});

Deno.test("server: 16 concurrent requests each get what they get alone (seeded sampling too)", async () => {
  const { call } = handlerWith({ parallel: 4 });
  const bodies = Array.from({ length: 16 }, (_, i) => ({
    prompt: `request ${i}`,
    max_tokens: 12,
    temperature: i % 2 ? 0.9 : 0,
    seed: i,
  }));
  const alone = [];
  for (const b of bodies) {
    alone.push((await (await call("/v1/completions", b)).json()).choices[0].text);
  }
  const counter = (name: string) => metric(call, name);
  const [steps, batches] = [
    await counter("decode_steps_total"),
    await counter("decode_batches_total"),
  ];
  const together = await Promise.all(
    bodies.map(async (b) => (await (await call("/v1/completions", b)).json()).choices[0].text),
  );
  deepStrictEqual(together, alone);
  // The four slots decode at once: their steps share passes over the weights (batched decoding,
  // same bits as alone, as checked above). Alone, each step was a pass of its own.
  const newSteps = await counter("decode_steps_total") - steps;
  const newBatches = await counter("decode_batches_total") - batches;
  ok(newSteps >= 16 * 10, `${newSteps} decode steps`);
  ok(newBatches < newSteps / 2, `${newSteps} decode steps took ${newBatches} batches`);
});

Deno.test("server: bad input gets OpenAI-shaped errors that name the field", async () => {
  const { call } = handlerWith({ maxBodyBytes: 200 });
  const expectError = async (res: Response, status: number, pattern: RegExp) => {
    deepStrictEqual(res.status, status);
    const e = (await res.json()).error;
    ok(pattern.test(e.message), `${e.message} should match ${pattern}`);
  };
  await expectError(await call("/v1/chat/completions", "{not json"), 400, /not valid JSON/);
  await expectError(await call("/v1/chat/completions", { messages: "hi" }), 400, /messages/);
  await expectError(
    await call("/v1/chat/completions", chatBody({ temperature: "hot" })),
    400,
    /temperature/,
  );
  await expectError(await call("/v1/chat/completions", chatBody({ n: 2 })), 400, /n must be 1/);
  await expectError(
    await call("/v1/chat/completions", chatBody({ top_logprobs: 2 })),
    400,
    /top_logprobs needs logprobs/,
  );
  await expectError(
    await call("/v1/chat/completions", chatBody({ logprobs: true, top_logprobs: 21 })),
    400,
    /top_logprobs must be an integer from 0 to 20/,
  );
  await expectError(
    await call("/v1/chat/completions", chatBody({ response_format: { type: "xml" } })),
    400,
    /response_format type must be text, json_object or json_schema/,
  );
  await expectError(
    await call(
      "/v1/chat/completions",
      chatBody({
        response_format: {
          type: "json_schema",
          json_schema: { name: "n", schema: { type: "integer", minimum: 0 } },
        },
      }),
    ),
    400,
    /the keyword "minimum" is not supported/,
  );
  await expectError(
    await call("/v1/chat/completions", chatBody({ grammar: 'root ::= root "x" | "y"' })),
    400,
    /left-recursive/,
  );
  await expectError(
    await call("/v1/completions", { prompt: "x".repeat(150) }),
    400,
    /tokens; a slot holds 128/,
  );
  const body = JSON.stringify({ prompt: "a" });
  const over = body.slice(0, -1) + " ".repeat(200 - body.length + 1) + "}";
  deepStrictEqual(new TextEncoder().encode(over).length, 201);
  await expectError(await call("/v1/completions", over), 413, /limit/);
  await expectError(await call("/nowhere"), 404, /no route/);
  // Still serving.
  deepStrictEqual((await call("/v1/completions", { prompt: "a", max_tokens: 2 })).status, 200);
});

Deno.test("server: max_tokens past the context is clamped and says so", async () => {
  const { call } = handlerWith();
  const res = await call("/v1/completions", { prompt: "hello", max_tokens: 1000, temperature: 0 });
  deepStrictEqual(res.status, 200);
  const room = 128 - model.tokenizer.encode("hello").length;
  deepStrictEqual(res.headers.get("x-max-tokens-clamped"), String(room));
  const r = await res.json();
  ok(r.usage.completion_tokens <= room);
});

Deno.test("server: an API key is needed everywhere but /health", async () => {
  const { call } = handlerWith({ apiKey: "secret" });
  deepStrictEqual((await call("/health")).status, 200);
  deepStrictEqual((await call("/v1/models")).status, 401);
  const bad = { headers: { authorization: "Bearer secreT" } };
  deepStrictEqual((await call("/v1/models", undefined, bad)).status, 401);
  const good = { headers: { authorization: "Bearer secret" } };
  deepStrictEqual((await call("/v1/models", undefined, good)).status, 200);
});

Deno.test("server: a full queue gives 503 with Retry-After; an abandoned stream frees its slot", async () => {
  const { call } = handlerWith({ parallel: 1, maxQueue: 1 });
  const long = { prompt: "hello", max_tokens: 100, temperature: 0, stream: true };
  const first = await call("/v1/completions", long); // holds the only slot while it streams
  const reader = first.body!.getReader();
  await reader.read();
  const queued = call("/v1/completions", { prompt: "a", max_tokens: 2 }); // waits in the queue
  const refused = await call("/v1/completions", { prompt: "b", max_tokens: 2 });
  deepStrictEqual(refused.status, 503);
  deepStrictEqual(refused.headers.get("retry-after"), "1");
  await refused.body?.cancel();
  deepStrictEqual(await metric(call, "slots_busy"), 1);
  deepStrictEqual(await metric(call, "queue_depth"), 1);
  await reader.cancel(); // the client goes away mid-stream
  deepStrictEqual((await queued).status, 200, "the queued request got the slot");
  deepStrictEqual(await metric(call, "slots_busy"), 0);
  const generated = await metric(call, "generated_tokens_total");
  ok(
    generated < 100 + 2 + 10,
    `the abandoned stream stopped early (${generated} tokens generated in all)`,
  );
});

Deno.test("server: the official openai client, behind Deno.serve: chat, streaming, completions", async () => {
  const handler = createHandler(model, { contextLength: 128, apiKey: "k" });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  try {
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${server.addr.port}/v1`, apiKey: "k" });
    const chat = await client.chat.completions.create({
      model: "gemma-3",
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 16,
      temperature: 0,
    });
    ok(chat.choices[0].message.content!.length > 0);
    deepStrictEqual(chat.usage?.completion_tokens, 16);
    const stream = await client.chat.completions.create({
      model: "gemma-3",
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 16,
      temperature: 0,
      stream: true,
    });
    let streamed = "";
    for await (const c of stream) streamed += c.choices[0]?.delta?.content ?? "";
    deepStrictEqual(streamed, chat.choices[0].message.content);
    const done = await client.completions.create({
      model: "gemma-3",
      prompt: "hello",
      max_tokens: 8,
      temperature: 0,
      seed: 3,
    });
    deepStrictEqual(done.choices[0].finish_reason, "length");
    deepStrictEqual(done.usage?.completion_tokens, 8);
    // Seeded sampling: the same seed, the same text; stop strings; logprobs.
    const sampled = (seed: number) =>
      client.completions.create({
        model: "gemma-3",
        prompt: "hello",
        max_tokens: 12,
        temperature: 1,
        seed,
      }).then((r) => r.choices[0].text);
    deepStrictEqual(await sampled(7), await sampled(7));
    const stop = streamed.slice(2, 5);
    const stopped = await client.chat.completions.create({
      model: "gemma-3",
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 16,
      temperature: 0,
      stop: [stop],
      logprobs: true,
      top_logprobs: 2,
    });
    deepStrictEqual(stopped.choices[0].message.content, streamed.slice(0, streamed.indexOf(stop)));
    deepStrictEqual(stopped.choices[0].finish_reason, "stop");
    ok(stopped.choices[0].logprobs!.content!.every((c) => c.top_logprobs.length === 2));
  } finally {
    await server.shutdown();
  }
});

Deno.test("server: response_format json_schema / json_object and a grammar field constrain the answer (openai client)", async () => {
  const handler = createHandler(model, { contextLength: 256 });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  try {
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${server.addr.port}/v1`, apiKey: "k" });
    const schema = {
      type: "object",
      properties: { answer: { enum: ["yes", "no"] }, n: { type: "integer" } },
      required: ["answer", "n"],
    };
    const valid = validator(schema);
    for (const seed of [1, 2, 3]) {
      const r = await client.chat.completions.create({
        model: "gemma-3",
        messages: [{ role: "user", content: "hello" }],
        max_tokens: 60,
        temperature: 1,
        seed,
        response_format: { type: "json_schema", json_schema: { name: "reply", schema } },
      });
      if (r.choices[0].finish_reason === "length") continue;
      deepStrictEqual(r.choices[0].finish_reason, "stop");
      ok(valid(JSON.parse(r.choices[0].message.content!)), r.choices[0].message.content!);
    }
    // Streamed, the deltas add up to the same JSON.
    const stream = await client.chat.completions.create({
      model: "gemma-3",
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 200,
      temperature: 0,
      stream: true,
      response_format: { type: "json_schema", json_schema: { name: "reply", schema } },
    });
    let streamed = "", finish = "";
    for await (const c of stream) {
      streamed += c.choices[0]?.delta?.content ?? "";
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    deepStrictEqual(finish, "stop", streamed);
    ok(valid(JSON.parse(streamed)), streamed);
    const object = await client.chat.completions.create({
      model: "gemma-3",
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 60,
      temperature: 0,
      response_format: { type: "json_object" },
    });
    if (object.choices[0].finish_reason === "stop") {
      const v = JSON.parse(object.choices[0].message.content!);
      ok(v !== null && typeof v === "object" && !Array.isArray(v));
    }
    // grammar: llama-server's extra field, through the raw API.
    const res = await handler(
      new Request("http://localhost/v1/completions", {
        method: "POST",
        body: JSON.stringify({
          prompt: "hello",
          max_tokens: 20,
          temperature: 1,
          seed: 4,
          grammar: 'root ::= ("yes" | "no") ("," [0-9])?',
        }),
      }),
    );
    const body = await res.json();
    ok(/^(yes|no)(,[0-9])?$/.test(body.choices[0].text), body.choices[0].text);
    deepStrictEqual(body.choices[0].finish_reason, "stop");
  } finally {
    await server.shutdown();
  }
});

Deno.test("server: over a socket, each SSE event leaves when its token is ready", async () => {
  // One thread, so nothing but the yields between tokens lets the socket write.
  // 4000 tokens of tiny-a take about a second here: long enough for a second request to be
  // answered mid-stream (the event loop polls new connections at least every 50 ms).
  const handler = createHandler(model, { contextLength: 4096 });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const res = await fetch(`${base}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "hello", max_tokens: 4000, temperature: 0, stream: true }),
    });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    ok(first.startsWith("data: {"), first);
    // The first event is here and the request is still generating: the slot is busy.
    const metrics = await (await fetch(`${base}/metrics`)).text();
    ok(/^gemma3_slots_busy 1$/m.test(metrics), `the stream is still running: ${metrics}`);
    let rest = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      rest += new TextDecoder().decode(r.value);
    }
    ok(rest.endsWith("data: [DONE]\n\n"));
  } finally {
    await server.shutdown();
  }
});

Deno.test("cli.ts serve: prints the URL when ready, serves, and exits cleanly on Ctrl-C", async () => {
  const server = await startCliServer(
    ["--model", tinyGguf, "--threads", "1", "--context-length", "256", "-q"],
    "piped",
  );
  const url = server.url;
  deepStrictEqual(await (await fetch(`${url}/health`)).json(), { status: "ok" });
  const r = await (await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify(chatBody({ max_tokens: 5 })),
  })).json();
  deepStrictEqual(r.usage.completion_tokens, 5);
  // The demo page at /, cross-origin isolated (so the browser gives it threads), and the model
  // file offered to it at models/, whole and by Range.
  const page = await fetch(`${url}/`);
  deepStrictEqual(page.headers.get("content-type"), "text/html; charset=utf-8");
  deepStrictEqual(page.headers.get("cross-origin-opener-policy"), "same-origin");
  deepStrictEqual(page.headers.get("cross-origin-embedder-policy"), "require-corp");
  ok((await page.text()).includes('src="./app.js"'));
  const bundle = await fetch(`${url}/gemma3.js`);
  deepStrictEqual(bundle.headers.get("cross-origin-embedder-policy"), "require-corp");
  ok((await bundle.text()).includes("loadModel"));
  const listed = await (await fetch(`${url}/models/`)).json() as string[];
  deepStrictEqual(listed, ["models/model.gguf"]);
  const whole = new Uint8Array(await (await fetch(`${url}/${listed[0]}`)).arrayBuffer());
  deepStrictEqual(whole, await Deno.readFile(tinyGguf));
  const part = await fetch(`${url}/${listed[0]}`, { headers: { range: "bytes=4-11" } });
  deepStrictEqual(part.status, 206);
  deepStrictEqual(new Uint8Array(await part.arrayBuffer()), whole.slice(4, 12));
  deepStrictEqual((await fetch(`${url}/../deno.json`)).status, 404);
  deepStrictEqual((await fetch(`${url}/models/other.gguf`)).status, 404);
  const { status, stderr } = await server.stop("SIGINT");
  deepStrictEqual(status.code, 0, stderr);
});

Deno.test("server: logprobs are the log-softmax of the logits each token was drawn from", async () => {
  const { call } = handlerWith();
  const r = await (await call(
    "/v1/chat/completions",
    chatBody({ max_tokens: 8, logprobs: true, top_logprobs: 3 }),
  )).json();
  const content: {
    token: string;
    logprob: number;
    bytes: number[];
    top_logprobs: { logprob: number; bytes: number[] }[];
  }[] = r.choices[0].logprobs.content;
  deepStrictEqual(content.length, 8);
  // The bytes of the tokens spell the answer.
  deepStrictEqual(
    new TextDecoder().decode(Uint8Array.from(content.flatMap((c) => c.bytes))),
    r.choices[0].message.content,
  );
  // Independently: the same prompt evaluated token by token, log-softmax in float64. Both sides
  // take the same f32 logits into float64, so they differ only by float64 rounding (1e-6 is far
  // above it, and far below any real mistake: a wrong step's log-probs differ by whole units).
  const prompt = model.tokenizer.encodeChat([{ role: "user", content: "hello" }]);
  const s = model.createSession({ contextLength: 128 });
  let logits = await s.eval(prompt);
  const ids: number[] = [];
  for (let i = 0; i < 8; i++) {
    const lp = logSoftmax(logits);
    const order = [...lp.keys()].sort((a, b) => lp[b] - lp[a] || a - b);
    ids.push(order[0]); // greedy: the best
    ok(
      Math.abs(content[i].logprob - lp[order[0]]) < 1e-6,
      `step ${i}: ${content[i].logprob} vs ${lp[order[0]]}`,
    );
    deepStrictEqual(content[i].top_logprobs.length, 3);
    content[i].top_logprobs.forEach((t, k) => {
      ok(Math.abs(t.logprob - lp[order[k]]) < 1e-6, `step ${i}, alternative ${k}`);
      deepStrictEqual(t.bytes, [...model.tokenizer.tokenBytes(order[k])]);
    });
    logits = await s.eval([order[0]]);
  }
  s.dispose();
  deepStrictEqual(
    content.map((c) => c.bytes),
    ids.map((id) => [...model.tokenizer.tokenBytes(id)]),
  );

  // Streaming gives the same entries, spread over the chunks.
  const ev = await events(
    await call(
      "/v1/chat/completions",
      chatBody({ max_tokens: 8, logprobs: true, top_logprobs: 3, stream: true }),
    ),
  );
  const streamed = ev.slice(0, -1).flatMap((e) =>
    JSON.parse(e).choices[0]?.logprobs?.content ?? []
  );
  deepStrictEqual(streamed, content);

  // The completions API's shape; a stop string's tokens are not in it.
  const full = (await (await call("/v1/completions", {
    prompt: "hello",
    max_tokens: 24,
    temperature: 0,
    logprobs: 2,
  })).json())
    .choices[0];
  deepStrictEqual(full.logprobs.tokens.length, 24);
  deepStrictEqual(full.logprobs.token_logprobs.length, 24);
  deepStrictEqual(Object.keys(full.logprobs.top_logprobs[0]).length <= 2, true);
  const stop = full.text.slice(6, 9);
  const cut = (await (await call("/v1/completions", {
    prompt: "hello",
    max_tokens: 24,
    temperature: 0,
    logprobs: 2,
    stop,
  })).json()).choices[0];
  const kept = cut.logprobs.text_offset.length;
  ok(kept < 24 && cut.logprobs.text_offset.every((o: number) => o < cut.text.length));
  deepStrictEqual(cut.logprobs.token_logprobs, full.logprobs.token_logprobs.slice(0, kept));
});

Deno.test("cli.ts serve: bad flags are one line and exit code 2", async () => {
  for (
    const [flag, value, pattern] of [
      ["--max-body", "lots", /--max-body must be a size such as/],
      ["--parallel", "0", /--parallel must be an integer >= 1/],
      ["--checkpoint-memory", "much", /--checkpoint-memory must be a size such as/],
      ["--lookup", "3", /--lookup needs n,k/],
    ] as const
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../cli.ts", import.meta.url).pathname, "serve", flag, value],
      stdout: "piped",
      stderr: "piped",
    }).output();
    deepStrictEqual(out.code, 2);
    const err = new TextDecoder().decode(out.stderr);
    ok(pattern.test(err), err);
    deepStrictEqual(err.trim().split("\n").length, 1);
  }
});

Deno.test("server: fewer slots where memory runs out, and /props says why", async () => {
  const { SlotPool } = await import("../engine/server/slots.ts");
  let made = 0;
  const tight = {
    createSession: (o: { contextLength: number }) => {
      if (made === 2) {
        throw new RangeError("WebAssembly.Memory.grow(): Maximum memory size exceeded");
      }
      made++;
      return model.createSession(o);
    },
  } as unknown as typeof model;
  const pool = new SlotPool(tight, 4, 64, 8);
  deepStrictEqual(pool.slots.length, 2);
  ok(/2 of 4 slots: no memory/.test(pool.shortfall!), pool.shortfall);
  pool.dispose();
  made = 2;
  let error = "";
  try {
    new SlotPool(tight, 4, 64, 8);
  } catch (e) {
    error = (e as Error).message;
  }
  ok(/Maximum memory/.test(error), "no slot at all is an error");
});
