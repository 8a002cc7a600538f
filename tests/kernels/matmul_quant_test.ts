// Products with block-quantized weights (asm/kernels/matmul_quant.ts) against a float64 reference
// on the same quantized operands, in the plain and relaxed builds; the interleaved block layout
// against its definition; the gather from a block-quantized table against ggml's decoders.

import { deepStrictEqual, ok } from "node:assert/strict";
import { QUANT } from "../../engine/formats/quant.ts";
import { WasmRuntime } from "../../engine/backends/wasm/runtime.ts";
import { ggmlDecode } from "../support/ggml_blocks.ts";
import { FORMATS, randomBlocks } from "../support/random_blocks.ts";
import { rt as kernelRt } from "../support/kernel_memory.ts";
import { assertWithin, randn, rng, U32 } from "../support/helpers.ts";

for (const simd of ["plain", "relaxed"] as const) {
  Deno.test(`matmulQuant for every format against float64 on the same quantized operands (${simd} SIMD)`, async () => {
    const rt = await WasmRuntime.create({ threads: 1, simd });
    const k = rt.kernels;
    for (const type of FORMATS) {
      const fmt = QUANT[type];
      const shapes = fmt.blockElems === 256
        ? [[1, 256, 1], [5, 512, 3], [3, 512, 6]]
        : [[1, 32, 1], [7, 64, 3], [33, 320, 2], [8, 64, 5], [13, 128, 9]];
      for (const [rows, cols, tokens] of shapes) {
        const wq = randomBlocks(type, rows * cols / fmt.blockElems, rows + cols);
        const x = randn(rng(rows * cols), tokens * cols, 2);
        const blocks = tokens * cols / 32;
        const wPtr = rt.alloc(wq.length),
          xPtr = rt.alloc(x.length * 4),
          qx = rt.alloc(x.length),
          sx = rt.alloc(k.activationScalesBytes(tokens, cols));
        const y = rt.alloc(tokens * rows * 4);
        // Scratch for packing a group of rows: prompt chunks of 4 or more tokens pack them.
        const packed = rt.alloc(k.packedBytes(cols));
        rt.u8(wPtr, wq.length).set(wq);
        if (type === "q8_0" && rows * cols >= 2048) {
          // Random bytes: these blocks hold weights of −128, which the kernels take as they are.
          ok(wq.some((v, i) => i % fmt.blockBytes >= 2 && v === 0x80), "a Q8_0 weight of −128");
        }
        rt.f32(xPtr, x.length).set(x);
        k.quantizeRowsQ8(xPtr, tokens, cols, qx, sx);
        const xq = new Int8Array(rt.memory.buffer.slice(qx, qx + x.length));
        const xs = rt.f32(sx, blocks).slice();
        const sums = rt.i32(sx + blocks * 4, blocks).slice();
        const halfSums = rt.i32(sx + blocks * 8, 2 * blocks).slice();
        // The activation quantizer: d = max|x|/127, each value within half a step, sums exact.
        for (let b = 0; b < blocks; b++) {
          const amax = Math.max(...x.subarray(b * 32, b * 32 + 32).map(Math.abs));
          ok(Math.abs(xs[b] - amax / 127) <= amax / 127 * 2 * U32);
          let sum = 0, firstHalf = 0;
          for (let i = b * 32; i < b * 32 + 32; i++) {
            ok(Math.abs(xq[i] * xs[b] - x[i]) <= xs[b] * (0.5 + 1e-6));
            sum += xq[i];
            if (i < b * 32 + 16) firstHalf += xq[i];
          }
          deepStrictEqual(sums[b], sum);
          deepStrictEqual([halfSums[2 * b], halfSums[2 * b + 1]], [firstHalf, sum - firstHalf]);
        }
        const { w, magnitude } = ggmlDecode(type, wq, rows * cols);
        const want = new Float64Array(tokens * rows), tol = new Float64Array(tokens * rows);
        for (let t = 0; t < tokens; t++) {
          for (let row = 0; row < rows; row++) {
            let s = 0, a = 0;
            for (let c = 0; c < cols; c++) {
              const xv = xq[t * cols + c] * xs[t * cols / 32 + (c >> 5)];
              s += w[row * cols + c] * xv;
              a += magnitude[row * cols + c] * Math.abs(xv);
            }
            want[t * rows + row] = s;
            // The integer sums are exact; per 16 or 32 weights the kernel rounds a product of up
            // to three scales (3u) and one multiply-add (1u), and the lane and minimum sums add a
            // rounding per term: (cols/16 + 8) u · Σ|terms| bounds it.
            tol[t * rows + row] = (cols / 16 + 8) * U32 * a + 1e-30;
          }
        }
        const what = `${type} ${rows}x${cols}x${tokens}`;
        k.matmulQuant(fmt.kernelFormat, wPtr, qx, sx, y, rows, cols, tokens, 0, rows, 0, packed);
        const inOrder = rt.f32(y, tokens * rows).slice();
        assertWithin(inOrder, want, tol, what);
        // Each token alone (as decode runs, never packed) gives the same bits as in the batch
        // (token pairs, or packed groups of rows).
        for (let t = 0; t < tokens; t++) {
          const qx1 = rt.alloc(cols),
            sx1 = rt.alloc(k.activationScalesBytes(1, cols)),
            y1 = rt.alloc(rows * 4);
          k.quantizeRowsQ8(xPtr + t * cols * 4, 1, cols, qx1, sx1);
          k.matmulQuant(fmt.kernelFormat, wPtr, qx1, sx1, y1, rows, cols, 1, 0, rows, 0, 0);
          const alone = rt.f32(y1, rows);
          if (alone.some((v, r) => !Object.is(v, inOrder[t * rows + r]))) {
            throw new Error(`${what}: token ${t} alone differs from the batch`);
          }
          for (const p of [qx1, sx1, y1]) rt.free(p);
        }
        if (fmt.blockElems === 32) {
          // The interleaved layout (interleaveBlockRows) gives the same bits, whole or split at
          // a multiple of four as threads split it; split inside a group of four (rows then go
          // one by one), it stays within the bound.
          const scratch = rt.alloc(4 * wq.length / rows);
          k.interleaveBlockRows(fmt.kernelFormat, wPtr, rows, cols, scratch);
          rt.free(scratch);
          for (const cut of [rows, 4, 2].filter((c) => c <= rows)) {
            rt.f32(y, tokens * rows).fill(NaN);
            k.matmulQuant(fmt.kernelFormat, wPtr, qx, sx, y, rows, cols, tokens, 0, cut, 1, packed);
            k.matmulQuant(fmt.kernelFormat, wPtr, qx, sx, y, rows, cols, tokens, cut, rows, 1, 0);
            const got = rt.f32(y, tokens * rows);
            if (cut % 4 === 0 && got.some((v, i) => !Object.is(v, inOrder[i]))) {
              throw new Error(`${what}: interleaved, split at ${cut}, changed bits`);
            }
            assertWithin(got, want, tol, `${what} interleaved, split at ${cut}`);
          }
        }
        for (const p of [wPtr, xPtr, qx, sx, y, packed]) rt.free(p);
      }
    }
  });
}

// The layout against its definition (asm/kernels/matmul_quant.ts): in each whole group of four rows, block b
// takes the 4 block sizes from the group's start + 4b · block bytes: the four rows' 2-byte scales,
// then the rest of each row's block (its quants), rows in order; rows after the last group stay.
function blockGroups(bytes: Uint8Array, rows: number, rowBytes: number, blockBytes: number) {
  const out = bytes.slice();
  for (let g = 0; g + 4 <= rows; g += 4) {
    for (let b = 0; b < rowBytes / blockBytes; b++) {
      const at = g * rowBytes + 4 * b * blockBytes;
      for (let i = 0; i < 4; i++) {
        const from = (g + i) * rowBytes + b * blockBytes;
        out.set(bytes.subarray(from, from + 2), at + 2 * i);
        out.set(bytes.subarray(from + 2, from + blockBytes), at + 8 + i * (blockBytes - 2));
      }
    }
  }
  return out;
}

// In every Q5_0 block, the fifth bit of weight j = 16h + 4a + b moves from bit j of qh (bytes
// 2–5 of a block in ggml's layout, little-endian) to byte b, bit a + 4h.
function q5EngineOrder(blocks: Uint8Array): Uint8Array {
  const out = blocks.slice();
  const v = new DataView(blocks.buffer, blocks.byteOffset), o = new DataView(out.buffer);
  for (let at = 0; at < blocks.length; at += 22) {
    const qh = v.getUint32(at + 2, true);
    let moved = 0;
    for (let j = 0; j < 32; j++) {
      const h = j >> 4, a = (j >> 2) & 3, b = j & 3;
      if ((qh >>> j) & 1) moved |= 1 << (8 * b + a + 4 * h);
    }
    o.setUint32(at + 2, moved >>> 0, true);
  }
  return out;
}

Deno.test("interleaveBlockRows lays out groups of four rows block by block", () => {
  const rt = kernelRt;
  for (const type of ["q8_0", "q4_0", "q5_0"] as const) {
    const fmt = QUANT[type];
    for (const [rows, cols] of [[9, 64], [4, 32], [3, 96]]) {
      const rowBytes = cols / 32 * fmt.blockBytes;
      const bytes = randomBlocks(type, rows * cols / 32, rows);
      const p = rt.alloc(bytes.length), scratch = rt.alloc(4 * rowBytes);
      rt.u8(p, bytes.length).set(bytes);
      rt.kernels.interleaveBlockRows(fmt.kernelFormat, p, rows, cols, scratch);
      const want = blockGroups(
        type === "q5_0" ? q5EngineOrder(bytes) : bytes,
        rows,
        rowBytes,
        fmt.blockBytes,
      );
      deepStrictEqual(rt.u8(p, bytes.length), want, `${type} ${rows}x${cols}`);
      rt.free(p);
      rt.free(scratch);
    }
  }
});

Deno.test("embedQuant gathers decoded rows of every format, in either layout", () => {
  const rt = kernelRt;
  for (const type of FORMATS) {
    const fmt = QUANT[type];
    const hidden = fmt.blockElems === 256 ? 512 : 64;
    // 5 rows: one interleaved group of four and one row in order after it.
    const q = randomBlocks(type, 5 * hidden / fmt.blockElems, 4);
    const { w } = ggmlDecode(type, q, 5 * hidden);
    const ids = [3, 0, 4];
    const table = rt.alloc(q.length), idsPtr = rt.alloc(4 * ids.length);
    const out = rt.alloc(ids.length * hidden * 4);
    rt.u8(table, q.length).set(q);
    rt.i32(idsPtr, ids.length).set(ids);
    const want = ids.flatMap((id) => [...w.subarray(id * hidden, (id + 1) * hidden)]).map((x) =>
      x * 8
    );
    for (const interleaved of fmt.blockElems === 32 ? [0, 1] : [0]) {
      if (interleaved) {
        const scratch = rt.alloc(q.length);
        rt.kernels.interleaveBlockRows(fmt.kernelFormat, table, 5, hidden, scratch);
        rt.free(scratch);
      }
      rt.kernels.embedQuant(
        fmt.kernelFormat,
        table,
        5,
        idsPtr,
        ids.length,
        hidden,
        8,
        out,
        interleaved,
      );
      // One rounding of the decoded value (×8 is exact) and, for Q4_K, of the subtraction.
      assertWithin(
        rt.f32(out, ids.length * hidden),
        want,
        want.map((x) => 2 * U32 * Math.abs(x) + 1e-30),
        `${type} interleaved ${interleaved}`,
      );
    }
    for (const p of [table, idsPtr, out]) rt.free(p);
  }
});
