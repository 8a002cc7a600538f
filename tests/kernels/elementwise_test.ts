// RMSNorm, RoPE, GeGLU and the residual add (asm/kernels/elementwise.ts) against a float64 reference on random inputs, over
// shapes that are and are not multiples of the SIMD width. Tolerances are error bounds for f32
// arithmetic, derived per kernel below; a wrong index, pairing or scale errs by orders of
// magnitude more.

import { k, put, read, rt } from "../support/kernel_memory.ts";
import { assertWithin, randn, rng, U32 } from "../support/helpers.ts";
import { refGeglu, refRmsNorm, refRope } from "../support/ops_reference.ts";

// RMSNorm: the f64 sum of squares is exact to ~1e-16; then four f32 roundings (the inverse
// root, x·inv, 1 + w, the final product) bound the error by 4u·|out|.
for (const [rows, n] of [[1, 1], [2, 5], [3, 32], [1, 640], [4, 67]]) {
  Deno.test(`rmsNorm ${rows}x${n}`, () => {
    const rand = rng(n * 31 + rows);
    const x = randn(rand, rows * n, 3);
    const w = randn(rand, n, 0.5);
    const eps = 1e-6;
    const want = refRmsNorm(x, w, rows, n, eps);
    const tol = Array.from(want, (v) => 5 * U32 * Math.abs(v) + 1e-30);
    const xPtr = put(x);
    const out = rt.alloc(rows * n * 4);
    k.rmsNorm(xPtr, put(w), out, rows, n, eps);
    assertWithin(read(out, rows * n), want, tol, "out");
    k.rmsNorm(xPtr, put(w), xPtr, rows, n, eps); // in place
    assertWithin(read(xPtr, rows * n), want, tol, "in place");
  });
}

// RoPE: cos and sin rounded to f32 (u each), two products and a sum rounded: at most
// 4u·(|x1| + |x2|) per output. Large start positions check that the phase stays exact.
for (
  const [tokens, heads, headDim, startPos, base, factor] of [
    [1, 1, 2, 0, 10000, 1],
    [3, 4, 32, 5, 10000, 1],
    [2, 2, 256, 4090, 1e6, 8],
    [5, 3, 10, 31000, 1e6, 1],
  ]
) {
  Deno.test(`ropeTable + ropeApply ${tokens}x${heads}x${headDim} from ${startPos}, base ${base}, factor ${factor}`, () => {
    const rand = rng(headDim + startPos);
    const x = randn(rand, tokens * heads * headDim);
    const { want, tol } = refRope(x, tokens, heads, headDim, startPos, base, factor, U32);
    const ptr = put(x);
    // Tokens in two ranges, as threads split them (the table's too).
    const cut = tokens >> 1;
    const table = rt.alloc(tokens * headDim * 4);
    k.ropeTable(table, cut, tokens, headDim, startPos, base, factor);
    k.ropeTable(table, 0, cut, headDim, startPos, base, factor);
    k.ropeApply(ptr, table, 0, cut, heads, headDim);
    k.ropeApply(ptr, table, cut, tokens, heads, headDim);
    rt.free(table);
    assertWithin(read(ptr, x.length), want, tol, "x");
  });
}

// GeGLU, computed as x / (1 + exp(-2z)): exp is accurate to a couple of ulps and the rest are a
// few f32 roundings, each relative to the result; the inner z errs by a few u relative to z, which
// moves the logistic factor by at most |z|·u·(its slope) ≤ u. 16u·|gate|·|up| bounds all of it.
Deno.test("geglu matches gelu_pytorch_tanh(gate) * up", () => {
  const rand = rng(3);
  for (const n of [1, 7, 128, 2051]) {
    const g = randn(rand, n, 3), u = randn(rand, n);
    const want = refGeglu(g, u);
    const tol = Array.from(g, (x, i) => 16 * U32 * Math.abs(x * u[i]) + 1e-30);
    const out = rt.alloc(n * 4);
    const [gp, up] = [put(g), put(u)];
    k.geglu(gp, up, out, 0, n >> 1);
    k.geglu(gp, up, out, n >> 1, n);
    assertWithin(read(out, n), want, tol, `n=${n}`);
  }
});

// Residual add: one rounding per element.
Deno.test("addInPlace adds elementwise", () => {
  const rand = rng(5);
  for (const n of [1, 3, 4, 17, 640]) {
    const x = randn(rand, n), y = randn(rand, n);
    const xp = put(x);
    k.addInPlace(xp, put(y), n);
    const want = Array.from(x, (v, i) => v + y[i]);
    assertWithin(read(xp, n), want, want.map((v) => U32 * Math.abs(v)), `n=${n}`);
  }
});

// argmaxF32 (greedy decoding on the backend): the index of the largest value, the lowest on
// ties, or -1 when a value is not finite; exact, so compared with a plain loop over the values.
Deno.test("argmaxF32: the first largest value, at every length and position; -1 for NaN or infinity", () => {
  const expected = (v: Float32Array): number => {
    if (v.some((x) => !Number.isFinite(x))) return -1;
    let best = 0;
    for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
    return best;
  };
  const rand = rng(77);
  // Every length to 70 (16 values a step, then 4, then one at a time), and the 270M's vocabulary.
  const lengths = [...Array.from({ length: 70 }, (_, i) => i + 1), 262_144];
  for (const n of lengths) {
    for (let trial = 0; trial < 6; trial++) {
      const v = Float32Array.from(randn(rand, n, 2));
      // Ties: the maximum copied to a later (trial 1) or an earlier (trial 2) place; -0 and +0
      // as the largest values (trial 3); a non-finite value anywhere (trials 4, 5).
      const at = Math.floor(rand() * n), other = Math.floor(rand() * n);
      if (trial === 1 || trial === 2) v[Math.max(at, other)] = v[Math.min(at, other)] = 9;
      if (trial === 3) {
        v.fill(-1);
        v[at] = -0;
        v[other] = 0;
      }
      if (trial === 4) v[at] = NaN;
      if (trial === 5) v[at] = at % 2 ? Infinity : -Infinity;
      const got = k.argmaxF32(put(v), n);
      if (got !== expected(v)) {
        throw new Error(`n ${n}, trial ${trial}: ${got}, expected ${expected(v)}`);
      }
    }
  }
});
