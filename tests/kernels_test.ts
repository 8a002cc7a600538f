// Each kernel of asm/kernels.ts against a float64 reference on random inputs, over shapes that
// are and are not multiples of the SIMD width. Tolerances are error bounds for f32 arithmetic,
// derived per kernel below; a wrong index, pairing or scale errs by orders of magnitude more.

import { WasmRuntime } from "../engine/backends/wasm/runtime.ts";
import { asBF16, assertWithin, interleavedReference, randn, rng, U32 } from "./support/helpers.ts";
import { refAttention, refGeglu, refRmsNorm, refRope } from "./support/ops_reference.ts";

const rt = await WasmRuntime.create();
const k = rt.kernels;

function put(values: ArrayLike<number> | Uint16Array | Int32Array, bytesPer = 4): number {
  const ptr = rt.alloc(values.length * bytesPer);
  if (values instanceof Uint16Array) {
    new Uint16Array(rt.memory.buffer, ptr, values.length).set(values);
  } else if (values instanceof Int32Array) rt.i32(ptr, values.length).set(values);
  else rt.f32(ptr, values.length).set(values);
  return ptr;
}

const read = (ptr: number, n: number) => Float32Array.from(rt.f32(ptr, n));

// Matrix products. Any order of summing n rounded products errs by at most about
// n·u·Σ|w·x| (the γ_n bound of recursive summation, each product adding one more u).
// Each shape runs with W row after row and interleaved (interleaveRows): the interleaved
// layout must give the same bits, in every split of the rows.
for (const dtype of ["f32", "bf16"] as const) {
  for (
    const [rows, cols, tokens] of [
      [1, 1, 1],
      [3, 5, 2],
      [4, 8, 1],
      [7, 13, 3],
      [33, 64, 5],
      [9, 70, 4],
      [16, 257, 2],
      [21, 70, 1],
      [16, 257, 1],
      [24, 64, 1],
      [45, 40, 1],
      [45, 40, 3],
      [8, 8, 2],
      [17, 1032, 1],
    ]
  ) {
    Deno.test(`matmul ${dtype} ${rows}x${cols}, ${tokens} token(s)`, () => {
      const rand = rng(rows * 1000 + cols * 10 + tokens);
      let w = randn(rand, rows * cols);
      let wPtr: number;
      if (dtype === "bf16") {
        const b = asBF16(w);
        w = b.values;
        wPtr = put(b.bits, 2);
      } else wPtr = put(w);
      const x = randn(rand, tokens * cols);
      const xPtr = put(x);
      const yPtr = rt.alloc(tokens * rows * 4);
      const mm = dtype === "f32" ? k.matmulF32 : k.matmulBF16;
      // Rows in ranges split off the 4- and 8-row grids, as threads might: the same as one range.
      const run = (interleaved: number) => {
        const ranges = [[0, rows]];
        for (const cut of [3, 4, 8, 12]) if (cut < rows) ranges.push([0, cut], [cut, rows]);
        let whole: Float32Array | undefined;
        for (let i = ranges.length - 1; i >= 0; i -= 2) {
          // Each pair of ranges (or the whole) fills y; compare every fill with the first.
          const parts = i === 0 ? [ranges[0]] : [ranges[i - 1], ranges[i]];
          rt.f32(yPtr, tokens * rows).fill(NaN);
          for (const [a, b] of parts) mm(wPtr, xPtr, yPtr, rows, cols, tokens, a, b, interleaved);
          const y = read(yPtr, tokens * rows);
          if (!whole) whole = y;
          else if (y.some((v, j) => !Object.is(v, whole![j]))) {
            throw new Error(`rows split at ${parts[0][1]} changed the result`);
          }
        }
        return whole!;
      };
      const inOrder = run(0);
      const bytesPer = dtype === "f32" ? 4 : 2;
      const scratch = rt.alloc(8 * cols * bytesPer);
      k.interleaveRows(wPtr, rows, cols, bytesPer, scratch);
      const interleaved = run(1);
      if (interleaved.some((v, j) => !Object.is(v, inOrder[j]))) {
        throw new Error("the interleaved layout changed the result");
      }
      const want = new Float64Array(tokens * rows);
      const tol = new Float64Array(tokens * rows);
      for (let t = 0; t < tokens; t++) {
        for (let r = 0; r < rows; r++) {
          let s = 0, a = 0;
          for (let c = 0; c < cols; c++) {
            s += w[r * cols + c] * x[t * cols + c];
            a += Math.abs(w[r * cols + c] * x[t * cols + c]);
          }
          want[t * rows + r] = s;
          tol[t * rows + r] = (cols + 1) * U32 * a;
        }
      }
      assertWithin(interleaved, want, tol, "y");
      for (const p of [wPtr, xPtr, yPtr, scratch]) rt.free(p);
    });
  }
}

// The layout itself, against its definition (asm/kernels.ts): in each whole group of eight rows,
// chunk c (16 bytes) of row i sits at 128·c + 16·i; rows after the last whole group, matrices
// whose rows are not whole chunks, and f32 rows over 4 KB stay in order.
Deno.test("interleaveRows lays out groups of eight rows chunk by chunk", () => {
  for (
    const [rows, cols, bytesPer] of [
      [19, 8, 4],
      [16, 24, 2],
      [9, 6, 2],
      [12, 3, 4],
      [9, 1024, 4],
      [9, 1028, 4],
      [9, 2056, 2],
    ]
  ) {
    const rowBytes = cols * bytesPer;
    const bytes = new Uint8Array(rows * rowBytes).map((_, i) => (i * 7 + 3) & 255);
    const p = put(new Uint16Array(bytes.buffer), 2);
    const scratch = rt.alloc(8 * rowBytes);
    k.interleaveRows(p, rows, cols, bytesPer, scratch);
    const got = new Uint8Array(rt.memory.buffer, p, bytes.length);
    const qualifies = rowBytes % 16 === 0 && (bytesPer === 2 || rowBytes <= 4096);
    const want = qualifies ? interleavedReference(bytes, rows, rowBytes, 8, 16) : bytes;
    const at = got.findIndex((v, i) => v !== want[i]);
    if (at >= 0) {
      throw new Error(`${rows}x${cols}x${bytesPer}: byte ${at} is ${got[at]}, not ${want[at]}`);
    }
    rt.free(p);
    rt.free(scratch);
  }
});

// Embedding gather: widening bf16 is exact, so only the final multiply rounds (u).
Deno.test("embed f32 and bf16 gather rows and scale them, in either layout", () => {
  const rand = rng(7);
  // 21 rows: two interleaved groups of eight and five rows in order after them.
  for (const [vocab, hidden] of [[11, 13], [21, 16]]) {
    const table = asBF16(randn(rand, vocab * hidden));
    const ids = new Int32Array([3, 0, 10, 3, 7, vocab - 1, vocab - 5]);
    const scale = Math.fround(Math.sqrt(hidden));
    const want = new Float64Array(ids.length * hidden);
    ids.forEach((id, t) => {
      for (let i = 0; i < hidden; i++) want[t * hidden + i] = table.values[id * hidden + i] * scale;
    });
    const tol = Array.from(want, (v) => U32 * Math.abs(v));
    const idsPtr = put(ids);
    const out = rt.alloc(ids.length * hidden * 4);
    const bf16 = put(table.bits, 2), f32 = put(table.values);
    const scratch = rt.alloc(8 * hidden * 4);
    for (const interleaved of [0, 1]) {
      if (interleaved) {
        k.interleaveRows(bf16, vocab, hidden, 2, scratch);
        k.interleaveRows(f32, vocab, hidden, 4, scratch);
      }
      const what = `${vocab}x${hidden} interleaved ${interleaved}`;
      k.embedBF16(bf16, vocab, idsPtr, ids.length, hidden, scale, out, interleaved);
      assertWithin(read(out, want.length), want, tol, `bf16 ${what}`);
      k.embedF32(f32, vocab, idsPtr, ids.length, hidden, scale, out, interleaved);
      assertWithin(read(out, want.length), want, tol, `f32 ${what}`);
    }
  }
});

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
  Deno.test(`ropeInPlace ${tokens}x${heads}x${headDim} from ${startPos}, base ${base}, factor ${factor}`, () => {
    const rand = rng(headDim + startPos);
    const x = randn(rand, tokens * heads * headDim);
    const { want, tol } = refRope(x, tokens, heads, headDim, startPos, base, factor, U32);
    const ptr = put(x);
    // Tokens in two ranges, as threads split them.
    const cut = tokens >> 1;
    k.ropeInPlace(ptr, 0, cut, heads, headDim, startPos, base, factor);
    k.ropeInPlace(ptr, cut, tokens, heads, headDim, startPos, base, factor);
    assertWithin(read(ptr, x.length), want, tol, "x");
  });
}

// Attention against a float64 reference that keeps the whole history (no ring buffer). The
// kernel is fed in chunks (some longer than the ring) so its ring wraps several times, and over
// spans long enough for each of its loops (asm/kernels.ts). Error bound: each score errs by at
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
    const scores = rt.alloc(capacity * 4);
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

Deno.test("allocator reuses freed memory and coalesces neighbours", () => {
  const a = rt.alloc(1000), b = rt.alloc(1000), c = rt.alloc(1000);
  rt.free(a);
  rt.free(b);
  const d = rt.alloc(2000); // fits only in a and b merged
  if (d !== a) throw new Error(`expected reuse of ${a}, got ${d}`);
  rt.free(c);
  rt.free(d);
});
