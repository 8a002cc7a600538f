// What the CLI's commands share: the default model, flags and their help text, number parsing,
// loading a model with a progress bar, and the stats line. Everything goes through mod.ts.

import process from "node:process";
import { readFileSync } from "node:fs";
import {
  BACKEND_CHOICES,
  type BackendChoice,
  compileConstraint,
  type ConstraintOptions,
  type Gemma3Model,
  type GenerateOptions,
  LOAD_QUANT_TYPES,
  loadModel,
  type LoadProgress,
  type LoadQuantType,
  lookupSettings,
  type SpeculativeOptions,
} from "../mod.ts";

export const VERSION = "0.1.0";
export const DEFAULT_MODEL = "unsloth/gemma-3-270m-it";

export const MODEL_HELP = `Model:
  -m, --model <name|path|url>   Hub repository, model folder, .gguf file, or a URL of either
                                (default ${DEFAULT_MODEL})
      --revision <rev>          Hub branch, tag or commit (default main)
      --context-length <n>      KV cache size in tokens (default 4096, or the model's maximum)
      --threads <n>             Threads to run on (default: all cores; 1 where workers or
                                SharedArrayBuffer are missing)
      --backend <auto|wasm|webgpu>  Where to run (default auto: a hardware WebGPU adapter if
                                there is one, else the WASM kernels; --verbose says which)
  -v, --verbose                 Say which backend and how many threads run, and why
      --weights <q8_0|q4_0>     Quantize the weights while loading: q8_0 is half of bf16's
                                memory, q4_0 about a quarter (its embedding/head stays q8_0);
                                faster decode, slightly different results
      --head-weights <q8_0|q4_0>  With --weights: the embedding/head's format`;

export const SAMPLING_HELP = `Sampling (defaults: the model's generation_config.json, else greedy):
  -n, --max-tokens <n>          Most tokens to generate
      --temperature <t>         0 = greedy
      --top-k <k>               Keep the k most likely tokens (0 = off)
      --top-p <p>               Nucleus sampling mass (1 = off)
      --min-p <p>               Drop tokens below p x the best one's probability (0 = off)
      --repetition-penalty <r>  Penalise tokens already in the context (1 = off)
      --seed <n>                Random seed, for reproducible sampling
      --stop <text>             End the answer where this text appears (it is not printed);
                                repeat for several
      --lookup <n,k>            Prompt-lookup decoding: draft up to k tokens (1-16) from where
                                the last n tokens appeared earlier, checked in one pass; the
                                same answer, sooner when it copies the prompt (e.g. 3,8)

Constrained output (the answer always parses):
      --json-schema <file|json> The answer is JSON valid against this JSON Schema (a file, or
                                the schema itself: '{"type":"object",...}'). Keywords not
                                supported are an error; objects get no properties beyond
                                "properties" unless "additionalProperties" allows them
      --grammar <file>          The answer follows this GBNF grammar (llama.cpp's notation)`;

export const OUTPUT_HELP = `Output:
      --json                    Machine-readable output on stdout
  -q, --quiet                   No progress or stats on stderr
  -h, --help                    Show this help`;

/** A user error: printed as one line, exit code 2. */
export class UsageError extends Error {}

export const modelOptions = {
  model: { type: "string", short: "m" },
  revision: { type: "string" },
  "context-length": { type: "string" },
  threads: { type: "string" },
  weights: { type: "string" },
  "head-weights": { type: "string" },
  backend: { type: "string" },
  verbose: { type: "boolean", short: "v" },
} as const;
export const samplingOptions = {
  "max-tokens": { type: "string", short: "n" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repetition-penalty": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
  lookup: { type: "string" },
  "json-schema": { type: "string" },
  grammar: { type: "string" },
} as const;
export const outputOptions = {
  json: { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
} as const;

export function parseIds(value: string, flag: string): number[] {
  const parts = value.split(/[\s,]+/).filter((s) => s !== "");
  if (parts.length === 0) throw new UsageError(`${flag} needs at least one token id`);
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) {
      throw new UsageError(`${flag}: "${p}" is not a token id (a non-negative integer)`);
    }
    return Number(p);
  });
}

export function parseNumber(
  value: string | undefined,
  flag: string,
  integer = false,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${flag}: "${value}" is not ${integer ? "an integer" : "a number"}`);
  }
  return n;
}

/** Sampling flags over the model's defaults; unset flags leave the defaults alone. */
export function sampling(
  values: Record<string, unknown>,
  defaults: GenerateOptions,
  maxTokens?: number,
): GenerateOptions {
  const flags: GenerateOptions = {
    maxTokens: parseNumber(values["max-tokens"] as string, "--max-tokens", true) ?? maxTokens,
    temperature: parseNumber(values.temperature as string, "--temperature"),
    topK: parseNumber(values["top-k"] as string, "--top-k", true),
    topP: parseNumber(values["top-p"] as string, "--top-p"),
    minP: parseNumber(values["min-p"] as string, "--min-p"),
    repetitionPenalty: parseNumber(values["repetition-penalty"] as string, "--repetition-penalty"),
    seed: parseNumber(values.seed as string, "--seed", true),
    speculative: lookupFlag(values.lookup as string | undefined),
    ...constraint(values),
  };
  const out: GenerateOptions = { ...defaults };
  for (const [k, v] of Object.entries(flags)) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

/** --lookup n,k: prompt-lookup decoding's settings, checked. */
export function lookupFlag(value: string | undefined): SpeculativeOptions | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(value);
  if (!m) {
    throw new UsageError(
      `--lookup needs n,k (n-gram length, tokens drafted), e.g. 3,8; got "${value}"`,
    );
  }
  const speculative = { lookup: { n: Number(m[1]), k: Number(m[2]) } };
  try {
    lookupSettings(speculative);
  } catch (e) {
    throw new UsageError(`--lookup: ${(e as Error).message.replace("speculative.lookup.", "")}`);
  }
  return speculative;
}

/** --json-schema (a file or inline JSON) and --grammar (a file), read and checked. */
function constraint(values: Record<string, unknown>): ConstraintOptions {
  const schema = values["json-schema"] as string | undefined;
  const grammar = values.grammar as string | undefined;
  if (schema !== undefined && grammar !== undefined) {
    throw new UsageError("give --json-schema or --grammar, not both");
  }
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path, "utf8");
    } catch (e) {
      throw new UsageError(`${flag}: cannot read ${path}: ${(e as Error).message}`);
    }
  };
  let out: ConstraintOptions = {};
  if (schema !== undefined) {
    const text = /^\s*[{\[]|^\s*(true|false)\s*$/.test(schema)
      ? schema
      : read("--json-schema", schema);
    try {
      out = { jsonSchema: JSON.parse(text) };
    } catch (e) {
      throw new UsageError(`--json-schema: not JSON: ${(e as Error).message}`);
    }
  } else if (grammar !== undefined) out = { grammar: read("--grammar", grammar) };
  try {
    compileConstraint(out);
  } catch (e) {
    throw new UsageError(
      `--${schema !== undefined ? "json-schema" : "grammar"}: ${(e as Error).message}`,
    );
  }
  return out;
}

export const mibText = (b: number) => `${(b / 2 ** 20).toFixed(b < 2 ** 24 ? 1 : 0)} MiB`;

/** A one-line progress bar on stderr (only on a terminal). */
export function progressPrinter(
  quiet: boolean,
): ((p: LoadProgress & { label?: string }) => void) | undefined {
  if (quiet || !process.stderr.isTTY) return undefined;
  let lastKey = "";
  return (p) => {
    const pct = p.totalBytes > 0 ? Math.floor((100 * p.loadedBytes) / p.totalBytes) : 0;
    const label = p.label ?? (p.phase === "download" ? `downloading ${p.file}` : "loading weights");
    const key = `${label}${pct}`;
    if (key === lastKey) return;
    lastKey = key;
    const width = 24;
    const filled = Math.round((width * pct) / 100);
    process.stderr.write(
      `\r\x1b[2K${label} [${"#".repeat(filled)}${" ".repeat(width - filled)}] ${pct}% ` +
        `${mibText(p.loadedBytes)} / ${mibText(p.totalBytes)}${pct >= 100 ? "\n" : ""}`,
    );
  };
}

export async function openModel(
  values: Record<string, unknown>,
  quiet: boolean,
): Promise<Gemma3Model> {
  const source = (values.model as string | undefined) ?? DEFAULT_MODEL;
  const threads = parseNumber(values.threads as string | undefined, "--threads", true);
  const formats = (flag: string) => {
    const v = values[flag] as LoadQuantType | undefined;
    if (v !== undefined && !LOAD_QUANT_TYPES.includes(v)) {
      throw new UsageError(`--${flag}: "${v}" is not a format (${LOAD_QUANT_TYPES.join(", ")})`);
    }
    return v;
  };
  const weights = formats("weights"), headWeights = formats("head-weights");
  if (headWeights && !weights) throw new UsageError("--head-weights needs --weights as well");
  const backend = values.backend as BackendChoice | undefined;
  if (backend !== undefined && !BACKEND_CHOICES.includes(backend)) {
    throw new UsageError(
      `--backend: "${backend}" is not a backend (${BACKEND_CHOICES.join(", ")})`,
    );
  }
  const model = await loadModel(source, {
    backend,
    revision: values.revision as string | undefined,
    threads,
    weights,
    headWeights,
    onProgress: progressPrinter(quiet),
  });
  if (values.verbose) {
    const threads = model.backend === "wasm"
      ? `, ${model.threads} thread${model.threads > 1 ? "s" : ""}${
        model.threadsFallbackReason ? ` (${model.threadsFallbackReason})` : ""
      }`
      : "";
    process.stderr.write(`backend: ${model.backend}${threads}: ${model.backendReason}\n`);
  }
  return model;
}

export function contextLength(values: Record<string, unknown>): number | undefined {
  return parseNumber(values["context-length"] as string, "--context-length", true);
}

export async function readStdin(): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const c of process.stdin) {
    chunks.push(typeof c === "string" ? new TextEncoder().encode(c) : c);
  }
  return new TextDecoder().decode(await new Blob(chunks as BlobPart[]).arrayBuffer());
}

export const round = (x: number) => Math.round(x * 10) / 10;
export const rate = (n: number, ms: number) => (n > 0 && ms > 0 ? round((n * 1000) / ms) : 0);

/** The numbers a run reports (in --json output, and as the stderr stats line). */
export function runStats(
  loadMs: number,
  promptTokens: number,
  prefillMs: number,
  generated: number,
  decodeMs: number,
  threads: number,
) {
  return {
    loadSeconds: round(loadMs / 1000),
    promptTokens,
    prefillTokensPerSecond: rate(promptTokens, prefillMs),
    generatedTokens: generated,
    decodeTokensPerSecond: rate(generated, decodeMs),
    threads,
  };
}

export function statsLine(s: ReturnType<typeof runStats>): string {
  return `prefill ${s.promptTokens} tokens, ${s.prefillTokensPerSecond} tok/s | ` +
    `decode ${s.generatedTokens} tokens, ${s.decodeTokensPerSecond} tok/s | load ${s.loadSeconds} s | ` +
    `${s.threads} thread${s.threads > 1 ? "s" : ""}\n`;
}
