// One measurement of this engine in a fresh process: time to first token from process start,
// decode and prefill tokens/s, peak RSS. Used by bench/llamacpp.ts (run it directly to try one
// configuration). Usage: deno run -A bench/ours_one.ts '<json request>'
//   request: { model, threads, prompt: number[], decode, prefill: number[], context? }
import { readFileSync } from "node:fs";
import process from "node:process";
import { loadModel } from "../mod.ts";

const req = JSON.parse(process.argv[2]);
const model = await loadModel(req.model, { threads: req.threads });
const s = model.createSession({ contextLength: req.context ?? 1024 });
let first = 0, n = 0, t1 = 0;
for await (
  const _ of s.generate(req.prompt, { maxTokens: req.decode + 1, stopTokens: [], temperature: 0 })
) {
  if (n++ === 0) {
    first = performance.now(); // ms since this process started
    t1 = performance.now();
  }
}
const decode = req.decode / ((performance.now() - t1) / 1000);
s.reset();
const t2 = performance.now();
await s.eval(req.prefill);
const prefill = req.prefill.length / ((performance.now() - t2) / 1000);
const rss = Number(readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s*(\d+)/)![1]) * 1024;
process.stdout.write(
  JSON.stringify({ ttftMs: first, decode, prefill, peakRss: rss, threads: model.threads }),
);
await model.dispose();
process.exit(0);
