// Attention over the KV cache (asm/kernels/attention.ts) against a float64 reference on random inputs, over
// shapes that are and are not multiples of the SIMD width. Tolerances are error bounds for f32
// arithmetic, derived per kernel below; a wrong index, pairing or scale errs by orders of
// magnitude more.

import { k, put, read, rt } from "../support/kernel_memory.ts";
import { assertWithin, randn, rng, U32 } from "../support/helpers.ts";
import { refAttention } from "../support/ops_reference.ts";
import assert from "node:assert/strict";

/** One layer's attention state in kernel memory: shape, KV cache and scratch. */
interface Layer {
  heads: number;
  kvHeads: number;
  headDim: number;
  window: number;
  capacity: number;
  scale: number;
  kCache: number;
  vCache: number;
  scratch: number;
}

function allocLayer(shape: Omit<Layer, "kCache" | "vCache" | "scratch">): Layer {
  const bytes = shape.capacity * shape.kvHeads * shape.headDim * 4;
  return {
    ...shape,
    kCache: rt.alloc(bytes),
    vCache: rt.alloc(bytes),
    scratch: rt.alloc(k.attentionScratchBytes()),
  };
}

function freeLayer(l: Layer): void {
  for (const p of [l.kCache, l.vCache, l.scratch]) rt.free(p);
}

/** Attends a chunk of T tokens at pos (their q, k, v rows) with its (token, head) items in
 * `ranges`, as threads split them (a range may start or end inside a token's heads); then the
 * chunk joins the cache. Returns the chunk's outputs. */
function attendChunk(
  l: Layer,
  q: Float32Array,
  kk: Float32Array,
  v: Float32Array,
  T: number,
  pos: number,
  ranges: [number, number][],
): Float32Array {
  const ptrs = [put(q), put(kk), put(v), rt.alloc(T * l.heads * l.headDim * 4)];
  for (const [i0, i1] of ranges) {
    k.attention(
      ptrs[0],
      ptrs[1],
      ptrs[2],
      l.kCache,
      l.vCache,
      ptrs[3],
      l.scratch,
      T,
      pos,
      l.heads,
      l.kvHeads,
      l.headDim,
      l.capacity,
      l.window,
      l.scale,
      i0,
      i1,
    );
  }
  k.appendKv(ptrs[1], ptrs[2], l.kCache, l.vCache, T, pos, l.kvHeads * l.headDim, l.capacity);
  const out = read(ptrs[3], T * l.heads * l.headDim);
  ptrs.forEach((p) => rt.free(p));
  return out;
}

// Attention against a float64 reference that keeps the whole history (no ring buffer). The
// kernel is fed in chunks (some longer than the ring) so its ring wraps several times, and over
// spans long enough for each of its loops (asm/kernels/attention.ts). Error bound: each score errs by at
// most (d+2)·u·scale·Σ|q·k|; a score error δ changes a softmax weight by a relative ~2δ, and the
// weighted sum of n values adds (n+2)·u; all times max|v|. (The online softmax's rescaling adds
// one rounding per tile of 64 positions to the sum and to each output: within the 8·u spare.)
const attentionCases: [number, number, number, number, number, number[], number][] = [
  [4, 1, 32, 8, 8, [1, 3, 7, 1, 12, 2], 32],
  [4, 2, 6, 5, 5, [4, 4, 4, 4, 9, 2], 20],
  [2, 2, 16, 0, 40, [9, 1, 30], 16],
  [8, 4, 13, 0, 20, [1, 1, 1, 5], 7],
  // Spans of 64 positions over a wrapping ring; 32-, 4- and 1-wide slices of each head.
  [4, 1, 37, 100, 100, [70, 90, 3, 150, 1], 37],
  // Four query heads per KV head, two KV heads: the four-head pass, with 8-, 4- and 1-wide
  // slices of each head.
  [8, 2, 13, 40, 40, [3, 1, 50, 7], 13],
  // Thousands of positions: 33 tiles of keys, the running maximum rescaling the output.
  [2, 1, 8, 0, 2100, [2060, 2], 8],
];
for (const [heads, kvHeads, headDim, window, capacity, chunks, qScalar] of attentionCases) {
  Deno.test(`attention ${heads}/${kvHeads} heads, d=${headDim}, window ${window || "full"}, chunks ${chunks}`, () => {
    const rand = rng(heads * 100 + headDim + window);
    const scale = qScalar ** -0.5;
    const kvDim = kvHeads * headDim, qDim = heads * headDim;
    const layer = allocLayer({ heads, kvHeads, headDim, window, capacity, scale });
    const allK: Float32Array[] = [], allV: Float32Array[] = [];
    let pos = 0;
    for (const T of chunks) {
      const q = randn(rand, T * qDim, 1.5),
        kk = randn(rand, T * kvDim, 1.5),
        v = randn(rand, T * kvDim);
      for (let t = 0; t < T; t++) {
        allK.push(kk.slice(t * kvDim, (t + 1) * kvDim));
        allV.push(v.slice(t * kvDim, (t + 1) * kvDim));
      }
      const ref = refAttention(q, allK, allV, pos, T, { heads, kvHeads, headDim, window, scale });
      const tol = new Float64Array(T * qDim);
      for (let th = 0; th < T * heads; th++) {
        const bound = (2 * (headDim + 2) * U32 * ref.absMax[th] + (ref.n[th] + 8) * U32) *
          ref.vMax[th];
        tol.fill(bound, th * headDim, (th + 1) * headDim);
      }
      const items = T * heads, split = Math.floor(items / 3) + 1;
      const got = attendChunk(layer, q, kk, v, T, pos, [[0, split], [split, items]]);
      assertWithin(got, ref.want, tol, `chunk at ${pos}`);
      pos += T;
    }
    freeLayer(layer);
  });
}

// Same bits whatever the chunking and the split across threads: a sequence's queries attended
// one token at a time and one head at a time (every head alone), and in chunks of other lengths
// with all items at once or in uneven ranges (four heads of a KV head together where a range
// holds them), must agree bit for bit at every position. The window (70) and the chunks are not
// multiples of the key tiles, the ring wraps, and headDim 37 has 32-, 8-, 4- and 1-wide slices.
const invarianceCases: [number, number, number, number, number][] = [
  [4, 1, 37, 70, 70],
  [8, 2, 16, 0, 300],
  // Two query heads per KV head (the larger Gemma 3 models).
  [6, 3, 23, 50, 50],
];
for (const [heads, kvHeads, headDim, window, capacity] of invarianceCases) {
  Deno.test(`attention ${heads}/${kvHeads} heads, window ${window || "full"}: the same bits in any chunk and any split of items`, () => {
    const rand = rng(7 + heads + headDim);
    const n = 260, kvDim = kvHeads * headDim, qDim = heads * headDim;
    const q = randn(rand, n * qDim, 1.5),
      kk = randn(rand, n * kvDim, 1.5),
      v = randn(rand, n * kvDim);
    const run = (chunks: number[], ranges: (items: number) => [number, number][]) => {
      const layer = allocLayer({
        heads,
        kvHeads,
        headDim,
        window,
        capacity,
        scale: headDim ** -0.5,
      });
      const out = new Float32Array(n * qDim);
      let pos = 0;
      for (const T of chunks) {
        const rows = (x: Float32Array, width: number) => x.subarray(pos * width, (pos + T) * width);
        out.set(
          attendChunk(
            layer,
            rows(q, qDim),
            rows(kk, kvDim),
            rows(v, kvDim),
            T,
            pos,
            ranges(T * heads),
          ),
          pos * qDim,
        );
        pos += T;
      }
      freeLayer(layer);
      return out;
    };
    const eachAlone = (items: number) =>
      Array.from({ length: items }, (_, i) => [i, i + 1] as [number, number]);
    const all = (items: number): [number, number][] => [[0, items]];
    const uneven = (items: number): [number, number][] => {
      const a = Math.floor(items / 3) + 1, b = Math.floor((2 * items) / 3) + 2;
      return [[0, a], [a, Math.min(b, items)], [Math.min(b, items), items]];
    };
    const alone = run(Array(n).fill(1), eachAlone);
    const variants: [string, Float32Array][] = [
      ["chunks 100, 1, 159, all items at once", run([100, 1, 159], all)],
      ["chunks 37, 64, 159, uneven ranges", run([37, 64, 159], uneven)],
      ["one chunk of 260, uneven ranges", run([n], uneven)],
    ];
    for (const [name, got] of variants) {
      const bitsGot = new Uint32Array(got.buffer), bitsAlone = new Uint32Array(alone.buffer);
      const first = bitsGot.findIndex((b, i) => b !== bitsAlone[i]);
      assert.equal(
        first,
        -1,
        `${name}: position ${Math.floor(first / qDim)} differs from the token evaluated alone`,
      );
    }
    // And the values are attention's (not, say, all zeros equal everywhere).
    const ref = refAttention(
      q,
      Array.from({ length: n }, (_, t) => kk.slice(t * kvDim, (t + 1) * kvDim)),
      Array.from({ length: n }, (_, t) => v.slice(t * kvDim, (t + 1) * kvDim)),
      0,
      n,
      { heads, kvHeads, headDim, window, scale: headDim ** -0.5 },
    );
    let worst = 0;
    for (let i = 0; i < ref.want.length; i++) {
      worst = Math.max(worst, Math.abs(ref.want[i] - alone[i]));
    }
    assert(worst < 1e-4, `largest error against float64 ${worst}`);
  });
}
