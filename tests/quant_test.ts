// Block formats (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K) in engine/formats/quant.ts: the engine's decoders
// against decoders written from ggml's reference loops, the quantizers' semantics and error, and
// models quantized on load bit-identical across threads. The kernels that multiply these blocks
// are tested in tests/kernels/matmul_quant_test.ts.

import { deepStrictEqual, ok } from "node:assert/strict";
import { f32ToF16, halfToNumber } from "../engine/formats/dtypes.ts";
import { QUANT } from "../engine/formats/quant.ts";
import { loadModel } from "../mod.ts";
import { ggmlDecode } from "./support/ggml_blocks.ts";
import { FORMATS, randomBlocks } from "./support/random_blocks.ts";
import { FIXTURES, randn, rng } from "./support/helpers.ts";
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
