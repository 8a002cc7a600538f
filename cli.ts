/**
 * Command-line interface of gemma3-wasm.
 *
 *   deno run -A cli.ts generate --model <folder|url> --tokens 2,17,42
 *
 * Argument parsing and terminal output only: everything it does goes through mod.ts.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { type GenerateOptions, loadModel, type LoadProgress } from "./mod.ts";

const VERSION = "0.1.0";

const HELP = `gemma3-wasm ${VERSION}: Gemma 3 on WebAssembly SIMD

Usage:
  cli.ts generate --model <folder|url> --tokens <ids> [options]
  cli.ts --help | --version

Commands:
  generate   Evaluate a prompt given as token ids and print the generated ids.

Run 'cli.ts <command> --help' for a command's options.
`;

const GENERATE_HELP = `Usage: cli.ts generate --model <folder|url> --tokens <ids> [options]

Evaluates the prompt token ids and streams generated token ids to stdout, space-separated.
A stats line (load time, prefill and decode tokens/s) goes to stderr.

Model:
  -m, --model <path|url>      Hugging Face model folder (config.json + *.safetensors),
                              local path or http(s) URL. Required.
  -t, --tokens <ids>          Prompt token ids, comma-separated (e.g. 2,17,42). Required.
      --context-length <n>    KV cache size in tokens (default: 4096 or the model's maximum).

Generation:
  -n, --max-tokens <n>        Tokens to generate (default 32).
      --temperature <t>       0 = greedy (default 0).
      --top-k <k>             Keep the k most likely tokens (default 0 = off).
      --top-p <p>             Nucleus sampling mass (default 1 = off).
      --min-p <p>             Drop tokens below p x the best one's probability (default 0).
      --repetition-penalty <r>  Penalise tokens already in the context (default 1 = off).
      --seed <n>              Random seed for reproducible sampling.
      --stop <ids>            Comma-separated stop token ids (default: the model's EOS ids).
      --ignore-eos            Do not stop at EOS tokens.

Output:
      --json                  Print one JSON object instead of streaming ids.
  -q, --quiet                 No progress or stats on stderr.
  -h, --help                  Show this help.

Example:
  deno run -A cli.ts generate --model tests/fixtures/tiny-a --tokens 2,17,42 -n 24
`;

/** A user error: printed as one line, exit code 2. */
class UsageError extends Error {}

function parseIds(value: string, flag: string): number[] {
  const parts = value.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (parts.length === 0) throw new UsageError(`${flag} needs at least one token id`);
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new UsageError(`${flag}: "${p}" is not a token id (a non-negative integer)`);
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

function progressPrinter(quiet: boolean): ((p: LoadProgress) => void) | undefined {
  if (quiet || !process.stderr.isTTY) return undefined;
  let last = -1;
  return ({ loadedBytes, totalBytes }) => {
    const pct = Math.floor((100 * loadedBytes) / totalBytes);
    if (pct === last) return;
    last = pct;
    const width = 30;
    const filled = Math.round((width * pct) / 100);
    process.stderr.write(
      `\rloading [${"#".repeat(filled)}${" ".repeat(width - filled)}] ${pct}% of ` +
        `${(totalBytes / 2 ** 20).toFixed(0)} MiB${pct === 100 ? "\n" : ""}`,
    );
  };
}

async function generate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      model: { type: "string", short: "m" },
      tokens: { type: "string", short: "t" },
      "context-length": { type: "string" },
      "max-tokens": { type: "string", short: "n" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      "min-p": { type: "string" },
      "repetition-penalty": { type: "string" },
      seed: { type: "string" },
      stop: { type: "string" },
      "ignore-eos": { type: "boolean" },
      json: { type: "boolean" },
      quiet: { type: "boolean", short: "q" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(GENERATE_HELP);
    return;
  }
  if (!values.model) throw new UsageError("generate needs --model <folder|url> (see --help)");
  if (!values.tokens) throw new UsageError("generate needs --tokens <ids>, e.g. --tokens 2,17,42");
  const prompt = parseIds(values.tokens, "--tokens");
  const contextLength = parseNumber(values["context-length"], "--context-length", true);
  const options: GenerateOptions = {
    maxTokens: parseNumber(values["max-tokens"], "--max-tokens", true) ?? 32,
    temperature: parseNumber(values.temperature, "--temperature"),
    topK: parseNumber(values["top-k"], "--top-k", true),
    topP: parseNumber(values["top-p"], "--top-p"),
    minP: parseNumber(values["min-p"], "--min-p"),
    repetitionPenalty: parseNumber(values["repetition-penalty"], "--repetition-penalty"),
    seed: parseNumber(values.seed, "--seed", true),
  };
  if (values.stop !== undefined) options.stopTokens = parseIds(values.stop, "--stop");
  if (values["ignore-eos"]) options.stopTokens = [];
  const quiet = values.quiet || values.json;

  const t0 = performance.now();
  const model = await loadModel(values.model, { onProgress: progressPrinter(!!quiet) });
  const loadMs = performance.now() - t0;
  try {
    const session = model.createSession({ contextLength });
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
    const stats = {
      loadMs: round(loadMs),
      promptTokens: prompt.length,
      prefillTokensPerSecond: round((prompt.length * 1000) / prefillMs),
      generatedTokens: out.length,
      decodeTokensPerSecond: out.length ? round((out.length * 1000) / decodeMs) : 0,
    };
    if (values.json) process.stdout.write(JSON.stringify({ prompt, tokens: out, ...stats }) + "\n");
    else {
      process.stdout.write("\n");
      if (!quiet) {
        process.stderr.write(
          `load ${stats.loadMs} ms | prefill ${prompt.length} tokens, ${stats.prefillTokensPerSecond} tok/s | ` +
            `decode ${out.length} tokens, ${stats.decodeTokensPerSecond} tok/s\n`,
        );
      }
    }
  } finally {
    await model.dispose();
  }
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

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
    if (command === "generate") {
      await generate(rest);
      return 0;
    }
    throw new UsageError(`unknown command "${command}" (commands: generate; see --help)`);
  } catch (e) {
    const err = e as Error & { code?: string };
    const usage = e instanceof UsageError || err.code?.startsWith("ERR_PARSE_ARGS");
    process.stderr.write(`error: ${err.message}\n`);
    return usage ? 2 : 1;
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
