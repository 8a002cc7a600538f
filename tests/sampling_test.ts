// The sampler against brute-force definitions of each filter, on small vocabularies where the
// exact distribution can be written down. Draw frequencies are compared with the exact
// probabilities within 5 standard deviations of a binomial count (false alarm < 1e-6).

import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { argmax, Sampler } from "../engine/sampling.ts";
import { randn, rng } from "./support/helpers.ts";

/** The exact distribution the options define, computed by sorting everything (HF order). */
function exactDistribution(
  logits: Float32Array,
  o: {
    temperature: number;
    topK?: number;
    topP?: number;
    minP?: number;
    repetitionPenalty?: number;
  },
  context: number[] = [],
): Float64Array {
  const l = Float64Array.from(logits);
  for (const id of new Set(context)) {
    const pen = o.repetitionPenalty ?? 1;
    l[id] = l[id] > 0 ? l[id] / pen : l[id] * pen;
  }
  const order = [...l.keys()].sort((a, b) => l[b] - l[a] || a - b);
  let keep = new Set(order.slice(0, o.topK || l.length));
  const soft = (ids: Set<number>) => {
    const m = Math.max(...[...ids].map((i) => l[i]));
    const p = new Float64Array(l.length);
    let z = 0;
    for (const i of ids) z += p[i] = Math.exp((l[i] - m) / o.temperature);
    return p.map((x) => x / z);
  };
  let p = soft(keep);
  if (o.topP !== undefined && o.topP < 1) {
    const kept = new Set<number>();
    let cum = 0;
    for (const i of order) {
      if (!keep.has(i)) continue;
      kept.add(i);
      cum += p[i];
      if (cum >= o.topP) break;
    }
    keep = kept;
    p = soft(keep);
  }
  if (o.minP) {
    const max = Math.max(...p);
    keep = new Set([...keep].filter((i) => p[i] >= o.minP! * max));
    p = soft(keep);
  }
  return p;
}

function checkFrequencies(
  logits: Float32Array,
  options: Parameters<typeof exactDistribution>[1],
  context: number[] = [],
  draw = (s: Sampler) => s.sample(logits, context),
  want = exactDistribution(logits, options, context),
) {
  const n = 20000;
  const s = new Sampler({ ...options, seed: 1234 });
  const counts = new Float64Array(logits.length);
  for (let i = 0; i < n; i++) counts[draw(s)]++;
  for (let i = 0; i < logits.length; i++) {
    const sd = Math.sqrt(n * want[i] * (1 - want[i]));
    if (want[i] === 0) deepStrictEqual(counts[i], 0, `token ${i} is filtered out but was drawn`);
    else {ok(
        Math.abs(counts[i] - n * want[i]) <= 5 * sd + 1,
        `token ${i}: ${counts[i]} draws, expected ${n * want[i]}`,
      );}
  }
}

const logits = randn(rng(9), 12, 1.5);

Deno.test("temperature 0 is argmax, lowest id on a tie", () => {
  deepStrictEqual(new Sampler({ temperature: 0 }).sample(new Float32Array([1, 3, 3, 2])), 1);
  deepStrictEqual(new Sampler().sample(logits), argmax(logits));
  throws(() => argmax(new Float32Array([1, NaN])), /NaN/);
});

Deno.test("plain temperature sampling follows softmax(l / T)", () => {
  checkFrequencies(logits, { temperature: 0.7 });
  checkFrequencies(logits, { temperature: 1.5 });
});

Deno.test("top-k, top-p, min-p and their combination", () => {
  checkFrequencies(logits, { temperature: 1, topK: 3 });
  checkFrequencies(logits, { temperature: 1, topP: 0.6 });
  checkFrequencies(logits, { temperature: 0.8, minP: 0.2 });
  checkFrequencies(logits, { temperature: 1.2, topK: 6, topP: 0.9, minP: 0.05 });
});

Deno.test("sampleAmong (a grammar's allowed tokens) follows the distribution with the rest masked out", () => {
  const allowed = [1, 4, 5, 8, 11];
  const masked = logits.map((v, i) => (allowed.includes(i) ? v : -Infinity));
  const context = [4, 8];
  for (
    const o of [
      { temperature: 1 },
      { temperature: 0.7, topK: 3 },
      { temperature: 1, topP: 0.7 },
      { temperature: 1.3, minP: 0.3 },
      { temperature: 1, repetitionPenalty: 1.8 },
    ]
  ) {
    checkFrequencies(
      logits,
      o,
      context,
      (s) => s.sampleAmong(logits, allowed, context),
      exactDistribution(masked, o, context),
    );
  }
  // Greedy: the best allowed token, the lowest id on a tie.
  deepStrictEqual(new Sampler().sampleAmong(logits, allowed), argmax(masked));
  deepStrictEqual(new Sampler().sampleAmong(new Float32Array([0, 2, 5, 5]), [3, 2, 1]), 2);
  throws(() => new Sampler().sampleAmong(new Float32Array([NaN, 1]), [0, 1]), /NaN/);
});

Deno.test("redrawAmong (the first draw's weights, restricted) follows the masked distribution", () => {
  const allowed = [0, 3, 7, 10];
  const bits = new Uint32Array(1);
  for (const id of allowed) bits[0] |= 1 << id;
  const masked = logits.map((v, i) => (allowed.includes(i) ? v : -Infinity));
  for (const o of [{ temperature: 1 }, { temperature: 0.6, repetitionPenalty: 1.5 }]) {
    const context = [3];
    checkFrequencies(logits, o, context, (s) => {
      s.sample(logits, context); // the first draw, whose weights are drawn from again
      return s.redrawAmong(bits)!;
    }, exactDistribution(masked, o, context));
  }
  // Only after a draw from the whole vocabulary's weights, and only once.
  const s = new Sampler({ temperature: 1, topK: 4, seed: 1 });
  s.sample(logits);
  deepStrictEqual(s.redrawAmong(bits), undefined);
  const t = new Sampler({ temperature: 1, seed: 1 });
  deepStrictEqual(t.redrawAmong(bits), undefined);
  t.sample(logits);
  ok(allowed.includes(t.redrawAmong(bits)!));
  deepStrictEqual(t.redrawAmong(bits), undefined);
});

Deno.test("top-p measures mass over the whole vocabulary, also the long tail", () => {
  // 3000 unlikely tokens (weight e^-8 each, below the first candidate threshold) together hold
  // as much mass as the 12 likely ones: a nucleus computed over the likely ones alone is too small.
  const tail = new Float32Array(3012).fill(-8);
  tail.set(logits.map((x) => x - Math.max(...logits)));
  checkFrequencies(tail, { temperature: 1, topP: 0.7 });
  checkFrequencies(tail, { temperature: 1, minP: 0.1 });
});

Deno.test("top-p on a large vocabulary finds the same nucleus without a full sort", () => {
  const big = randn(rng(2), 50000, 4);
  const s = new Sampler({ temperature: 1, topP: 0.5, seed: 5 });
  const want = exactDistribution(big, { temperature: 1, topP: 0.5 });
  for (let i = 0; i < 200; i++) ok(want[s.sample(big)] > 0, "drew a token outside the nucleus");
});

Deno.test("repetition penalty lowers tokens already in the context", () => {
  checkFrequencies(logits, { temperature: 1, repetitionPenalty: 1.8 }, [argmax(logits), 3, 3]);
});

Deno.test("a seed makes sampling reproducible; different seeds differ", () => {
  const draw = (seed: number) => {
    const s = new Sampler({ temperature: 1, seed });
    return Array.from({ length: 50 }, () => s.sample(logits));
  };
  deepStrictEqual(draw(7), draw(7));
  ok(draw(7).join() !== draw(8).join());
});
