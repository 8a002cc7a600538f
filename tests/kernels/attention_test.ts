// Attention over the KV cache (asm/kernels/attention.ts) against a float64 reference on random inputs, over
// shapes that are and are not multiples of the SIMD width. Tolerances are error bounds for f32
// arithmetic, derived per kernel below; a wrong index, pairing or scale errs by orders of
// magnitude more.

import { k, put, read, rt } from "../support/kernel_memory.ts";
import { assertWithin, randn, rng, U32 } from "../support/helpers.ts";
import { refAttention } from "../support/ops_reference.ts";

// Attention against a float64 reference that keeps the whole history (no ring buffer). The
// kernel is fed in chunks (some longer than the ring) so its ring wraps several times, and over
// spans long enough for each of its loops (asm/kernels/attention.ts). Error bound: each score errs by at
// most (d+2)·u·scale·Σ|q·k|; a score error δ changes a softmax weight by a relative ~2δ, and the
// weighted sum of n values adds (n+2)·u; all times max|v|.
const attentionCases: [number, number, number, number, number, number[], number][] = [
  [4, 1, 32, 8, 8, [1, 3, 7, 1, 12, 2], 32],
  [4, 2, 6, 5, 5, [4, 4, 4, 4, 9, 2], 20],
  [2, 2, 16, 0, 40, [9, 1, 30], 16],
  [8, 4, 13, 0, 20, [1, 1, 1, 5], 7],
  // Spans of 64 positions over a wrapping ring; 32-, 4- and 1-wide slices of each head.
  [4, 1, 37, 100, 100, [70, 90, 3, 150, 1], 37],
  // More positions than VALUES_IN_CACHE (2048): keys one by one, values row by row.
  [2, 1, 8, 0, 2100, [2060, 2], 8],
];
for (const [heads, kvHeads, headDim, window, capacity, chunks, qScalar] of attentionCases) {
  Deno.test(`attention ${heads}/${kvHeads} heads, d=${headDim}, window ${window || "full"}, chunks ${chunks}`, () => {
    const rand = rng(heads * 100 + headDim + window);
    const scale = qScalar ** -0.5;
    const kvDim = kvHeads * headDim, qDim = heads * headDim;
    const kCache = rt.alloc(capacity * kvDim * 4), vCache = rt.alloc(capacity * kvDim * 4);
    const scores = rt.alloc(Math.ceil(capacity / 4) * 16); // whole vectors (see attention)
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
      const ptrs = [put(q), put(kk), put(v), rt.alloc(T * qDim * 4)];
      // Heads in two ranges, as threads split them; then the chunk joins the cache.
      const split = heads >> 1;
      for (const [h0, h1] of [[0, split], [split, heads]]) {
        k.attention(
          ptrs[0],
          ptrs[1],
          ptrs[2],
          kCache,
          vCache,
          ptrs[3],
          scores,
          T,
          pos,
          heads,
          kvHeads,
          headDim,
          capacity,
          window,
          scale,
          h0,
          h1,
        );
      }
      k.appendKv(ptrs[1], ptrs[2], kCache, vCache, T, pos, kvDim, capacity);
      assertWithin(read(ptrs[3], T * qDim), ref.want, tol, `chunk at ${pos}`);
      ptrs.forEach((p) => rt.free(p));
      pos += T;
    }
  });
}
