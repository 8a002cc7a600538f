// llama.cpp as an independent reference for GGUF files: npm node-llama-cpp 3.21.1 (a test-only
// dependency, installed once into tests/.cache/llama; install notes in ../shared/NOTES.md), run
// in Node through llamacpp_runner.mjs.

import { ensureLlamaCppIn } from "../../bench/peers/llamacpp_install.ts";
import { sha256Hex } from "../../engine/io.ts";

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

/** A llama.cpp request's results, run once: with `cached`, kept in tests/.cache/llama-results/
 * (for a file that never changes, such as the real model, whose sha256 is checked on fetch). */
async function request<T>(req: Record<string, unknown>, cached: boolean): Promise<T> {
  ensureLlamaCpp();
  const key = await sha256Hex(JSON.stringify(req));
  const file = `${dir}results/${key}.json`;
  if (cached) {
    try {
      return JSON.parse(await Deno.readTextFile(file));
    } catch { /* not run yet */ }
  }
  const results = JSON.parse(await run("node", [runner, JSON.stringify(req)], dir)).results;
  if (cached) {
    await Deno.mkdir(`${dir}results`, { recursive: true });
    await Deno.writeTextFile(file, JSON.stringify(results));
  }
  return results;
}

/** Like llamaCppGreedy, but only the `topK` best log-probabilities of each step, as
 * [id, logprob] pairs, best first; with `forced`, along those continuations instead of its own
 * (`tokens` is then its argmax at each step). */
export function llamaCppGreedyTop(
  model: string,
  prompts: number[][],
  steps: number,
  options: { topK: number; forced?: number[][]; cached?: boolean },
): Promise<{ tokens: number[]; top: [number, number][][] }[]> {
  const { topK, forced, cached = false } = options;
  return request({ model, prompts, steps, threads: 1, topK, forced }, cached);
}

/** For each window, llama.cpp's log-probability of each token after the first, given those
 * before it. The windows are shared between two processes running side by side (turning a
 * 262k-entry probability map into JS costs more than the model: ~0.17 s a token). */
export async function llamaCppScore(
  model: string,
  windows: number[][],
  cached = false,
): Promise<number[][]> {
  const half = Math.ceil(windows.length / 2);
  const parts = [windows.slice(0, half), windows.slice(half)].filter((w) => w.length > 0);
  const results = await Promise.all(
    parts.map((w) => request<number[][]>({ mode: "score", model, windows: w, threads: 1 }, cached)),
  );
  return results.flat();
}

/** llama.cpp's token ids for each text (special tokens parsed, no BOS added). */
export function llamaCppTokenize(model: string, texts: string[]): Promise<number[][]> {
  return request({ mode: "tokenize", model, texts }, false);
}

/** What llama.cpp's own grammar engine (an independent parser of the GBNF grammar) says of each
 * text, tokenized with the model file's vocabulary: a start of a sentence (`prefix`), and a whole
 * one (`whole`: the grammar may end after it). */
export function llamaCppGrammarAccepts(
  model: string,
  grammar: string,
  texts: string[],
): Promise<{ prefix: boolean; whole: boolean }[]> {
  return request({ mode: "grammar", model, grammar, texts }, false);
}
