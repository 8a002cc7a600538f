// llama.cpp as an independent reference for GGUF files: npm node-llama-cpp 3.21.1 (a test-only
// dependency, installed once into tests/.cache/llama; install notes in ../shared/NOTES.md), run
// in Node through llamacpp_runner.mjs.

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
export async function ensureLlamaCpp(): Promise<void> {
  try {
    await Deno.stat(`${dir}node_modules/@node-llama-cpp/linux-x64/bins`);
    return;
  } catch { /* not installed yet */ }
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}package.json`, '{ "private": true }\n');
  await run("npm", [
    "i",
    "-E",
    "node-llama-cpp@3.21.1",
    "@node-llama-cpp/linux-x64@3.21.1",
    "--omit=optional",
    "--no-audit",
    "--no-fund",
  ], dir);
}

/** llama.cpp's greedy continuation of each prompt and the log-probabilities behind each token. */
export async function llamaCppGreedy(
  model: string,
  prompts: number[][],
  steps: number,
): Promise<{ tokens: number[]; logprobs: number[][] }[]> {
  await ensureLlamaCpp();
  const out = await run(
    "node",
    [runner, JSON.stringify({ model, prompts, steps, threads: 1 })],
    dir,
  );
  return JSON.parse(out).results;
}
