// Runs a GGUF file with llama.cpp (npm node-llama-cpp 3.21.1, prebuilt CPU binaries) and prints
// JSON: for each prompt, the greedy continuation and the log-probabilities behind every generated
// token (at the last prompt position, then after each generated token). A test helper only: the
// engine never imports llama.cpp. Usage: node llamacpp_runner.mjs '<json request>'
//   request: { model, prompts: number[][], steps, threads }

const lib = new URL("../.cache/llama/node_modules/node-llama-cpp/dist/index.js", import.meta.url);
const { getLlama } = await import(lib.href);
const req = JSON.parse(process.argv[2]);
const llama = await getLlama({ build: "never", gpu: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath: req.model });
const results = [];
for (const prompt of req.prompts) {
  // f32 KV cache and the full sliding-window cache: nothing lossy beyond the weights themselves.
  const context = await model.createContext({
    contextSize: 256,
    threads: req.threads ?? 1,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
    swaFullCache: true,
  });
  const sequence = context.getSequence();
  const tokens = [], logprobs = [];
  for await (
    const out of sequence.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0 })
  ) {
    tokens.push(out.token);
    const row = [];
    for (const [id, p] of out.probabilities) row[id] = Math.log(p);
    logprobs.push(row);
    if (tokens.length >= req.steps) break;
  }
  results.push({ tokens, logprobs });
  await context.dispose();
}
await model.dispose();
await llama.dispose();
process.stdout.write(
  JSON.stringify({ backend: llama.gpu === false ? "cpu" : String(llama.gpu), results }),
);
