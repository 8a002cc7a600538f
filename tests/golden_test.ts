// tiny-a (tests/fixtures/tiny-a, from shared/fixtures) against its golden outputs, computed by an
// independent float32 PyTorch implementation. The README of the fixture sets the bar for a
// float32 engine: logits within 1e-4 (the f32-vs-f64 noise floor is ~1e-5), the same top-1 at
// every position, identical greedy continuations (smallest top-1/top-2 margin 0.016).

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { loadModel, type Session } from "../mod.ts";
import { FIXTURES, maxAbsDiff } from "./support/helpers.ts";
import { SPARE_SLOTS } from "../engine/gemma3/forward.ts";

const dir = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${dir}/golden.json`));
const TOL = 1e-4;

interface Top5 {
  ids: number[];
  logits: number[];
}
interface GoldenResult {
  prompt: number[];
  last_position_logits: number[];
  per_position_top5: Top5[];
  greedy_continuation_kv_cache: number[];
  continuation_step_top5: Top5[];
}
const results: GoldenResult[] = golden.results;

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function checkTop5(row: Float32Array, want: Top5, where: string) {
  assertEquals(argmax(row), want.ids[0], `${where}: top-1`);
  const got = want.ids.map((id) => row[id]);
  const d = maxAbsDiff(got, want.logits);
  if (!(d <= TOL)) throw new Error(`${where}: top-5 logits differ by ${d}`);
}

/** Greedy decode with our own argmax over eval() logits (independent of generate()). */
async function greedy(
  s: Session,
  last: Float32Array,
  steps: Top5[] | null,
  n: number,
): Promise<number[]> {
  const out: number[] = [];
  let logits = last;
  for (let i = 0; i < n; i++) {
    if (steps) checkTop5(logits, steps[i], `generation step ${i}`);
    const id = argmax(logits);
    out.push(id);
    logits = await s.eval([id]);
  }
  return out;
}

const model = await loadModel(dir);
const V = model.config.vocabSize;

for (const [p, r] of results.entries()) {
  Deno.test(`tiny-a prompt ${p} (${r.prompt.length} tokens): logits, top-1 per position, greedy`, async () => {
    const s = model.createSession({ contextLength: 128 });
    const all = await s.eval(r.prompt, { logits: "all" });
    assertEquals(all.length, r.prompt.length * V);
    for (let t = 0; t < r.prompt.length; t++) {
      checkTop5(all.subarray(t * V, (t + 1) * V), r.per_position_top5[t], `position ${t}`);
    }
    const last = all.subarray((r.prompt.length - 1) * V);
    const d = maxAbsDiff(last, r.last_position_logits);
    if (!(d <= TOL)) throw new Error(`last-position logits differ by ${d}`);
    assertEquals(
      await greedy(s, last, r.continuation_step_top5, 24),
      r.greedy_continuation_kv_cache,
    );
    s.dispose();
  });

  Deno.test(`tiny-a prompt ${p}: the same greedy tokens evaluated at once, token by token, in chunks of 3`, async () => {
    for (const chunk of [r.prompt.length, 1, 3]) {
      const s = model.createSession({ contextLength: 128 });
      let last!: Float32Array;
      for (let i = 0; i < r.prompt.length; i += chunk) {
        last = await s.eval(r.prompt.slice(i, i + chunk));
      }
      assertEquals(
        await greedy(s, last, null, 24),
        r.greedy_continuation_kv_cache,
        `chunk ${chunk}`,
      );
      s.dispose();
    }
  });

  Deno.test(`tiny-a prompt ${p}: generate() yields the golden greedy continuation`, async () => {
    const s = model.createSession({ contextLength: 128 });
    const out: number[] = [];
    for await (
      const id of s.generate(r.prompt, { maxTokens: 24, temperature: 0, stopTokens: [] })
    ) out.push(id);
    assertEquals(out, r.greedy_continuation_kv_cache);
    assertEquals(s.position, r.prompt.length + 24);
    s.dispose();
  });
}

Deno.test("tiny-a float32 logits are within 1e-4 of the independent float64 reference", async () => {
  const ref = golden.float64_reference;
  const s = model.createSession({ contextLength: 64 });
  const d = maxAbsDiff(
    await s.eval(golden.prompts[ref.prompt_index]),
    ref.last_position_logits_f64,
  );
  if (!(d <= TOL)) throw new Error(`differs from float64 by ${d}`);
  s.dispose();
});

Deno.test("a model whose internal chunk is smaller than the window still meets the golden", async () => {
  const small = await loadModel(dir, { maxChunk: 5 });
  const r = results[2];
  const s = small.createSession({ contextLength: 100 });
  const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
  if (!(d <= TOL)) throw new Error(`differs by ${d}`);
  await small.dispose();
});

Deno.test("sliding layers keep the window and SPARE_SLOTS more; full layers the context length", () => {
  const c = model.config;
  const kvRow = c.numKvHeads * c.headDim * 4 * 2; // keys + values, f32
  const sliding = c.layerTypes.filter((t) => t === "sliding_attention").length;
  const full = c.numLayers - sliding;
  assertEquals(sliding, 5);
  for (const ctx of [4, 8, 100, 2000]) {
    const s = model.createSession({ contextLength: ctx });
    assertEquals(
      s.kvBytes,
      kvRow * (sliding * Math.min(c.slidingWindow + SPARE_SLOTS, ctx) + full * ctx),
      `context ${ctx}`,
    );
    s.dispose();
  }
});
