// One llama.cpp measurement in a fresh Node process (node-llama-cpp 3.21.1, bench-only): prints
// JSON with time to first token from process start, decode and prefill tokens/s, peak RSS and the
// CPU backend llama.cpp picked. Usage: node llamacpp_one.mjs <lib dir> '<json request>'
//   request: { model, threads, prompt: number[], decode, prefill: number[], context? }
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const start = performance.timeOrigin;
const [libDir, reqText] = process.argv.slice(2);
const req = JSON.parse(reqText);
const { getLlama } = await import(
  pathToFileURL(`${libDir}/node_modules/node-llama-cpp/dist/index.js`).href
);
const llama = await getLlama({ build: "never", gpu: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath: req.model });
const context = await model.createContext({
  contextSize: req.context ?? 1024,
  threads: req.threads,
  batchSize: 512,
});
const seq = context.getSequence();
let first = 0, n = 0, t1 = 0;
for await (const _ of seq.evaluate(req.prompt, { temperature: 0 })) {
  if (n === 0) {
    first = Date.now() - start;
    t1 = performance.now();
  }
  if (++n >= req.decode + 1) break;
}
const decode = req.decode / ((performance.now() - t1) / 1000);
await seq.clearHistory();
const t2 = performance.now();
await seq.evaluateWithoutGeneratingNewTokens(req.prefill);
const prefill = req.prefill.length / ((performance.now() - t2) / 1000);
const rss = Number(readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s*(\d+)/)[1]) * 1024;
process.stdout.write(
  JSON.stringify({
    ttftMs: first,
    decode,
    prefill,
    peakRss: rss,
    // What llama.cpp found and uses on this CPU (AVX-512, AMX, ...), and which build it is.
    systemInfo: llama.systemInfo,
    release: llama.llamaCppRelease?.release,
    buildType: llama.buildType,
  }),
);
await context.dispose();
await model.dispose();
