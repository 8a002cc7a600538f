// OpenAI's wire format for /v1/chat/completions and /v1/completions: the request fields this
// server takes, checked one by one (a wrong field is a 400 that names it), and the error shape.

import type { ChatMessage } from "../tokenizer/chat_template.ts";
import { compileConstraint, type ConstraintOptions } from "../grammar/constraint.ts";
import { lookupSettings, type SpeculativeOptions } from "../prompt_lookup.ts";

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
  /** From response_format (json_object, json_schema) or grammar (GBNF). */
  constraint: ConstraintOptions;
  /** `speculative: { lookup: { n, k } }` (this server's field, as the library takes it):
   * prompt-lookup decoding; the same answer, sooner where it copies the prompt. */
  speculative?: SpeculativeOptions;
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
  const out: CompletionParams = { stop: [], stream: false, includeUsage: false, constraint: {} };
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
  out.constraint = parseConstraint(b);
  if (b.speculative !== undefined && b.speculative !== null) {
    try {
      lookupSettings(b.speculative as SpeculativeOptions);
    } catch (e) {
      throw new ApiError(400, (e as Error).message, "speculative");
    }
    out.speculative = b.speculative as SpeculativeOptions;
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

/** response_format { type: "text" | "json_object" | "json_schema", json_schema: { name, schema,
 * strict } } as OpenAI has it, or `grammar` (GBNF text, as llama-server takes it). Compiled here,
 * so that a schema or grammar this server cannot honour is a 400 that says why. */
function parseConstraint(b: Body): ConstraintOptions {
  let constraint: ConstraintOptions = {};
  let param = "response_format";
  const format = b.response_format as Record<string, unknown> | undefined | null;
  if (format !== undefined && format !== null) {
    if (typeof format !== "object" || typeof format.type !== "string") {
      throw new ApiError(400, "response_format must be an object with a type", param);
    }
    if (format.type === "json_object") {
      constraint = { jsonSchema: { type: "object", additionalProperties: true } };
    } else if (format.type === "json_schema") {
      const js = format.json_schema as Record<string, unknown> | undefined;
      if (js === null || typeof js !== "object" || js.schema === undefined) {
        throw new ApiError(
          400,
          "response_format json_schema needs json_schema: { name, schema }",
          "response_format.json_schema",
        );
      }
      param = "response_format.json_schema.schema";
      constraint = { jsonSchema: js.schema };
    } else if (format.type !== "text") {
      throw new ApiError(
        400,
        `response_format type must be text, json_object or json_schema, got ${
          JSON.stringify(format.type)
        }`,
        param,
      );
    }
  }
  if (b.grammar !== undefined && b.grammar !== null) {
    if (constraint.jsonSchema !== undefined) {
      throw new ApiError(400, "give response_format json or grammar, not both", "grammar");
    }
    if (typeof b.grammar !== "string") {
      throw new ApiError(400, "grammar must be GBNF text", "grammar");
    }
    param = "grammar";
    constraint = { grammar: b.grammar };
  }
  try {
    compileConstraint(constraint);
  } catch (e) {
    throw new ApiError(400, (e as Error).message, param);
  }
  return constraint;
}
