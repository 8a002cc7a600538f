// Threads change nothing but speed: logits are bit-identical for any thread count (each row of a
// matrix product and each attention head is computed exactly as on one thread), and the engine
// falls back to one thread, with the same results, where threads cannot run.

import { deepStrictEqual, match, ok, rejects } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { workerTestHooks } from "../engine/backends/wasm/worker_pool.ts";
import { WasmBackend } from "../engine/backends/wasm/backend.ts";
import { OP_TIMEOUT_MS, WasmRuntime } from "../engine/backends/wasm/runtime.ts";

// Split every op, however small, so the tests exercise each parallel kernel on these tiny models.
WasmBackend.parallelMinFloats = 0;
import { FIXTURES, maxAbsDiff } from "./support/helpers.ts";
import { tempDir } from "./support/temp.ts";
import { randomWeights, smallConfig, writeCheckpoint } from "./support/safetensors_writer.ts";

const tinyA = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${tinyA}/golden.json`));

/** Every prompt's logits at every position, plus 8 greedy tokens after the last prompt. */
async function run(dir: string, threads: number, prompts: number[][]) {
  const model = await loadModel(dir, { threads, maxChunk: 16 });
  deepStrictEqual(model.threads, threads);
  const out: { logits: Float32Array[]; tokens: number[] } = { logits: [], tokens: [] };
  for (const p of prompts) {
    const s = model.createSession({ contextLength: 128 });
    out.logits.push(await s.eval(p, { logits: "all" }));
    s.dispose();
  }
  const s = model.createSession({ contextLength: 128 });
  for await (const id of s.generate(prompts.at(-1)!, { maxTokens: 8, stopTokens: [] })) {
    out.tokens.push(id);
  }
  await model.dispose();
  return out;
}

function bitIdentical(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

Deno.test("tiny-a: 1, 2, 3 and 4 threads give bit-identical logits and tokens, and meet the golden", async () => {
  const prompts: number[][] = golden.prompts;
  const one = await run(tinyA, 1, prompts);
  for (const n of [2, 3, 4]) {
    const many = await run(tinyA, n, prompts);
    many.logits.forEach((l, i) =>
      ok(bitIdentical(l, one.logits[i]), `${n} threads, prompt ${i}: logits differ`)
    );
    deepStrictEqual(many.tokens, one.tokens);
  }
  prompts.forEach((p, i) => {
    const last = one.logits[i].subarray((p.length - 1) * 512);
    const d = maxAbsDiff(last, golden.results[i].last_position_logits);
    ok(d <= 1e-4, `prompt ${i}: differs from the golden by ${d}`);
  });
});

Deno.test("other shapes (f32 and bf16, rows and heads that do not divide evenly) are bit-identical too", async () => {
  for (const dtype of ["F32", "BF16"] as const) {
    const config = smallConfig({
      hidden_size: 30,
      intermediate_size: 37,
      vocab_size: 101,
      num_key_value_heads: 2,
      head_dim: 10,
      query_pre_attn_scalar: 10,
    });
    const dir = await writeCheckpoint(config, randomWeights(config, 5, dtype));
    const prompts = [[
      1,
      5,
      9,
      33,
      70,
      2,
      8,
      100,
      4,
      4,
      17,
      3,
      60,
      61,
      62,
      63,
      64,
      65,
      66,
      67,
      68,
      1,
    ]];
    const one = await run(dir, 1, prompts);
    for (const n of [2, 3]) {
      const many = await run(dir, n, prompts);
      ok(bitIdentical(many.logits[0], one.logits[0]), `${dtype}, ${n} threads: logits differ`);
      deepStrictEqual(many.tokens, one.tokens);
    }
  }
});

Deno.test("an op returns only when every chunk is written, also right after an op of fewer chunks", async () => {
  // A one-chunk op then a 16-chunk one, 40,000 times over: a worker that wakes late for the first
  // must not take the second's chunk count with the first's claim (it did: the second then
  // returned with a chunk unwritten about 5 times in 10,000 pairs on 2 cores), checked against
  // the one-thread kernel's output.
  const rt = await WasmRuntime.create({ threads: 2 });
  try {
    const par = rt.parallel;
    ok(par, "no worker pool");
    const n = 1 << 14;
    const gate = rt.alloc(n * 4), up = rt.alloc(n * 4), out = rt.alloc(n * 4);
    const g = rt.f32(gate, n), u = rt.f32(up, n);
    for (let i = 0; i < n; i++) [g[i], u[i]] = [Math.sin(i), Math.cos(0.7 * i)];
    rt.kernels.geglu(gate, up, out, 0, n);
    const expected = rt.f32(out, n).slice();
    let unwritten = 0;
    for (let pair = 0; pair < 40_000; pair++) {
      rt.f32(out, n).fill(NaN);
      deepStrictEqual(par.parGeglu(gate, up, out, 4, OP_TIMEOUT_MS), 0);
      deepStrictEqual(par.parGeglu(gate, up, out, n, OP_TIMEOUT_MS), 0);
      // A chunk is 1,024 elements: one in 256 of each checked.
      const o = rt.f32(out, n);
      for (let i = 0; i < n; i += 256) {
        if (!Object.is(o[i], expected[i])) {
          unwritten++;
          break;
        }
      }
    }
    deepStrictEqual(unwritten, 0, `${unwritten} of 40,000 ops returned before all their chunks`);
  } finally {
    rt.dispose();
  }
});

Deno.test("without SharedArrayBuffer the model runs on one thread, says why, and gives the same logits", async () => {
  const g = globalThis as { SharedArrayBuffer?: unknown };
  const saved = g.SharedArrayBuffer;
  delete g.SharedArrayBuffer;
  let model;
  try {
    model = await loadModel(tinyA, { threads: 4 });
  } finally {
    g.SharedArrayBuffer = saved;
  }
  deepStrictEqual(model.threads, 1);
  ok(
    /SharedArrayBuffer/.test(model.threadsFallbackReason ?? ""),
    `reason: ${model.threadsFallbackReason}`,
  );
  const r = golden.results[2];
  const d = maxAbsDiff(
    await model.createSession({ contextLength: 64 }).eval(r.prompt),
    r.last_position_logits,
  );
  ok(d <= 1e-4);
  await model.dispose();
});

Deno.test("a page that is not cross-origin isolated is told about COOP/COEP, not SharedArrayBuffer", async () => {
  // What Chrome gives such a page: crossOriginIsolated false and no SharedArrayBuffer.
  const g = globalThis as { SharedArrayBuffer?: unknown; crossOriginIsolated?: boolean };
  const saved = g.SharedArrayBuffer;
  delete g.SharedArrayBuffer;
  g.crossOriginIsolated = false;
  let model;
  try {
    model = await loadModel(tinyA, { threads: 2 });
  } finally {
    g.SharedArrayBuffer = saved;
    delete g.crossOriginIsolated;
  }
  deepStrictEqual(model.threads, 1);
  match(
    model.threadsFallbackReason!,
    /not cross-origin isolated.*Cross-Origin-Opener-Policy: same-origin.*Cross-Origin-Embedder-Policy: require-corp/,
  );
  await model.dispose();
});

Deno.test("a worker that fails to start means one thread and the reason, not a failed load", async () => {
  workerTestHooks.prelude = "throw new Error('simulated start failure');";
  let model;
  try {
    model = await loadModel(tinyA, { threads: 3 });
  } finally {
    workerTestHooks.prelude = "";
  }
  deepStrictEqual(model.threads, 1);
  match(
    model.threadsFallbackReason!,
    /worker thread \d of 3 failed to start: simulated start failure/,
  );
  // It computes what it should, on one thread.
  const r = golden.results[2];
  const d = maxAbsDiff(
    await model.createSession({ contextLength: 64 }).eval(r.prompt),
    r.last_position_logits,
  );
  ok(d <= 1e-4, `max |diff| ${d} vs the golden`);
  await model.dispose();
  // And the engine still starts workers afterwards.
  const two = await loadModel(tinyA, { threads: 2 });
  deepStrictEqual(two.threads, 2);
  await two.dispose();
});

Deno.test("bad thread counts are refused", async () => {
  await rejects(() => loadModel(tinyA, { threads: 0 }), /threads must be an integer from 1 to 64/);
  await rejects(() => loadModel(tinyA, { threads: 1.5 }), /threads/);
});

Deno.test("a program that never disposes its 2-thread model still exits (Deno and Bun)", async () => {
  const dir = await tempDir();
  const root = new URL("../", import.meta.url).pathname;
  await Deno.writeTextFile(
    `${dir}/forget.ts`,
    `import { loadModel } from "${root}mod.ts";
const model = await loadModel("${tinyA}", { threads: 2 });
const ids = [];
for await (const id of model.createSession().generate([2, 17, 42], { maxTokens: 4 })) ids.push(id);
console.log(model.threads, ids.join(" "));
`,
  );
  for (
    const [name, cmd, args] of [
      ["deno", Deno.execPath(), ["run", "-A", `${dir}/forget.ts`]],
      ["bun", "npx", ["-y", "bun@1.4.4", `${dir}/forget.ts`]],
    ] as const
  ) {
    const child = new Deno.Command(cmd, { args: [...args], stdout: "piped", stderr: "piped" })
      .spawn();
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill();
    }, 60_000);
    const out = await child.output();
    clearTimeout(timer);
    ok(!killed, `${name}: still running a minute after the program's end (workers keep it alive)`);
    deepStrictEqual(out.code, 0, `${name}: ${new TextDecoder().decode(out.stderr)}`);
    match(new TextDecoder().decode(out.stdout), /^2 \d+ \d+ \d+ \d+\n$/);
  }
});
