// Block formats (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K): the engine's decoders against decoders written
// from ggml's reference loops, the quantizers' semantics and error, the kernels against a float64
// reference on the same quantized operands, and quantized models bit-identical across threads.

import { deepStrictEqual, ok } from "node:assert/strict";
import { f32ToF16, halfToNumber } from "../engine/formats/dtypes.ts";
import { QUANT } from "../engine/formats/quant.ts";
import type { QuantType } from "../engine/formats/dtypes.ts";
import { WasmRuntime } from "../engine/backends/wasm/runtime.ts";
import { loadModel } from "../mod.ts";
import { ggmlDecode } from "./support/ggml_blocks.ts";
import { assertWithin, FIXTURES, randn, rng, U32 } from "./support/helpers.ts";
const half = (v: number) => halfToNumber(f32ToF16(v));

Deno.test("f32ToF16 rounds to nearest, ties to even, with subnormals, overflow and NaN", () => {
  deepStrictEqual([1, -2, 65504, 0.5].map(f32ToF16), [0x3c00, 0xc000, 0x7bff, 0x3800]);
  deepStrictEqual(f32ToF16(1 + 2 ** -11), 0x3c00); // a tie, to even
  deepStrictEqual(f32ToF16(1 + 3 * 2 ** -11), 0x3c02); // a tie, to even (up)
  deepStrictEqual(f32ToF16(2 ** -24), 0x0001); // smallest subnormal
  deepStrictEqual(f32ToF16(70000), 0x7c00); // overflow to infinity
  ok((f32ToF16(NaN) & 0x7c00) === 0x7c00 && (f32ToF16(NaN) & 0x3ff) !== 0);
  const r = rng(1);
  for (let i = 0; i < 2000; i++) {
    const v = (r() - 0.5) * 10 ** (Math.floor(r() * 8) - 4);
    const h = half(v);
    ok(Math.abs(h - v) <= Math.abs(v) * 2 ** -11 + 2 ** -25, `${v} → ${h}`);
  }
});

const FORMATS = Object.keys(QUANT) as QuantType[];

/** `blocks` random blocks of a format: random bytes everywhere (every bit of every field is
 * exercised), then each f16 scale replaced by a random moderate half so values stay finite. */
function randomBlocks(type: QuantType, blocks: number, seed: number): Uint8Array {
  const fmt = QUANT[type];
  const r = rng(seed);
  const bytes = Uint8Array.from({ length: blocks * fmt.blockBytes }, () => Math.floor(r() * 256));
  const v = new DataView(bytes.buffer);
  const halves = { q8_0: [0], q4_0: [0], q5_0: [0], q4_k: [0, 2], q6_k: [208] }[type];
  for (let b = 0; b < blocks; b++) {
    for (const at of halves) {
      v.setUint16(b * fmt.blockBytes + at, f32ToF16((r() - 0.3) * 0.01), true);
    }
  }
  return bytes;
}

Deno.test("each format's decoder matches ggml's dequantize loops on random blocks", () => {
  for (const type of FORMATS) {
    const n = 4 * QUANT[type].blockElems;
    const bytes = randomBlocks(type, 4, 11);
    const got = new Float32Array(n);
    QUANT[type].dequantize(bytes, got);
    deepStrictEqual([...got], [...ggmlDecode(type, bytes, n).w], type);
  }
});

Deno.test("Q8_0, Q4_0 and Q5_0 quantize as ggml's quantize_row_* do", () => {
  // Q8_0: d = max|x|/127, q = roundf(x/d), halves away from zero (max 127 so d = 1).
  const x = new Float32Array(32);
  x.set([127, 2.5, -2.5, 0.49, -0.5, 1.5, -127]);
  const q8 = new Uint8Array(34);
  QUANT.q8_0.quantize(x, q8);
  deepStrictEqual(new DataView(q8.buffer).getUint16(0, true), 0x3c00);
  deepStrictEqual([...new Int8Array(q8.buffer, 2, 7)], [127, 3, -3, 0, -1, 2, -127]);
  // Q4_0: the signed extreme maps to q = 0: d = max / -8, q = min(15, trunc(x/d + 8.5)).
  const y = new Float32Array(32);
  y.set([-8, 4, 3.4, -1, 8]); // max = -8 → d = 1; 8 → 16.5 → clamped to 15
  const q4 = new Uint8Array(18);
  QUANT.q4_0.quantize(y, q4);
  deepStrictEqual(new DataView(q4.buffer).getUint16(0, true), 0x3c00);
  deepStrictEqual([...q4.subarray(2, 7)].map((b) => b & 15), [0, 12, 11, 7, 15]);
  deepStrictEqual(q4[2 + 5] & 15, 8); // zeros sit at q = 8
  // Q5_0: d = max / -16, five bits, bit 4 in qh.
  const z = new Float32Array(32);
  z.set([-16, 15, -3]); // max = -16 → d = 1: q = trunc(x + 16.5)
  z[20] = 15.6; // 15.6 + 16.5 → 32, clamped to 31 (bit 4 lands in qh bit 20)
  const q5 = new Uint8Array(22);
  QUANT.q5_0.quantize(z, q5);
  const qh = new DataView(q5.buffer).getUint32(2, true);
  const q5v = (
    j: number,
  ) => ((j < 16 ? q5[6 + j] & 15 : q5[6 + j - 16] >> 4) | (((qh >>> j) & 1) << 4));
  deepStrictEqual([q5v(0), q5v(1), q5v(2), q5v(3), q5v(20)], [0, 31, 13, 16, 31]);
});

Deno.test("quantizing and decoding keeps every format's error within its step", () => {
  const x = randn(rng(2), 256 * 16, 0.1);
  for (const type of FORMATS) {
    const fmt = QUANT[type];
    const bytes = new Uint8Array(x.length / fmt.blockElems * fmt.blockBytes);
    fmt.quantize(x, bytes);
    const back = new Float32Array(x.length);
    fmt.dequantize(bytes, back);
    if (type === "q8_0" || type === "q4_0" || type === "q5_0") {
      // Round to nearest within [−2^(b−1), 2^(b−1)−1] steps: within half a step, except that the
      // opposite extreme of Q4_0/Q5_0 may be clamped (one step); plus the f16 rounding of d.
      const levels = { q8_0: 127, q4_0: 8, q5_0: 16 }[type];
      const slack = type === "q8_0" ? 0.5 : 1;
      for (let b = 0; b < x.length / 32; b++) {
        const d = Math.max(...x.subarray(b * 32, b * 32 + 32).map(Math.abs)) / levels;
        for (let i = b * 32; i < b * 32 + 32; i++) {
          ok(
            Math.abs(back[i] - x[i]) <= d * slack + levels * d * 2 ** -11 + 1e-12,
            `${type} element ${i}`,
          );
        }
      }
    } else {
      // K-quants (our min/max quantizer, 6- or 8-bit scales): uniform rounding error has RMS
      // step/√12. Q4_K: 32 normal values span ≈ 4σ, step ≈ 4σ/15, RMS ≈ 0.077σ; Q6_K: 16 values
      // reach ≈ 2σ, step ≈ 2σ/31, RMS ≈ 0.019σ. Bounds leave room for the scale rounding.
      let se = 0;
      for (let i = 0; i < x.length; i++) se += (back[i] - x[i]) ** 2;
      const rms = Math.sqrt(se / x.length) / 0.1;
      ok(rms < (type === "q4_k" ? 0.11 : 0.03), `${type}: RMS error ${rms.toFixed(4)}σ`);
    }
  }
});

for (const simd of ["plain", "relaxed"] as const) {
  Deno.test(`matmulQuant for every format against float64 on the same quantized operands (${simd} SIMD)`, async () => {
    const rt = await WasmRuntime.create({ threads: 1, simd });
    const k = rt.kernels;
    for (const type of FORMATS) {
      const fmt = QUANT[type];
      const shapes = fmt.blockElems === 256
        ? [[1, 256, 1], [5, 512, 3]]
        : [[1, 32, 1], [7, 64, 3], [33, 320, 2], [8, 64, 5]];
      for (const [rows, cols, tokens] of shapes) {
        const wq = randomBlocks(type, rows * cols / fmt.blockElems, rows + cols);
        const x = randn(rng(rows * cols), tokens * cols, 2);
        const blocks = tokens * cols / 32;
        const wPtr = rt.alloc(wq.length),
          xPtr = rt.alloc(x.length * 4),
          qx = rt.alloc(x.length),
          sx = rt.alloc(blocks * 8);
        const y = rt.alloc(tokens * rows * 4);
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
        // The activation quantizer: d = max|x|/127, each value within half a step, sums exact.
        for (let b = 0; b < blocks; b++) {
          const amax = Math.max(...x.subarray(b * 32, b * 32 + 32).map(Math.abs));
          ok(Math.abs(xs[b] - amax / 127) <= amax / 127 * 2 * U32);
          let sum = 0;
          for (let i = b * 32; i < b * 32 + 32; i++) {
            ok(Math.abs(xq[i] * xs[b] - x[i]) <= xs[b] * (0.5 + 1e-6));
            sum += xq[i];
          }
          deepStrictEqual(sums[b], sum);
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
        k.matmulQuant(fmt.kernelFormat, wPtr, qx, sx, y, rows, cols, tokens, 0, rows, 0);
        const inOrder = rt.f32(y, tokens * rows).slice();
        assertWithin(inOrder, want, tol, what);
        // Each token alone (as decode runs) gives the same bits as in the batch (token pairs).
        for (let t = 0; t < tokens; t++) {
          const qx1 = rt.alloc(cols), sx1 = rt.alloc(cols / 32 * 8), y1 = rt.alloc(rows * 4);
          k.quantizeRowsQ8(xPtr + t * cols * 4, 1, cols, qx1, sx1);
          k.matmulQuant(fmt.kernelFormat, wPtr, qx1, sx1, y1, rows, cols, 1, 0, rows, 0);
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
            k.matmulQuant(fmt.kernelFormat, wPtr, qx, sx, y, rows, cols, tokens, 0, cut, 1);
            k.matmulQuant(fmt.kernelFormat, wPtr, qx, sx, y, rows, cols, tokens, cut, rows, 1);
            const got = rt.f32(y, tokens * rows);
            if (cut % 4 === 0 && got.some((v, i) => !Object.is(v, inOrder[i]))) {
              throw new Error(`${what}: interleaved, split at ${cut}, changed bits`);
            }
            assertWithin(got, want, tol, `${what} interleaved, split at ${cut}`);
          }
        }
        for (const p of [wPtr, xPtr, qx, sx, y]) rt.free(p);
      }
    }
  });
}

// The layout against its definition (asm/kernels.ts): in each whole group of four rows, block b
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
  const rt = WasmRuntimeSync;
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
  const rt = WasmRuntimeSync;
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

for (const [weights, share] of [["q8_0", 0.75], ["q4_0", 0.6]] as const) {
  Deno.test(`a model quantized to ${weights} on load: less weight memory, bit-identical across threads`, async () => {
    const dir = `${FIXTURES}tiny-a`;
    const plain = await loadModel(dir, { threads: 1 });
    const plainBytes = plain.memoryBytes;
    await plain.dispose();
    const golden = JSON.parse(await Deno.readTextFile(`${dir}/golden.json`));
    const logits: Float32Array[] = [];
    for (const threads of [1, 2, 3]) {
      const m = await loadModel(dir, { threads, weights });
      ok(m.memoryBytes < plainBytes * share, `${m.memoryBytes} bytes vs ${plainBytes} in bf16`);
      logits.push(
        await m.createSession({ contextLength: 64 }).eval(golden.prompts[2], { logits: "all" }),
      );
      await m.dispose();
    }
    ok(
      logits.every((l) => l.every((v, i) => Object.is(v, logits[0][i]))),
      "thread counts disagree",
    );
  });
}

const WasmRuntimeSync = await WasmRuntime.create({ threads: 1 });
