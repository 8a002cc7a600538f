// OpenAI's wire format for /v1/chat/completions and /v1/completions: the request fields this
// server takes, checked one by one (a wrong field is a 400 that names it), and the error shape.

import type { ChatMessage } from "../tokenizer/chat_template.ts";

/** An error to send as OpenAI sends them: { error: { message, type, param, code } }. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = status === 401
      ? "authentication_error"
      : status >= 500
      ? "server_error"
      : "invalid_request_error",
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toResponse(): Response {
    return Response.json(
      { error: { message: this.message, type: this.type, param: this.param, code: this.status } },
      { status: this.status, headers: this.headers },
    );
  }
}

/** What a completion request asks for, checked. */
export interface CompletionParams {
  /** Chat messages (chat completions) or the prompt (completions: text or token ids). */
  messages?: ChatMessage[];
  prompt?: string | number[];
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
  stop: string[];
  /** Log-probabilities of each generated token and of this many alternatives (0-20); undefined:
   * none. Chat: logprobs true + top_logprobs; completions: logprobs as that number. */
  logprobs?: number;
  stream: boolean;
  includeUsage: boolean;
}

type Body = Record<string, unknown>;

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

function num(body: Body, key: string, check: (v: number) => boolean, what: string) {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (!isNum(v) || !check(v)) {
    throw new ApiError(400, `${key} must be ${what}, got ${JSON.stringify(v)}`, key);
  }
  return v;
}

/** Checks a chat or completion request body (a JSON object: the handler's readJson). */
export function parseCompletion(b: Body, kind: "chat" | "completion"): CompletionParams {
  const out: CompletionParams = { stop: [], stream: false, includeUsage: false };
  if (kind === "chat") out.messages = parseMessages(b.messages);
  else out.prompt = parsePrompt(b.prompt);

  const maxTokens =
    num(b, "max_completion_tokens", (v) => Number.isInteger(v) && v >= 0, "an integer >= 0") ??
      num(b, "max_tokens", (v) => Number.isInteger(v) && v >= 0, "an integer >= 0");
  out.maxTokens = maxTokens;
  out.temperature = num(b, "temperature", (v) => v >= 0 && v <= 2, "a number from 0 to 2");
  out.topP = num(b, "top_p", (v) => v > 0 && v <= 1, "a number in (0, 1]");
  out.topK = num(b, "top_k", (v) => Number.isInteger(v) && v >= 0, "an integer >= 0");
  out.minP = num(b, "min_p", (v) => v >= 0 && v <= 1, "a number from 0 to 1");
  out.repetitionPenalty = num(b, "repetition_penalty", (v) => v > 0, "a number > 0");
  out.seed = num(b, "seed", Number.isInteger, "an integer");
  for (const key of ["frequency_penalty", "presence_penalty"]) {
    const v = num(b, key, (x) => x >= -2 && x <= 2, "a number from -2 to 2");
    if (v !== undefined && v !== 0) {
      throw new ApiError(
        400,
        `${key} is not supported by this server (use repetition_penalty); send 0 or leave it out`,
        key,
      );
    }
  }
  const n = num(b, "n", Number.isInteger, "an integer");
  if (n !== undefined && n !== 1) {
    throw new ApiError(400, "n must be 1 (one choice per request)", "n");
  }
  const topRange = (v: number) => Number.isInteger(v) && v >= 0 && v <= 20;
  if (kind === "chat") {
    if (b.logprobs !== undefined && b.logprobs !== null && typeof b.logprobs !== "boolean") {
      throw new ApiError(400, "logprobs must be true or false", "logprobs");
    }
    const top = num(b, "top_logprobs", topRange, "an integer from 0 to 20");
    if (top !== undefined && b.logprobs !== true) {
      throw new ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs");
    }
    if (b.logprobs === true) out.logprobs = top ?? 0;
  } else out.logprobs = num(b, "logprobs", topRange, "an integer from 0 to 20");
  const format = b.response_format as { type?: unknown } | undefined | null;
  if (format !== undefined && format !== null) {
    if (typeof format !== "object" || typeof format.type !== "string") {
      throw new ApiError(400, "response_format must be an object with a type", "response_format");
    }
    if (format.type !== "text") {
      throw new ApiError(
        400,
        `response_format ${
          JSON.stringify(format.type)
        } is not supported yet (constrained decoding is to come); "text" is`,
        "response_format",
      );
    }
  }
  if (b.stop !== undefined && b.stop !== null) {
    const stops = typeof b.stop === "string" ? [b.stop] : b.stop;
    if (
      !Array.isArray(stops) || stops.length > 4 ||
      !stops.every((s) => typeof s === "string" && s !== "")
    ) {
      throw new ApiError(400, "stop must be a non-empty string or an array of up to 4", "stop");
    }
    out.stop = stops as string[];
  }
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== "boolean") {
    throw new ApiError(400, "stream must be true or false", "stream");
  }
  out.stream = b.stream === true;
  const so = b.stream_options as { include_usage?: unknown } | undefined | null;
  if (so !== undefined && so !== null) {
    if (typeof so !== "object") {
      throw new ApiError(400, "stream_options must be an object", "stream_options");
    }
    out.includeUsage = so.include_usage === true;
  }
  return out;
}

function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) {
    throw new ApiError(400, "messages must be a non-empty array", "messages");
  }
  return v.map((m, i) => {
    const where = `messages[${i}]`;
    if (m === null || typeof m !== "object") {
      throw new ApiError(400, `${where} must be an object`, where);
    }
    const { role, content } = m as { role?: unknown; content?: unknown };
    if (!["system", "user", "assistant", "developer"].includes(role as string)) {
      throw new ApiError(
        400,
        `${where}.role must be system, user or assistant, got ${JSON.stringify(role)}`,
        `${where}.role`,
      );
    }
    let text: string;
    if (typeof content === "string") text = content;
    else if (Array.isArray(content)) {
      text = content.map((p, j) => {
        const part = p as { type?: unknown; text?: unknown };
        if (part?.type !== "text" || typeof part.text !== "string") {
          throw new ApiError(
            400,
            `${where}.content[${j}] must be a text part ({ type: "text", text }); this model reads text only`,
            `${where}.content`,
          );
        }
        return part.text;
      }).join("");
    } else {
      throw new ApiError(
        400,
        `${where}.content must be a string or text parts`,
        `${where}.content`,
      );
    }
    return { role: role === "developer" ? "system" : role as string, content: text };
  });
}

function parsePrompt(v: unknown): string | number[] {
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t))) return v as number[];
  throw new ApiError(400, "prompt must be a string or a non-empty array of token ids", "prompt");
}

/** One generated token's log-probability and the best alternatives, from the distribution the
 * token was drawn from, before sampling filters (natural logs). */
export interface TokenLogprob {
  id: number;
  logprob: number;
  top: { id: number; logprob: number }[];
  /** Where the token's text starts in the answer (its first character). */
  offset: number;
}

/** log-softmax of `logits` at `id`, and the `n` most likely tokens (best first, lowest id on
 * ties). */
export function logprobsOf(logits: Float32Array, id: number, n: number) {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const best: number[] = [];
  for (let i = 0; i < logits.length && n > 0; i++) {
    if (best.length === n && logits[i] <= logits[best[n - 1]]) continue;
    let j = best.length < n ? best.length : n - 1;
    while (j > 0 && logits[best[j - 1]] < logits[i]) j--;
    best.splice(j, 0, i);
    if (best.length > n) best.pop();
  }
  return {
    logprob: logits[id] - lse,
    top: best.map((t) => ({ id: t, logprob: logits[t] - lse })),
  };
}
