// llama.cpp as an independent reference for GGUF files: npm node-llama-cpp 3.21.1 (a test-only
// dependency, installed once into tests/.cache/llama; install notes in ../shared/NOTES.md), run
// in Node through llamacpp_runner.mjs.

import { ensureLlamaCppIn } from "../../bench/peers/llamacpp_install.ts";

const dir = new URL("../.cache/llama/", import.meta.url).pathname;
const runner = new URL("./llamacpp_runner.mjs", import.meta.url).pathname;

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/** Installs node-llama-cpp into tests/.cache/llama if it is not there yet. */
export function ensureLlamaCpp(): void {
  ensureLlamaCppIn(dir, true);
}

/** llama.cpp's greedy continuation of each prompt and the log-probabilities behind each token. */
export async function llamaCppGreedy(
  model: string,
  prompts: number[][],
  steps: number,
): Promise<{ tokens: number[]; logprobs: number[][] }[]> {
  ensureLlamaCpp();
  const out = await run(
    "node",
    [runner, JSON.stringify({ model, prompts, steps, threads: 1 })],
    dir,
  );
  return JSON.parse(out).results;
}
