/**
 * Command-line interface of gemma3-wasm.
 *
 *   deno run -A cli.ts run "Why is the sky blue?"
 *   deno run -A cli.ts chat
 *   deno run -A cli.ts tokenize "Hello world"
 *   deno run -A cli.ts generate --model tests/fixtures/tiny-a --tokens 2,17,42
 *
 * Argument parsing and terminal output only: everything it does goes through mod.ts.
 *
 * @module
 */

import process from "node:process";
import { createInterface } from "node:readline";
import { setImmediate } from "node:timers";
import { parseArgs } from "node:util";
import {
  downloadModel,
  exportGguf,
  type ExportType,
  type Gemma3Model,
  type GenerateOptions,
  loadModel,
  type LoadProgress,
  loadTokenizer,
} from "./mod.ts";
import { isDirectory } from "./engine/io.ts";
import { isRepoId } from "./engine/loading/hub.ts";

const VERSION = "0.1.0";
const DEFAULT_MODEL = "unsloth/gemma-3-270m-it";

const HELP = `gemma3-wasm ${VERSION}: Gemma 3 in TypeScript on WebAssembly SIMD

Usage:
  cli.ts run [prompt] [options]     Answer one prompt (from the argument or stdin), streaming text
  cli.ts chat [options]             Interactive chat; the KV cache is kept between turns
  cli.ts tokenize <text> [options]  Show token ids (or --decode ids back to text)
  cli.ts generate --tokens <ids>    Generate token ids from token ids (no tokenizer needed)
  cli.ts quantize <model> <out.gguf> --type <format>
                                    Write a model as a GGUF file (for this engine or llama.cpp)
  cli.ts --help | --version

Models: --model takes a Hugging Face model folder, a .gguf file, a URL, or a Hub repository name
(default ${DEFAULT_MODEL}; downloaded once, about 540 MB, into the Hugging Face cache:
$HF_HOME/hub or ~/.cache/huggingface/hub. HF_TOKEN for gated repos, HF_HUB_OFFLINE=1 for no network).

Run 'cli.ts <command> --help' for a command's options.
`;

const MODEL_HELP = `Model:
  -m, --model <name|path|url>   Hub repository, model folder or folder URL (default ${DEFAULT_MODEL})
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

const SAMPLING_HELP = `Sampling (defaults: the model's generation_config.json, else greedy):
  -n, --max-tokens <n>          Most tokens to generate
      --temperature <t>         0 = greedy
      --top-k <k>               Keep the k most likely tokens (0 = off)
      --top-p <p>               Nucleus sampling mass (1 = off)
      --min-p <p>               Drop tokens below p x the best one's probability (0 = off)
      --repetition-penalty <r>  Penalise tokens already in the context (1 = off)
      --seed <n>                Random seed, for reproducible sampling`;

const OUTPUT_HELP = `Output:
      --json                    Machine-readable output on stdout
  -q, --quiet                   No progress or stats on stderr
  -h, --help                    Show this help`;

const RUN_HELP = `Usage: cli.ts run [prompt] [options]

Answers one prompt with the model's chat template and streams the answer to stdout. Without a
prompt argument (or with "-") the prompt is read from stdin. A stats line (prefill and decode
tokens/s) goes to stderr.

  -s, --system <text>           A system message
      --raw                     No chat template: continue the prompt text as is

${MODEL_HELP}

${SAMPLING_HELP}
      (run: --max-tokens defaults to 512)

${OUTPUT_HELP}

Example:
  deno run -A cli.ts run "Why is the sky blue?" --temperature 0
`;

const CHAT_HELP = `Usage: cli.ts chat [options]

Interactive chat. Type a message and press Enter. Commands: /reset (start over), /exit (or
Ctrl-D). Ctrl-C stops the current answer; a second Ctrl-C at the prompt exits. The KV cache is
kept between turns, so only new text is evaluated. With stdin not a terminal, each line is one
user message.

  -s, --system <text>           A system message for the conversation

${MODEL_HELP}

${SAMPLING_HELP}

${OUTPUT_HELP}
      (chat --json: one JSON line per answer)
`;

const TOKENIZE_HELP = `Usage: cli.ts tokenize <text> [options]
       cli.ts tokenize --decode <ids> [options]

Prints the token ids of the text (space-separated), or with --json the ids and their pieces.
Without <text>, reads stdin.

      --no-bos                  Do not prepend <bos>
      --plain                   Treat special-token text (<start_of_turn>, ...) as plain text
      --decode <ids>            Decode comma-separated ids to text instead
      --skip-special            With --decode: leave out special tokens
  -m, --model <name|path|url>   Where the tokenizer.json comes from (default ${DEFAULT_MODEL}); a
                                path to a tokenizer.json works too
${OUTPUT_HELP}
`;

const GENERATE_HELP = `Usage: cli.ts generate --model <folder|url> --tokens <ids> [options]

Evaluates the prompt token ids and streams generated token ids to stdout, space-separated.
Needs no tokenizer, so it runs any checkpoint, e.g. the test fixture:

  deno run -A cli.ts generate --model tests/fixtures/tiny-a --tokens 2,17,42 -n 24

  -t, --tokens <ids>            Prompt token ids, comma-separated. Required.
      --stop <ids>              Comma-separated stop ids (default: the model's EOS ids)
      --ignore-eos              Do not stop at EOS tokens

${MODEL_HELP}

${SAMPLING_HELP}
      (generate: --max-tokens defaults to 32, --temperature to 0)

${OUTPUT_HELP}
`;

const QUANTIZE_HELP = `Usage: cli.ts quantize <model> <out.gguf> --type <format> [options]

Writes the model as a GGUF file that this engine and llama.cpp both load: the config, the
tokenizer and every tensor under llama.cpp's names. The model is streamed, never held whole.

  <model>                       Hugging Face folder, .gguf file, or Hub repository name
  --type <format>               f32, bf16, q8_0, q4_0, q5_0, q4_k or q6_k. Rows that do not fill
                                a 256-block fall back as llama-quantize does (q4_k → q5_0,
                                q6_k → q8_0); norm weights stay f32
  --head-type <format>          The embedding/output head's format (default: q8_0 for q4_0,
                                q6_k for q4_k, else --type). The head is ~63% of the bytes a
                                token reads, so this choice matters for speed and quality
  --tokenizer <path>            Where the tokenizer comes from if <model> has none
                                (tokenizer.json, a folder with one, or a .gguf)
  --name <text>                 general.name to record (default: the model's folder name)
      --revision <rev>          Hub branch, tag or commit (default main)
  -q, --quiet                   No progress on stderr
  -h, --help                    Show this help

Example:
  deno run -A cli.ts quantize unsloth/gemma-3-270m-it gemma-3-270m-q4_0.gguf --type q4_0
`;

/** A user error: printed as one line, exit code 2. */
class UsageError extends Error {}

const modelOptions = {
  model: { type: "string", short: "m" },
  revision: { type: "string" },
  "context-length": { type: "string" },
  threads: { type: "string" },
  weights: { type: "string" },
  "head-weights": { type: "string" },
  backend: { type: "string" },
  verbose: { type: "boolean", short: "v" },
} as const;
const samplingOptions = {
  "max-tokens": { type: "string", short: "n" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repetition-penalty": { type: "string" },
  seed: { type: "string" },
} as const;
const outputOptions = {
  json: { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
} as const;

function parseIds(value: string, flag: string): number[] {
  const parts = value.split(/[\s,]+/).filter((s) => s !== "");
  if (parts.length === 0) throw new UsageError(`${flag} needs at least one token id`);
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) {
      throw new UsageError(`${flag}: "${p}" is not a token id (a non-negative integer)`);
    }
    return Number(p);
  });
}

function parseNumber(value: string | undefined, flag: string, integer = false): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${flag}: "${value}" is not ${integer ? "an integer" : "a number"}`);
  }
  return n;
}

/** Sampling flags over the model's defaults; unset flags leave the defaults alone. */
function sampling(
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
  };
  const out: GenerateOptions = { ...defaults };
  for (const [k, v] of Object.entries(flags)) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

const mibText = (b: number) => `${(b / 2 ** 20).toFixed(b < 2 ** 24 ? 1 : 0)} MiB`;

/** A one-line progress bar on stderr (only on a terminal). */
function progressPrinter(
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

async function openModel(values: Record<string, unknown>, quiet: boolean): Promise<Gemma3Model> {
  const source = (values.model as string | undefined) ?? DEFAULT_MODEL;
  const threads = parseNumber(values.threads as string | undefined, "--threads", true);
  const formats = (flag: string) => {
    const v = values[flag] as string | undefined;
    if (v !== undefined && v !== "q8_0" && v !== "q4_0") {
      throw new UsageError(`--${flag}: "${v}" is not a format (q8_0 and q4_0 are)`);
    }
    return v as "q8_0" | "q4_0" | undefined;
  };
  const weights = formats("weights"), headWeights = formats("head-weights");
  if (headWeights && !weights) throw new UsageError("--head-weights needs --weights as well");
  const backend = values.backend as string | undefined;
  if (backend !== undefined && !["auto", "wasm", "webgpu"].includes(backend)) {
    throw new UsageError(`--backend: "${backend}" is not a backend (auto, wasm, webgpu)`);
  }
  const model = await loadModel(source, {
    backend: backend as "auto" | "wasm" | "webgpu" | undefined,
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

function contextLength(values: Record<string, unknown>): number | undefined {
  return parseNumber(values["context-length"] as string, "--context-length", true);
}

async function readStdin(): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const c of process.stdin) {
    chunks.push(typeof c === "string" ? new TextEncoder().encode(c) : c);
  }
  return new TextDecoder().decode(await new Blob(chunks as BlobPart[]).arrayBuffer());
}

const round = (x: number) => Math.round(x * 10) / 10;
const rate = (n: number, ms: number) => (n > 0 && ms > 0 ? round((n * 1000) / ms) : 0);

/** The numbers a run reports (in --json output, and as the stderr stats line). */
function runStats(
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

function statsLine(s: ReturnType<typeof runStats>): string {
  return `prefill ${s.promptTokens} tokens, ${s.prefillTokensPerSecond} tok/s | ` +
    `decode ${s.generatedTokens} tokens, ${s.decodeTokensPerSecond} tok/s | load ${s.loadSeconds} s | ` +
    `${s.threads} thread${s.threads > 1 ? "s" : ""}\n`;
}

async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      ...modelOptions,
      ...samplingOptions,
      ...outputOptions,
      system: { type: "string", short: "s" },
      raw: { type: "boolean" },
    },
  });
  if (values.help) return void process.stdout.write(RUN_HELP);
  if (positionals.length > 1) {
    throw new UsageError(`run takes one prompt (quote it), got ${positionals.length} arguments`);
  }
  let prompt = positionals[0];
  if (prompt === undefined || prompt === "-") {
    if (process.stdin.isTTY) {
      throw new UsageError(
        'run needs a prompt: cli.ts run "Why is the sky blue?" (or pipe one to stdin)',
      );
    }
    prompt = await readStdin();
  }
  if (prompt.trim() === "") throw new UsageError("the prompt is empty");
  const quiet = !!(values.quiet || values.json);
  const t0 = performance.now();
  const model = await openModel(values, quiet);
  const loadMs = performance.now() - t0;
  try {
    const tok = model.tokenizer;
    const options = sampling(values, model.generationDefaults, 512);
    const ids = values.raw ? tok.encode(prompt) : tok.encode(
      tok.applyChatTemplate([
        ...(values.system ? [{ role: "system", content: values.system }] : []),
        { role: "user", content: prompt },
      ], { addGenerationPrompt: true }),
      { addBos: false },
    );
    const session = model.createSession({ contextLength: contextLength(values) });
    const t1 = performance.now();
    await session.eval(ids);
    const prefillMs = performance.now() - t1;
    const decoder = tok.streamDecoder({ skipSpecialTokens: true });
    const stopTokens = options.stopTokens ?? [tok.endOfTurnId, tok.eosId].filter((i) => i >= 0);
    let text = "";
    let n = 0;
    const t2 = performance.now();
    for await (const id of session.generate([], { ...options, stopTokens })) {
      n++;
      const piece = decoder.push(id);
      text += piece;
      if (!values.json && piece) process.stdout.write(piece);
    }
    const tail = decoder.flush();
    text += tail;
    const decodeMs = performance.now() - t2;
    const stats = runStats(loadMs, ids.length, prefillMs, n, decodeMs, model.threads);
    if (values.json) process.stdout.write(JSON.stringify({ text, ...stats }) + "\n");
    else {
      process.stdout.write(tail + "\n");
      if (!quiet) process.stderr.write(statsLine(stats));
    }
  } finally {
    await model.dispose();
  }
}

async function chat(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      ...modelOptions,
      ...samplingOptions,
      ...outputOptions,
      system: { type: "string", short: "s" },
    },
  });
  if (values.help) return void process.stdout.write(CHAT_HELP);
  if (positionals.length) {
    throw new UsageError(
      `chat takes no arguments (got "${positionals[0]}"); type messages after it starts`,
    );
  }
  const interactive = !!process.stdin.isTTY;
  const quiet = !!(values.quiet || values.json);
  const model = await openModel(values, quiet);
  const session = model.createSession({ contextLength: contextLength(values) });
  const options = sampling(values, model.generationDefaults, undefined);
  const start = values.system ? [{ role: "system", content: values.system }] : [];
  let messages = [...start];
  let stop: AbortController | null = null;
  const onInterrupt = () => {
    if (stop) stop.abort();
    else {
      process.stdout.write("\n");
      process.exit(130);
    }
  };
  process.on("SIGINT", onInterrupt);
  const rl = createInterface({ input: process.stdin, terminal: false });
  const prompt = () => interactive && process.stdout.write("> ");
  if (interactive && !quiet) {
    process.stderr.write("Type a message; /reset to start over, /exit to quit.\n");
  }
  prompt();
  try {
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === "/exit" || line === "/quit") break;
      if (line === "/reset") {
        messages = [...start];
        session.reset();
        if (!values.json) process.stdout.write("(conversation reset)\n");
        prompt();
        continue;
      }
      if (line === "") {
        prompt();
        continue;
      }
      messages.push({ role: "user", content: line });
      stop = new AbortController();
      let answer = "";
      const t0 = performance.now();
      let stopped = false;
      try {
        for await (const piece of model.chat(messages, { ...options, session })) {
          answer += piece;
          if (!values.json) process.stdout.write(piece);
          // Generation runs on microtasks; let the SIGINT handler (a macrotask) run between pieces.
          await new Promise((r) => setImmediate(r));
          if (stop.signal.aborted) {
            stopped = true;
            break;
          }
        }
      } catch (e) {
        messages.pop();
        stop = null;
        process.stderr.write(`error: ${(e as Error).message}\n`);
        prompt();
        continue;
      }
      stop = null;
      const ms = performance.now() - t0;
      messages.push({ role: "assistant", content: answer });
      if (values.json) process.stdout.write(JSON.stringify({ answer, stopped }) + "\n");
      else process.stdout.write(stopped ? " [stopped]\n" : "\n");
      if (!quiet && interactive) {
        const n = model.tokenizer.encode(answer, { addBos: false }).length;
        process.stderr.write(
          `(${n} tokens, ${
            rate(n, ms)
          } tok/s, context ${session.position}/${session.contextLength})\n`,
        );
      }
      prompt();
    }
  } finally {
    process.off("SIGINT", onInterrupt);
    rl.close();
    await model.dispose();
  }
}

async function tokenize(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      model: modelOptions.model,
      ...outputOptions,
      "no-bos": { type: "boolean" },
      plain: { type: "boolean" },
      decode: { type: "string" },
      "skip-special": { type: "boolean" },
    },
  });
  if (values.help) return void process.stdout.write(TOKENIZE_HELP);
  const tok = await loadTokenizer(values.model ?? DEFAULT_MODEL);
  if (values.decode !== undefined) {
    const ids = parseIds(values.decode, "--decode");
    const text = tok.decode(ids, { skipSpecialTokens: values["skip-special"] });
    process.stdout.write(values.json ? JSON.stringify({ ids, text }) + "\n" : text + "\n");
    return;
  }
  if (positionals.length > 1) {
    throw new UsageError(`tokenize takes one text (quote it), got ${positionals.length} arguments`);
  }
  const text = positionals[0] ?? await readStdin();
  const ids = tok.encode(text, {
    addBos: !values["no-bos"],
    specialTokens: values.plain ? "plain" : "parse",
  });
  if (values.json) {
    process.stdout.write(JSON.stringify({ ids, pieces: ids.map((id) => tok.piece(id)) }) + "\n");
  } else process.stdout.write(ids.join(" ") + "\n");
}

async function generate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      ...modelOptions,
      ...samplingOptions,
      ...outputOptions,
      tokens: { type: "string", short: "t" },
      stop: { type: "string" },
      "ignore-eos": { type: "boolean" },
    },
  });
  if (values.help) return void process.stdout.write(GENERATE_HELP);
  if (!values.model) throw new UsageError("generate needs --model <folder|url|name> (see --help)");
  if (!values.tokens) throw new UsageError("generate needs --tokens <ids>, e.g. --tokens 2,17,42");
  const prompt = parseIds(values.tokens, "--tokens");
  const options = sampling(values, { temperature: 0 }, 32);
  if (values.stop !== undefined) options.stopTokens = parseIds(values.stop, "--stop");
  if (values["ignore-eos"]) options.stopTokens = [];
  const quiet = !!(values.quiet || values.json);
  const t0 = performance.now();
  const model = await openModel(values, quiet);
  const loadMs = performance.now() - t0;
  try {
    const session = model.createSession({ contextLength: contextLength(values) });
    const t1 = performance.now();
    await session.eval(prompt);
    const prefillMs = performance.now() - t1;
    const out: number[] = [];
    const t2 = performance.now();
    for await (const id of session.generate([], options)) {
      out.push(id);
      if (!values.json) process.stdout.write(`${out.length > 1 ? " " : ""}${id}`);
    }
    const decodeMs = performance.now() - t2;
    const stats = runStats(loadMs, prompt.length, prefillMs, out.length, decodeMs, model.threads);
    if (values.json) process.stdout.write(JSON.stringify({ prompt, tokens: out, ...stats }) + "\n");
    else {
      process.stdout.write("\n");
      if (!quiet) process.stderr.write(statsLine(stats));
    }
  } finally {
    await model.dispose();
  }
}

const EXPORT_TYPES = ["f32", "bf16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k"];

async function quantize(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      type: { type: "string" },
      "head-type": { type: "string" },
      tokenizer: { type: "string" },
      name: { type: "string" },
      revision: { type: "string" },
      quiet: { type: "boolean", short: "q" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return void process.stdout.write(QUANTIZE_HELP);
  if (positionals.length !== 2) {
    throw new UsageError("quantize needs <model> and <out.gguf> (see --help)");
  }
  let [source, out] = positionals;
  if (!/\.gguf$/i.test(out)) throw new UsageError(`${out}: the output file name must end in .gguf`);
  for (const flag of ["type", "head-type"] as const) {
    const v = values[flag];
    if (v !== undefined && !EXPORT_TYPES.includes(v)) {
      throw new UsageError(`--${flag}: "${v}" is not a format (${EXPORT_TYPES.join(", ")})`);
    }
  }
  if (!values.type) throw new UsageError(`quantize needs --type (${EXPORT_TYPES.join(", ")})`);
  if (!/\.gguf$/i.test(source) && !(await isDirectory(source))) {
    if (!isRepoId(source)) {
      throw new UsageError(`${source}: not a folder, .gguf file or Hub repository name`);
    }
    source = await downloadModel(source, { revision: values.revision, files: "model" });
  }
  const quiet = !!values.quiet;
  const bar = progressPrinter(quiet);
  const t0 = performance.now();
  const result = await exportGguf(source, out, {
    type: values.type as ExportType,
    headType: values["head-type"] as ExportType | undefined,
    tokenizer: values.tokenizer,
    name: values.name,
    onProgress: bar &&
      ((p) =>
        bar({
          phase: "load",
          loadedBytes: p.writtenBytes,
          totalBytes: p.totalBytes,
          label: "writing",
        })),
  });
  if (!quiet) {
    process.stderr.write(
      `wrote ${out}: ${result.tensors} tensors, ${mibText(result.bytes)} in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s\n`,
    );
  }
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  run,
  chat,
  tokenize,
  generate,
  quantize,
};

/** Runs the CLI with the given arguments; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === "--help" || command === "-h" || command === "help") {
      process.stdout.write(HELP);
      return command === undefined ? 2 : 0;
    }
    if (command === "--version" || command === "-V") {
      process.stdout.write(`${VERSION}\n`);
      return 0;
    }
    const fn = COMMANDS[command];
    if (!fn) {
      throw new UsageError(
        `unknown command "${command}" (commands: ${Object.keys(COMMANDS).join(", ")}; see --help)`,
      );
    }
    await fn(rest);
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string };
    const usage = e instanceof UsageError || err.code?.startsWith("ERR_PARSE_ARGS");
    process.stderr.write(`error: ${err.message.split("\n")[0]}\n`);
    return usage ? 2 : 1;
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
