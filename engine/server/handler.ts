// An OpenAI-compatible HTTP API as one Web-standard fetch handler, (Request) => Promise<Response>:
// Deno.serve, Bun.serve and edge functions mount it as it is (Node through a small adapter). The
// routes and shapes are llama-server's: /health, /v1/models, /v1/chat/completions,
// /v1/completions, /tokenize, /detokenize, /apply-template, /props, /metrics.
//
// The routing is written out here rather than taken from a router package: this module is part
// of mod.ts, which must import from a URL in Deno and run unchanged in Bun, Node and browsers,
// and no one specifier for an npm package works in all of them (Deno from a URL needs `npm:`,
// which Bun and Node do not resolve). Nine fixed routes do not need more than a table.

import type { Gemma3Model } from "../model.ts";
import type { CheckpointOptions } from "../session.ts";
import type { DecodeBatchStats } from "../decode_batcher.ts";
import { generateText, type TextGenerationEnd, type TextLogprob } from "../generate_text.ts";
import { ApiError, type CompletionParams, parseCompletion } from "./openai.ts";
import { QueueFullError, type Slot, SlotPool } from "./slots.ts";
import { lookupSettings, type SpeculativeOptions } from "../prompt_lookup.ts";

/** Options of `createHandler`. */
export interface HandlerOptions {
  /** Sessions serving requests at once, each with its own KV cache (default 4). */
  parallel?: number;
  /** Tokens each slot holds, prompt and answer (default 4096, or the model's maximum). */
  contextLength?: number;
  /** Requests waiting for a slot before new ones get 503 (default 64). */
  maxQueue?: number;
  /** Largest request body in bytes (default 1 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** When set, every route but /health needs `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Sends CORS headers allowing this origin ("*" for any). */
  corsOrigin?: string;
  /** The model's name in /v1/models and in responses (default "gemma-3"). */
  modelName?: string;
  /** Each slot's sliding-window checkpoints (default: a session's, 64 MiB a slot, one every 512
   * positions and at the ends of turns): a returning conversation that edits its last message
   * or regenerates an answer resumes from one instead of evaluating everything again. */
  checkpoints?: CheckpointOptions;
  /** Speculative decoding for requests that do not say (their `speculative` field), e.g.
   * `{ lookup: { n: 3, k: 8 } }`; default none. */
  speculative?: SpeculativeOptions;
}

/** A Web-standard fetch handler, as Deno.serve, Bun.serve and edge functions take. */
export type FetchHandler = (request: Request) => Promise<Response>;

/**
 * The API as a fetch handler. `model` may still be loading (a promise): /health answers 503
 * until it is ready, and other routes wait for it.
 */
export function createHandler(
  model: Gemma3Model | Promise<Gemma3Model>,
  options: HandlerOptions = {},
): FetchHandler {
  const name = options.modelName ?? "gemma-3";
  lookupSettings(options.speculative); // a bad default fails here, not in every request
  const maxBody = options.maxBodyBytes ?? 1 << 20;
  const metrics = new Metrics();
  let ready: { model: Gemma3Model; pool: SlotPool; contextLength: number } | undefined;
  let failed: string | undefined;
  const setUp = (m: Gemma3Model) => {
    const pool = new SlotPool(
      m,
      options.parallel ?? 4,
      options.contextLength,
      options.maxQueue ?? 64,
      options.checkpoints,
    );
    return ready = { model: m, pool, contextLength: pool.contextLength };
  };
  // A model already loaded is ready at once; one still loading, when its promise settles.
  const loading = model instanceof Promise
    ? model.then(setUp, (e) => {
      failed = (e as Error).message;
      throw e;
    })
    : Promise.resolve(setUp(model));
  loading.catch(() => {}); // reported by /health and each request

  const routes: Record<string, (req: Request) => Promise<Response>> = {
    "GET /health": () => {
      if (ready) return Promise.resolve(Response.json({ status: "ok" }));
      throw new ApiError(
        503,
        failed ? `the model failed to load: ${failed}` : "the model is loading",
        null,
        "unavailable_error",
      );
    },
    "GET /v1/models": () =>
      Promise.resolve(Response.json({
        object: "list",
        data: [{ id: name, object: "model", created: 0, owned_by: "gemma3-wasm" }],
      })),
    "POST /v1/chat/completions": (req) => completion(req, "chat"),
    "POST /v1/completions": (req) => completion(req, "completion"),
    "POST /tokenize": async (req) => {
      const body = await readJson(req, maxBody);
      const { model } = await loaded();
      if (typeof body.content !== "string") {
        throw new ApiError(400, "content must be a string", "content");
      }
      const tokens = model.tokenizer.encode(body.content, { addBos: body.add_special === true });
      return Response.json({ tokens });
    },
    "POST /detokenize": async (req) => {
      const body = await readJson(req, maxBody);
      const { model } = await loaded();
      const ids = body.tokens;
      if (!Array.isArray(ids) || !ids.every((t) => Number.isInteger(t))) {
        throw new ApiError(400, "tokens must be an array of token ids", "tokens");
      }
      return Response.json({ content: model.tokenizer.decode(ids as number[]) });
    },
    "POST /apply-template": async (req) => {
      const body = await readJson(req, maxBody);
      const { model } = await loaded();
      const p = parseCompletion({ messages: body.messages }, "chat");
      return Response.json({
        prompt: model.tokenizer.applyChatTemplate(p.messages!, { addGenerationPrompt: true }),
      });
    },
    "GET /props": async () => {
      const { model, pool, contextLength } = await loaded();
      return Response.json({
        model: name,
        total_slots: pool.slots.length,
        ...(pool.shortfall ? { slots_note: pool.shortfall } : {}),
        n_ctx: contextLength,
        default_generation_settings: { ...model.generationDefaults, n_ctx: contextLength },
        chat_template: "gemma3",
        backend: model.backend,
        backend_reason: model.backendReason,
        threads: model.threads,
        // Why fewer threads run than asked for (an edge function without workers, a page that is
        // not cross-origin isolated); absent when all run.
        ...(model.threadsFallbackReason ? { threads_note: model.threadsFallbackReason } : {}),
      });
    },
    "GET /metrics": () =>
      Promise.resolve(
        new Response(metrics.text(ready?.pool, ready?.model.decodeBatchStats), {
          headers: { "content-type": "text/plain; version=0.0.4" },
        }),
      ),
  };

  async function loaded() {
    return ready ?? await loading.catch((e) => {
      throw new ApiError(503, `the model failed to load: ${(e as Error).message}`);
    });
  }

  async function completion(req: Request, kind: "chat" | "completion"): Promise<Response> {
    const params = parseCompletion(await readJson(req, maxBody), kind);
    const { model, pool, contextLength } = await loaded();
    const tok = model.tokenizer;
    const prompt = params.messages
      ? tok.encodeChat(params.messages)
      : typeof params.prompt === "string"
      ? tok.encode(params.prompt)
      : params.prompt!;
    for (const id of prompt) {
      if (id < 0 || id >= model.config.vocabSize) {
        throw new ApiError(400, `token id ${id} is outside the vocabulary`, "prompt");
      }
    }
    if (prompt.length >= contextLength) {
      throw new ApiError(
        400,
        `the prompt is ${prompt.length} tokens; a slot holds ${contextLength}, prompt and answer`,
        kind === "chat" ? "messages" : "prompt",
      );
    }
    const room = contextLength - prompt.length;
    const maxTokens = Math.min(params.maxTokens ?? room, room);
    const headers: Record<string, string> = {};
    if (params.maxTokens !== undefined && params.maxTokens > room) {
      headers["x-max-tokens-clamped"] = String(room);
    }
    params.speculative ??= options.speculative;
    const abort = new AbortController();
    req.signal?.addEventListener("abort", () => abort.abort(), { once: true });
    let slot: Slot;
    try {
      slot = await pool.acquire(prompt, abort.signal);
    } catch (e) {
      if (e instanceof QueueFullError) {
        throw new ApiError(503, e.message, null, "unavailable_error", { "retry-after": "1" });
      }
      throw e;
    }
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${crypto.randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const object = kind === "chat" ? "chat.completion" : "text_completion";
    const run = (emit: (text: string, logprobs: Logprobs) => void) =>
      generate(model, slot, prompt, params, maxTokens, abort.signal, emit)
        .finally(() => pool.release(slot));
    const withLogprobs = params.logprobs !== undefined;
    /** A choice in OpenAI's shape: a message or a delta (chat), or text (completions). */
    const choice = (text: string, finish: string | null, delta: boolean, lps: Logprobs) => {
      const logprobs = withLogprobs ? formatLogprobs(kind, lps) : null;
      if (kind === "completion") return { index: 0, text, finish_reason: finish, logprobs };
      return delta
        ? {
          index: 0,
          delta: text === "" ? {} : { content: text },
          logprobs,
          finish_reason: finish,
        }
        : {
          index: 0,
          message: { role: "assistant", content: text },
          logprobs,
          finish_reason: finish,
        };
    };

    if (!params.stream) {
      let text = "";
      const r = await run((t) => text += t);
      metrics.add(r);
      return Response.json({
        id,
        object,
        created,
        model: name,
        choices: [
          choice(text, r.finish, false, {
            logprobs: r.logprobs ?? [],
            offsets: r.textOffsets ?? [],
          }),
        ],
        usage: usage(r),
        timings: timings(r),
      }, { headers });
    }

    const enc = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        const send = (data: unknown) => {
          if (!abort.signal.aborted) {
            controller.enqueue(enc.encode(`data: ${JSON.stringify(data)}\n\n`));
          }
        };
        const chunk = (c: unknown) => ({
          id,
          object: `${object}.chunk`,
          created,
          model: name,
          choices: [c],
        });
        if (kind === "chat") {
          send(chunk({ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }));
        }
        run((t, lps) => send(chunk(choice(t, null, true, lps)))).then((r) => {
          metrics.add(r);
          send({ ...chunk(choice("", r.finish, true, NO_LOGPROBS)), timings: timings(r) });
          if (params.includeUsage) {
            send({
              id,
              object: `${object}.chunk`,
              created,
              model: name,
              choices: [],
              usage: usage(r),
            });
          }
          // A stream the client cancelled is closed already.
          if (abort.signal.aborted) return;
          controller.enqueue(enc.encode("data: [DONE]\n\n"));
          controller.close();
        }, (e) => {
          if (!abort.signal.aborted) controller.error(e);
        });
      },
      cancel() {
        abort.abort();
      },
    });
    return new Response(stream, {
      headers: {
        ...headers,
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
      },
    });
  }

  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    let res: Response;
    try {
      if (req.method === "OPTIONS" && options.corsOrigin) res = new Response(null, { status: 204 });
      else {
        const route = routes[`${req.method} ${url.pathname.replace(/\/+$/, "") || "/"}`];
        if (!route) {
          throw new ApiError(
            404,
            `no route ${req.method} ${url.pathname}`,
            null,
            "not_found_error",
          );
        }
        if (options.apiKey !== undefined && url.pathname !== "/health") {
          checkKey(req, options.apiKey);
        }
        res = await route(req);
      }
    } catch (e) {
      res = e instanceof ApiError
        ? e.toResponse()
        : new ApiError(500, (e as Error).message ?? String(e)).toResponse();
    }
    metrics.requests.set(res.status, (metrics.requests.get(res.status) ?? 0) + 1);
    if (options.corsOrigin) {
      res.headers.set("access-control-allow-origin", options.corsOrigin);
      res.headers.set("access-control-allow-headers", "authorization, content-type");
      res.headers.set("access-control-allow-methods", "GET, POST, OPTIONS");
    }
    return res;
  };
}

/** What one generation did, with its finish reason as OpenAI names it. */
interface Result extends TextGenerationEnd {
  finish: "stop" | "length";
}

/** Tokens' log-probabilities and where their text starts in the answer. */
interface Logprobs {
  logprobs: TextLogprob[];
  offsets: number[];
}
const NO_LOGPROBS: Logprobs = { logprobs: [], offsets: [] };

/** Runs one request on its slot: keeps the prefix the slot holds, evaluates the rest of the
 * prompt, then generates, emitting text as it is decoded (stop strings held back). */
async function generate(
  model: Gemma3Model,
  slot: Slot,
  prompt: number[],
  p: CompletionParams,
  maxTokens: number,
  signal: AbortSignal,
  emit: (text: string, logprobs: Logprobs) => void,
): Promise<Result> {
  const sampling = Object.fromEntries(
    Object.entries({
      temperature: p.temperature,
      topP: p.topP,
      topK: p.topK,
      minP: p.minP,
      repetitionPenalty: p.repetitionPenalty,
      seed: p.seed,
    }).filter(([, v]) => v !== undefined),
  );
  const text = generateText(slot.session, model.tokenizer, prompt, {
    ...model.generationDefaults,
    ...sampling,
    ...p.constraint,
    maxTokens,
    stopTokens: model.defaultStopTokens,
    stop: p.stop,
    logprobs: p.logprobs,
    speculative: p.speculative,
    signal,
  });
  for (let r = await text.next();; r = await text.next()) {
    if (r.done) {
      return { ...r.value, finish: r.value.finishReason === "length" ? "length" : "stop" };
    }
    emit(r.value.text, r.value);
  }
}

/** Log-probabilities in OpenAI's shape: chat's `{ content: [{ token, logprob, bytes,
 * top_logprobs }] }`, or the completions API's parallel lists. */
function formatLogprobs(kind: "chat" | "completion", lps: Logprobs) {
  if (kind === "chat") return { content: lps.logprobs };
  return {
    tokens: lps.logprobs.map((l) => l.token),
    token_logprobs: lps.logprobs.map((l) => l.logprob),
    top_logprobs: lps.logprobs.map((l) =>
      Object.fromEntries(l.top_logprobs.map((t) => [t.token, t.logprob]))
    ),
    text_offset: lps.offsets,
  };
}

const usage = (r: Result) => ({
  prompt_tokens: r.promptTokens,
  completion_tokens: r.completionTokens,
  total_tokens: r.promptTokens + r.completionTokens,
  prompt_tokens_details: { cached_tokens: r.cachedTokens },
});

const timings = (r: Result) => {
  const evaluated = r.promptTokens - r.cachedTokens;
  return {
    cache_n: r.cachedTokens,
    prompt_n: evaluated,
    prompt_ms: r.promptMs,
    prompt_per_second: evaluated / (r.promptMs / 1000),
    predicted_n: r.completionTokens,
    predicted_ms: r.generateMs,
    predicted_per_second: r.completionTokens / (r.generateMs / 1000),
    // As llama-server names them: tokens drafted, and those the model agreed with.
    ...r.speculative &&
      { draft_n: r.speculative.drafted, draft_n_accepted: r.speculative.accepted },
  };
};

/** Reads a JSON body of at most `limit` bytes (413 past it, 400 if it is not JSON). */
async function readJson(req: Request, limit: number): Promise<Record<string, unknown>> {
  const declared = Number(req.headers.get("content-length"));
  if (declared > limit) {
    throw new ApiError(413, `the body is ${declared} bytes; the limit is ${limit}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    for await (const c of req.body) {
      size += c.length;
      if (size > limit) throw new ApiError(413, `the body is over the limit of ${limit} bytes`);
      chunks.push(c);
    }
  }
  const bytes = new Uint8Array(size);
  let o = 0;
  for (const c of chunks) bytes.set(c, (o += c.length) - c.length);
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ApiError(400, `the body is not valid JSON: ${(e as Error).message}`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new ApiError(400, "the request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

/** 401 unless the request carries the key (compared in constant time). */
function checkKey(req: Request, key: string): void {
  const got = /^Bearer (.+)$/i.exec(req.headers.get("authorization") ?? "")?.[1] ?? "";
  const a = new TextEncoder().encode(got), b = new TextEncoder().encode(key);
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i];
  if (diff !== 0) {
    throw new ApiError(401, "a valid API key is needed (Authorization: Bearer <key>)");
  }
}

/** Counters for /metrics, in Prometheus' text format. */
class Metrics {
  requests = new Map<number, number>();
  promptTokens = 0;
  cachedTokens = 0;
  generatedTokens = 0;
  promptSeconds = 0;
  generateSeconds = 0;
  draftedTokens = 0;
  acceptedTokens = 0;

  add(r: Result): void {
    this.draftedTokens += r.speculative?.drafted ?? 0;
    this.acceptedTokens += r.speculative?.accepted ?? 0;
    this.promptTokens += r.promptTokens - r.cachedTokens;
    this.cachedTokens += r.cachedTokens;
    this.generatedTokens += r.completionTokens;
    this.promptSeconds += r.promptMs / 1000;
    this.generateSeconds += r.generateMs / 1000;
  }

  text(pool?: SlotPool, batches?: DecodeBatchStats): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, values: [string, number][]) => {
      lines.push(`# HELP gemma3_${name} ${help}`, `# TYPE gemma3_${name} ${type}`);
      for (const [labels, v] of values) lines.push(`gemma3_${name}${labels} ${v}`);
    };
    metric(
      "requests_total",
      "counter",
      "HTTP requests answered, by status",
      [...this.requests].map(([s, n]) => [`{status="${s}"}`, n]),
    );
    metric("prompt_tokens_total", "counter", "Prompt tokens evaluated", [["", this.promptTokens]]);
    metric("prompt_tokens_cached_total", "counter", "Prompt tokens a slot already held", [[
      "",
      this.cachedTokens,
    ]]);
    metric("generated_tokens_total", "counter", "Tokens generated", [["", this.generatedTokens]]);
    metric("prompt_seconds_total", "counter", "Time spent evaluating prompts", [[
      "",
      this.promptSeconds,
    ]]);
    metric("generation_seconds_total", "counter", "Time spent generating", [[
      "",
      this.generateSeconds,
    ]]);
    metric("prompt_tokens_per_second", "gauge", "Prompt tokens per second, over all requests", [[
      "",
      this.promptSeconds > 0 ? this.promptTokens / this.promptSeconds : 0,
    ]]);
    metric(
      "generated_tokens_per_second",
      "gauge",
      "Generated tokens per second, per request, over all requests",
      [[
        "",
        this.generateSeconds > 0 ? this.generatedTokens / this.generateSeconds : 0,
      ]],
    );
    metric("draft_tokens_total", "counter", "Tokens drafted by prompt lookup", [[
      "",
      this.draftedTokens,
    ]]);
    metric(
      "draft_tokens_accepted_total",
      "counter",
      "Drafted tokens the model agreed with (each saved a forward pass)",
      [["", this.acceptedTokens]],
    );
    metric("decode_steps_total", "counter", "Decode steps (one token of one slot)", [[
      "",
      batches?.steps ?? 0,
    ]]);
    metric(
      "decode_batches_total",
      "counter",
      "Passes over the weights those steps took (slots decoding at once share one)",
      [["", batches?.batches ?? 0]],
    );
    metric("slots_total", "gauge", "Slots (sessions serving requests)", [[
      "",
      pool?.slots.length ?? 0,
    ]]);
    metric("slots_busy", "gauge", "Slots serving a request now", [["", pool?.busy ?? 0]]);
    metric("queue_depth", "gauge", "Requests waiting for a slot", [["", pool?.queued ?? 0]]);
    return lines.join("\n") + "\n";
  }
}
