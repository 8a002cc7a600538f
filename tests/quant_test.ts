// Q8_0: the quantizer against ggml's block semantics, the kernels against a float64 reference on
// the same quantized operands, and a Q8_0 model's threads bit-identical.

import { deepStrictEqual, ok } from "node:assert/strict";
import { dequantizeQ8_0, f16ToF32, f32ToF16, quantizeQ8_0 } from "../engine/dtypes.ts";
import { WasmRuntime } from "../engine/runtime.ts";
import { loadModel } from "../mod.ts";
import { assertWithin, FIXTURES, randn, rng, U32 } from "./support/helpers.ts";

/** The f32 value of half bits. */
const fromHalf = (bits: number) => {
  const out = new Float32Array(1);
  f16ToF32(new Uint16Array([bits]), out);
  return out[0];
};
const half = (v: number) => fromHalf(f32ToF16(v));

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

Deno.test("quantizeQ8_0 follows ggml: d = max|x|/127 as f16, q = roundf(x/d), ties away from zero", () => {
  // A block whose max is 127, so d = 1 and the rounding of halves is visible.
  const x = new Float32Array(32).fill(0);
  x.set([127, 2.5, -2.5, 0.49, -0.5, 1.5, -127]);
  const q = new Uint8Array(34);
  quantizeQ8_0(x, q);
  deepStrictEqual(new DataView(q.buffer).getUint16(0, true), 0x3c00);
  deepStrictEqual([...new Int8Array(q.buffer, 2, 7)], [127, 3, -3, 0, -1, 2, -127]);
  // Random blocks: every value within half a step of its original (plus the f16 rounding of d).
  const v = randn(rng(2), 32 * 64, 0.1);
  const blocks = new Uint8Array(34 * 64);
  quantizeQ8_0(v, blocks);
  const back = new Float32Array(v.length);
  dequantizeQ8_0(blocks, back);
  for (let b = 0; b < 64; b++) {
    const amax = Math.max(...v.subarray(b * 32, b * 32 + 32).map(Math.abs));
    const d = amax / 127;
    for (let i = b * 32; i < b * 32 + 32; i++) {
      ok(Math.abs(back[i] - v[i]) <= d / 2 + 127 * d * 2 ** -11 + 1e-12, `element ${i}`);
    }
  }
});

Deno.test("quantizeRowsQ8 and matmulQ8_0 against float64 on the same quantized operands", () => {
  const rt = WasmRuntimeSync;
  const k = rt.kernels;
  for (const [rows, cols, tokens] of [[1, 32, 1], [7, 64, 3], [33, 320, 2]]) {
    const r = rng(rows + cols);
    const w = randn(r, rows * cols, 0.2), x = randn(r, tokens * cols, 2);
    const wq = new Uint8Array(rows * cols / 32 * 34);
    quantizeQ8_0(w, wq);
    const wPtr = rt.alloc(wq.length), xPtr = rt.alloc(x.length * 4), qx = rt.alloc(x.length), sx = rt.alloc(x.length / 8), y = rt.alloc(tokens * rows * 4);
    rt.u8(wPtr, wq.length).set(wq);
    rt.f32(xPtr, x.length).set(x);
    k.quantizeRowsQ8(xPtr, tokens, cols, qx, sx);
    const xq = new Int8Array(rt.memory.buffer.slice(qx, qx + x.length));
    const xs = rt.f32(sx, x.length / 32).slice();
    // The activation quantizer: |q| ≤ 127, d = max|x|/127, each value within half a step.
    for (let b = 0; b < x.length / 32; b++) {
      const amax = Math.max(...x.subarray(b * 32, b * 32 + 32).map(Math.abs));
      ok(Math.abs(xs[b] - amax / 127) <= amax / 127 * 2 * U32);
      for (let i = b * 32; i < b * 32 + 32; i++) ok(Math.abs(xq[i] * xs[b] - x[i]) <= xs[b] * (0.5 + 1e-6));
    }
    k.matmulQ8_0(wPtr, qx, sx, y, rows, cols, tokens, 0, rows);
    const wd = new DataView(wq.buffer);
    const want = new Float64Array(tokens * rows), tol = new Float64Array(tokens * rows);
    for (let t = 0; t < tokens; t++) {
      for (let row = 0; row < rows; row++) {
        let s = 0, a = 0;
        for (let b = 0; b < cols / 32; b++) {
          const off = (row * cols / 32 + b) * 34;
          const dw = fromHalf(wd.getUint16(off, true));
          let isum = 0;
          for (let i = 0; i < 32; i++) isum += wd.getInt8(off + 2 + i) * xq[t * cols + b * 32 + i];
          const term = isum * dw * xs[t * cols / 32 + b];
          s += term;
          a += Math.abs(term);
        }
        want[t * rows + row] = s;
        // Per block one rounding of the scale product and one of the scaled sum, then the sum
        // over blocks: (blocks + 3) u · Σ|terms|.
        tol[t * rows + row] = (cols / 32 + 3) * U32 * a + 1e-30;
      }
    }
    assertWithin(rt.f32(y, tokens * rows), want, tol, `${rows}x${cols}x${tokens}`);
  }
});

Deno.test("embedQ8_0 gathers dequantized rows", () => {
  const rt = WasmRuntimeSync;
  const v = randn(rng(4), 5 * 64, 0.3);
  const q = new Uint8Array(5 * 2 * 34);
  quantizeQ8_0(v, q);
  const deq = new Float32Array(v.length);
  dequantizeQ8_0(q, deq);
  const table = rt.alloc(q.length), ids = rt.alloc(8), out = rt.alloc(2 * 64 * 4);
  rt.u8(table, q.length).set(q);
  rt.i32(ids, 2).set([3, 0]);
  rt.kernels.embedQ8_0(table, ids, 2, 64, 8, out);
  const want = [...deq.subarray(3 * 64, 4 * 64), ...deq.subarray(0, 64)].map((x) => x * 8);
  assertWithin(rt.f32(out, 128), want, want.map((x) => 2 * U32 * Math.abs(x)), "rows");
});

Deno.test("a model quantized to Q8_0 on load: half the weight memory, bit-identical across threads", async () => {
  const dir = `${FIXTURES}tiny-a`;
  const plain = await loadModel(dir, { threads: 1 });
  const plainBytes = plain.memoryBytes;
  await plain.dispose();
  const golden = JSON.parse(await Deno.readTextFile(`${dir}/golden.json`));
  const logits: Float32Array[] = [];
  for (const threads of [1, 2, 3]) {
    const m = await loadModel(dir, { threads, weights: "q8_0" });
    ok(m.memoryBytes < plainBytes * 0.75, `${m.memoryBytes} bytes vs ${plainBytes} in bf16`);
    logits.push(await m.createSession({ contextLength: 64 }).eval(golden.prompts[2], { logits: "all" }));
    await m.dispose();
  }
  ok(logits.every((l) => l.every((v, i) => Object.is(v, logits[0][i]))), "thread counts disagree");
});

const WasmRuntimeSync = await WasmRuntime.create({ threads: 1 });
