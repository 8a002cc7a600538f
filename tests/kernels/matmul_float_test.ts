// The f32 and bf16 products, the interleaved row layout and the embedding gather (asm/kernels/matmul_float.ts) against a float64 reference on random inputs, over
// shapes that are and are not multiples of the SIMD width. Tolerances are error bounds for f32
// arithmetic, derived per kernel below; a wrong index, pairing or scale errs by orders of
// magnitude more.

import { k, put, read, rt } from "../support/kernel_memory.ts";
import { asBF16, assertWithin, interleavedReference, randn, rng, U32 } from "../support/helpers.ts";

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

// The layout itself, against its definition (asm/kernels/matmul_float.ts): in each whole group of eight rows,
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
