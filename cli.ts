/**
 * Command-line interface of gemma3-wasm.
 *
 *   deno run -A cli.ts run "Why is the sky blue?"
 *   deno run -A cli.ts chat
 *   deno run -A cli.ts tokenize "Hello world"
 *   deno run -A cli.ts generate --model tests/fixtures/tiny-a --tokens 2,17,42
 *
 * This file only dispatches: each command is a module of cli/ (its options, help and work), and
 * what they share is cli/args.ts. Commands reach the engine only through mod.ts.
 *
 * @module
 */

import process from "node:process";
import { DEFAULT_MODEL, UsageError, VERSION } from "./cli/args.ts";
import { chat } from "./cli/chat.ts";
import { generate } from "./cli/generate.ts";
import { quantize } from "./cli/quantize.ts";
import { run } from "./cli/run.ts";
import { serve } from "./cli/serve.ts";
import { tokenize } from "./cli/tokenize.ts";

const HELP = `gemma3-wasm ${VERSION}: Gemma 3 in TypeScript on WebAssembly SIMD

Usage:
  cli.ts run [prompt] [options]     Answer one prompt (from the argument or stdin), streaming text
  cli.ts chat [options]             Interactive chat; the KV cache is kept between turns
  cli.ts tokenize <text> [options]  Show token ids (or --decode ids back to text)
  cli.ts generate --tokens <ids>    Generate token ids from token ids (no tokenizer needed)
  cli.ts quantize <model> <out.gguf> --type <format>
                                    Write a model as a GGUF file (for this engine or llama.cpp)
  cli.ts serve [options]            Serve an OpenAI-compatible HTTP API (chat, completions, SSE)
  cli.ts --help | --version

Models: --model takes a Hugging Face model folder, a .gguf file, a URL, or a Hub repository name
(default ${DEFAULT_MODEL}; downloaded once, about 540 MB, into the Hugging Face cache:
$HF_HOME/hub or ~/.cache/huggingface/hub. HF_TOKEN for gated repos, HF_HUB_OFFLINE=1 for no network).

Run 'cli.ts <command> --help' for a command's options.
`;

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  run,
  chat,
  tokenize,
  generate,
  quantize,
  serve,
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
