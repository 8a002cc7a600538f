/**
 * Decode and prefill speed on a full-size, random-weight Gemma 3 270M, per weight format and
 * thread count, beside the memory bandwidth the same threads reach with a streaming read.
 *
 *   deno run -A bench/decode.ts [--formats f32,bf16] [--threads 1,2] [--rounds 3]
 *                               [--decode 128] [--prompt 16] [--prefill 512] [--sessions 4]
 *                               [--json]
 *   bun bench/decode.ts ...
 *
 * The checkpoint is generated once from the real 270M config (hidden 640, 18 layers, 4 heads,
 * 1 KV head, head_dim 256, ffn 2048, vocab 262,144, window 512) and cached in bench/.cache/.
 * Random weights cost exactly what real ones do: every weight is read once per decoded token.
 * Runs are interleaved over `--rounds` and medians reported (two threads on two shared vCPUs are
 * noisy); each round also measures the machine's ceilings (stream-read bandwidth, and an in-cache
 * product whose thread scaling bounds prefill's), and ratios are medians of per-round ratios. Also measured: the cost of one parallel op with no work (the synchronisation), times the
 * ops of a decoded token, as a share of its time. Prints a table and, with --json, one JSON line.
 *
 * @module
 */

import process from "node:process";
import { spawn } from "node:child_process";
import { parseArgs } from "node:util";
import { loadModel } from "../mod.ts";
import { CONFIG, ensureCheckpoint } from "./random_model.ts";
import { machineInfo, median, runtime, saveResults, takeBenchLock } from "./harness.ts";
import { WasmRuntime } from "../engine/backends/wasm/runtime.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    formats: { type: "string", default: "f32,bf16" },
    threads: { type: "string", default: "1,2" },
    rounds: { type: "string", default: "3" },
    decode: { type: "string", default: "128" },
    prompt: { type: "string", default: "16" },
    prefill: { type: "string", default: "512" },
    nocache: { type: "string", default: "16" },
    busy: { type: "string", default: "0" },
    sessions: { type: "string", default: "4" },
    webgpu: { type: "boolean", default: false },
    "webgpu-decode": { type: "string", default: "4" },
    "webgpu-prefill": { type: "string", default: "16" },
    json: { type: "boolean", default: false },
    save: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`Usage: deno run -A bench/decode.ts [options]   (or: bun bench/decode.ts [options])

Decode and prefill tokens/s of a random-weight Gemma 3 270M (made once in bench/.cache/),
per weight format and thread count, beside the stream-read bandwidth of the same threads.

  --formats f32,bf16   weight formats: f32, bf16, and q8_0 or q4_0 (the bf16 checkpoint
                       quantized on load; q4_0 keeps the head in q8_0)
  --threads 1,2        thread counts
  --rounds 3           interleaved rounds (medians are reported)
  --decode 128         tokens decoded after a --prompt 16 token prompt
  --prefill 512        prompt length for the prefill measurement
  --webgpu             also WebGPU rows (Deno, where an adapter exists), one per format, with
                       --webgpu-decode 4 tokens and --webgpu-prefill 16 (a software adapter
                       such as lavapipe is far slower than the CPU; its rows say so)
  --nocache 16         tokens generated without a KV cache (the whole sequence re-run for each,
                       as the seed's "regular" mode does; 0 to skip)
  --sessions 4         also decode --decode tokens in this many sessions at once (batched: one
                       pass over the weights per step for all), aggregate tok/s and the ratio
                       to one session (0 to skip)
  --busy 0             busy-loop processes running beside the whole bench (cores shared with
                       other work, as on a server, a CI runner or a browser tab: with 1, 2
                       threads should not be slower than 1)
  --json               one JSON line instead of the table
  --save               also write bench/results/<date>-decode-<runtime>.{md,json}`);
  process.exit(0);
}
takeBenchLock();
// Competing work: busy loops in their own processes, stopped when the bench exits.
const busy = Number(values.busy);
const busyLoops = Array.from(
  { length: busy },
  () => {
    const p = spawn("sh", ["-c", "while :; do :; done"], { stdio: "ignore" });
    p.unref(); // the bench ends when its own work does
    return p;
  },
);
process.on("exit", () => busyLoops.forEach((p) => p.kill("SIGKILL")));
const formats = (values.formats as string).split(",");
for (const f of formats) {
  if (!["bf16", "f32", "q8_0", "q4_0"].includes(f)) {
    throw new Error(`--formats takes bf16, f32, q8_0 and q4_0, got ${f}`);
  }
}
const threadCounts = (values.threads as string).split(",").map(Number);
const rounds = Number(values.rounds);

const promptLen = Number(values.prompt),
  decodeLen = Number(values.decode),
  prefillLen = Number(values.prefill),
  noCacheLen = Number(values.nocache),
  batchSessions = Number(values.sessions);
const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % 262144);
const opsPerToken = CONFIG.num_hidden_layers * 8 + 1; // 7 matrix products + attention per layer, and the head

/** Decode and prefill tokens/s for one format and thread count. */
async function speed(format: string, threads: number) {
  const quantized = format === "q8_0" || format === "q4_0";
  const stored = quantized ? "bf16" : format;
  const dir = new URL(`./.cache/gemma3-270m-random-${stored}`, import.meta.url).pathname;
  const model = await loadModel(dir, {
    threads,
    weights: quantized ? format as "q8_0" | "q4_0" : undefined,
  });
  if (model.threads !== threads) {
    throw new Error(
      `asked for ${threads} threads, got ${model.threads}: ${model.threadsFallbackReason}`,
    );
  }
  const s = model.createSession({ contextLength: Math.max(prefillLen, promptLen + decodeLen) + 1 });
  await s.eval(ids(promptLen, 1));
  let n = 0;
  const t1 = performance.now();
  for await (const _ of s.generate([], { maxTokens: decodeLen, stopTokens: [] })) n++;
  const decode = n / ((performance.now() - t1) / 1000);
  s.reset();
  const t2 = performance.now();
  await s.eval(ids(prefillLen, 2));
  const prefill = prefillLen / ((performance.now() - t2) / 1000);
  // No KV cache: each new token re-runs the whole sequence so far (the seed's "regular" mode).
  let noCache = 0;
  if (noCacheLen > 0) {
    const seq = ids(promptLen, 1);
    const t3 = performance.now();
    for (let i = 0; i < noCacheLen; i++) {
      s.reset();
      const logits = await s.eval(seq);
      let best = 0;
      for (let t = 1; t < logits.length; t++) if (logits[t] > logits[best]) best = t;
      seq.push(best);
    }
    noCache = noCacheLen / ((performance.now() - t3) / 1000);
  }
  const weightBytes = model.memoryBytes - s.kvBytes;
  s.dispose();
  // Several sessions decoding at once, each after its own prompt: their steps go through the
  // model in batches (engine/decode_batcher.ts). Aggregate tokens/s over all of them.
  let batched = 0, meanBatch = 0;
  if (batchSessions > 0) {
    const sessions = Array.from(
      { length: batchSessions },
      () => model.createSession({ contextLength: promptLen + decodeLen + 1 }),
    );
    for (const [i, x] of sessions.entries()) await x.eval(ids(promptLen, 10 + i));
    const before = model.decodeBatchStats;
    const t4 = performance.now();
    const counts = await Promise.all(sessions.map(async (x) => {
      let k = 0;
      for await (const _ of x.generate([], { maxTokens: decodeLen, stopTokens: [] })) k++;
      return k;
    }));
    batched = counts.reduce((a, b) => a + b, 0) / ((performance.now() - t4) / 1000);
    const after = model.decodeBatchStats;
    meanBatch = (after.steps - before.steps) / (after.batches - before.batches);
  }
  await model.dispose();
  return { decode, prefill, noCache, weightBytes, batched, meanBatch };
}

/** Streaming-read bandwidth (GB/s) of `threads` threads over 1 GiB, and the cost of an empty op. */
async function bandwidth(threads: number) {
  const rt = await WasmRuntime.create({ threads });
  const bytes = 1 << 30;
  const p = rt.alloc(bytes);
  new Uint8Array(rt.memory.buffer, p, bytes).fill(1); // fault the pages in first
  const read = () =>
    rt.parallel ? rt.parallel.parStreamRead(p, bytes, 60_000) : rt.kernels.streamRead(p, 0, bytes);
  read();
  const runs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    read();
    runs.push(bytes / 1e9 / ((performance.now() - t0) / 1000));
  }
  // The cost of an op with no work: the median of 15 batches, because the memory of runtimes
  // disposed just before is still being returned to the system (in Deno, a gigabyte takes the
  // other core for a moment), which inflated single long measurements up to tenfold.
  let opMicros = 0;
  if (rt.parallel) {
    const n = 2000, batches: number[] = [];
    for (let b = 0; b < 15; b++) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) rt.parallel.parStreamRead(p, 64, 60_000);
      batches.push(((performance.now() - t0) * 1000) / n);
    }
    opMicros = median(batches);
  }
  rt.dispose();
  return { gbPerSecond: median(runs), opMicros };
}

/** GFLOP/s of `threads` threads on a product whose operands stay in cache (128 × 640 f32
 * weights and 32 tokens, 0.4 MB: inside one core's L2, so one thread is not penalised; split by
 * rows as every product is): what these cores compute together with memory out of the way, so
 * its 2-thread/1-thread ratio is the most prefill's can be. */
async function computeRate(threads: number) {
  const rt = await WasmRuntime.create({ threads });
  const rows = 128, cols = 640, tokens = 32, n = 1600;
  const w = rt.alloc(rows * cols * 4),
    x = rt.alloc(tokens * cols * 4),
    y = rt.alloc(tokens * rows * 4);
  rt.f32(w, rows * cols).fill(0.01); // the same in any layout: timed interleaved, as the engine runs
  rt.f32(x, tokens * cols).fill(0.5);
  const run = () =>
    rt.parallel
      ? rt.parallel.parMatmul(0, w, x, y, rows, cols, tokens, 1, 60_000)
      : rt.kernels.matmulF32(w, x, y, rows, cols, tokens, 0, rows, 1);
  for (let i = 0; i < 20; i++) run();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) run();
  const seconds = (performance.now() - t0) / 1000;
  rt.dispose();
  return (2 * rows * cols * tokens * n) / seconds / 1e9;
}

for (const f of new Set(formats.map((f) => (f === "q8_0" || f === "q4_0" ? "bf16" : f)))) {
  await ensureCheckpoint(new URL(`./.cache/gemma3-270m-random-${f}`, import.meta.url).pathname, f);
}

const samples = new Map<
  string,
  {
    decode: number[];
    prefill: number[];
    noCache: number[];
    batched: number[];
    meanBatch: number[];
    weightBytes: number;
  }
>();
// The machine's own ceilings, sampled in every round beside the model runs: ratios are taken
// within a round (the machine's speed drifts between rounds) and their medians reported.
const machineSamples = new Map<
  number,
  { bandwidth: number[]; opMicros: number[]; gflops: number[] }
>();
for (let r = 0; r < rounds; r++) {
  for (const t of threadCounts) {
    const m = machineSamples.get(t) ?? { bandwidth: [], opMicros: [], gflops: [] };
    const b = await bandwidth(t);
    m.bandwidth.push(b.gbPerSecond);
    m.opMicros.push(b.opMicros);
    m.gflops.push(await computeRate(t));
    machineSamples.set(t, m);
  }
  for (const f of formats) {
    for (const t of threadCounts) {
      const key = `${f}/${t}`;
      const m = await speed(f, t);
      const e = samples.get(key) ?? {
        decode: [],
        prefill: [],
        noCache: [],
        batched: [],
        meanBatch: [],
        weightBytes: m.weightBytes,
      };
      e.decode.push(m.decode);
      e.batched.push(m.batched);
      e.meanBatch.push(m.meanBatch);
      e.noCache.push(m.noCache);
      e.prefill.push(m.prefill);
      samples.set(key, e);
    }
  }
}
/** The median over rounds of a per-round ratio. */
const medianRatio = (a: number[], b: number[]) => median(a.map((v, i) => v / b[i]));

const rows = [];
for (const f of formats) {
  for (const t of threadCounts) {
    const e = samples.get(`${f}/${t}`)!;
    const decode = median(e.decode), prefill = median(e.prefill);
    // The same measurements with one thread, where the table has them.
    const m = machineSamples.get(t)!, machineAt1 = machineSamples.get(1);
    const modelAt1 = samples.get(`${f}/1`);
    const gbPerSecond = median(m.bandwidth), opMicros = median(m.opMicros);
    // Bytes a decoded token must read: every weight once (the tied head is the embedding).
    const readsPerRound = e.decode.map((d) => (d * e.weightBytes) / 1e9);
    rows.push({
      runtime,
      format: f,
      threads: t,
      decodeTokensPerSecond: +decode.toFixed(2),
      noCacheTokensPerSecond: +median(e.noCache).toFixed(2),
      batchedSessions: batchSessions,
      batchedDecodeTokensPerSecond: +median(e.batched).toFixed(2),
      batchedVsOneSession: +medianRatio(e.batched, e.decode).toFixed(2),
      meanBatchSize: +median(e.meanBatch).toFixed(2),
      prefillTokensPerSecond: +prefill.toFixed(1),
      decodeReadGBps: +median(readsPerRound).toFixed(1),
      streamReadGBps: +gbPerSecond.toFixed(1),
      decodeShareOfBandwidth: +medianRatio(readsPerRound, m.bandwidth).toFixed(2),
      syncMicrosPerOp: +opMicros.toFixed(2),
      syncShareOfDecode: +((opMicros * opsPerToken * decode) / 1e6).toFixed(3),
      prefillSpeedupVs1Thread: modelAt1
        ? +medianRatio(e.prefill, modelAt1.prefill).toFixed(2)
        : null,
      computeGflops: +median(m.gflops).toFixed(1),
      computeSpeedupVs1Thread: machineAt1
        ? +medianRatio(m.gflops, machineAt1.gflops).toFixed(2)
        : null,
    });
  }
}
// WebGPU rows: once per format (threads do not apply), from a fresh load: time to first token
// (load, 16-token prompt, first token), then decode and prefill.
const gpuRows: {
  format: string;
  adapter: string;
  software: boolean;
  ttftMs: number;
  decodeTokensPerSecond: number;
  prefillTokensPerSecond: number;
}[] = [];
if (values.webgpu) {
  const { webGpuAdapter } = await import("../engine/backends/webgpu/backend.ts");
  const found = await webGpuAdapter();
  if ("reason" in found) console.error(`no WebGPU rows: ${found.reason}`);
  else {
    const gpuDecode = Number(values["webgpu-decode"]),
      gpuPrefill = Number(values["webgpu-prefill"]);
    for (const f of formats) {
      const quantized = f === "q8_0" || f === "q4_0";
      const dir =
        new URL(`./.cache/gemma3-270m-random-${quantized ? "bf16" : f}`, import.meta.url).pathname;
      const t0 = performance.now();
      const model = await loadModel(dir, {
        backend: "webgpu",
        weights: quantized ? f as "q8_0" | "q4_0" : undefined,
      });
      const s = model.createSession({ contextLength: 256 });
      let ttft = 0, n = 0, t1 = 0;
      for await (
        const _ of s.generate(ids(promptLen, 1), { maxTokens: gpuDecode + 1, stopTokens: [] })
      ) {
        if (n++ === 0) {
          ttft = performance.now() - t0;
          t1 = performance.now();
        }
      }
      const decode = gpuDecode / ((performance.now() - t1) / 1000);
      s.reset();
      const t2 = performance.now();
      await s.eval(ids(gpuPrefill, 2));
      const prefill = gpuPrefill / ((performance.now() - t2) / 1000);
      const adapter = model.backendReason.replace(/^asked for \((.*)\)$/, "$1");
      gpuRows.push({
        format: f,
        adapter,
        software: found.software,
        ttftMs: Math.round(ttft),
        decodeTokensPerSecond: +decode.toFixed(3),
        prefillTokensPerSecond: +prefill.toFixed(2),
      });
      await model.dispose();
    }
  }
}
const gpuTable = gpuRows.length === 0 ? [] : [
  "",
  `WebGPU (decode ${values["webgpu-decode"]} tokens after ${promptLen}, prefill ${
    values["webgpu-prefill"]
  }; time to first token from loadModel):`,
  "",
  "| format | adapter | decode tok/s | prefill tok/s | time to first token ms |",
  "|---|---|---|---|---|",
  ...gpuRows.map((r) =>
    `| ${r.format} | ${r.adapter}${
      r.software ? " (software)" : ""
    } | ${r.decodeTokensPerSecond} | ${r.prefillTokensPerSecond} | ${r.ttftMs} |`
  ),
];
const table = [
  `Gemma 3 270M (random weights), ${runtime}, medians of ${rounds} interleaved rounds; decode ${decodeLen} tokens after ${promptLen} (no cache: ${noCacheLen} tokens, the whole sequence re-run for each), prefill ${prefillLen}${
    busy ? `; beside ${busy} busy-loop process${busy > 1 ? "es" : ""}` : ""
  }`,
  "",
  `| format | threads | decode tok/s (KV cache) | decode tok/s (no cache) | ${batchSessions} sessions batched: tok/s, all | vs 1 session | prefill tok/s | prefill vs 1T | in-cache product vs 1T | decode reads GB/s | stream read GB/s | decode / bandwidth | sync µs/op | sync share of decode |`,
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.format} | ${r.threads} | ${r.decodeTokensPerSecond} | ${
      noCacheLen > 0 ? r.noCacheTokensPerSecond : "—"
    } | ${
      batchSessions > 0 ? `${r.batchedDecodeTokensPerSecond} (batches of ${r.meanBatchSize})` : "—"
    } | ${batchSessions > 0 ? `${r.batchedVsOneSession}×` : "—"} | ${r.prefillTokensPerSecond} | ${
      r.prefillSpeedupVs1Thread ?? "—"
    }× | ${r.computeSpeedupVs1Thread ?? "—"}× | ${r.decodeReadGBps} | ${r.streamReadGBps} | ${
      Math.round(r.decodeShareOfBandwidth * 100)
    }% | ${r.syncMicrosPerOp} | ${(r.syncShareOfDecode * 100).toFixed(1)}% |`
  ),
  "",
  "Ratios (vs 1 session, vs 1T, decode / bandwidth) are medians of per-round ratios: each round measures the",
  "stream-read bandwidth and an in-cache f32 product (128×640 weights, 32 tokens; the ceiling of",
  "prefill's scaling) beside the model runs.",
  ...gpuTable,
];
const machine = machineInfo();
const result = {
  date: new Date().toISOString(),
  command: `${runtime} bench/decode.ts ${process.argv.slice(2).join(" ")}`.trim(),
  machine,
  rounds,
  busyProcesses: busy,
  decodeTokens: decodeLen,
  promptTokens: promptLen,
  prefillTokens: prefillLen,
  rows,
  webgpuRows: gpuRows,
};
if (values.save) {
  const markdown = [
    `# Decode and prefill, ${runtime}`,
    "",
    `Machine: ${machine.cpu}, ${machine.cores} cores; ${machine.runtime}. Command: \`${result.command}\`.`,
    "",
    ...table,
    "",
  ].join("\n");
  saveResults(`decode-${runtime}`, markdown, result);
}
if (values.json) console.log(JSON.stringify(result));
else console.log(table.join("\n"));
