// Test-side decoders of ggml's block formats, written from the loop structure of ggml's
// dequantize_row_* reference functions (ggml-quants.c) rather than from engine/formats/quant.ts, so
// that a layout mistake in the engine does not repeat itself here. Each returns, per weight, the
// part scaled by the block scale and the offset part (w = scaled − offset), in float64 of f32
// values.

import { halfToNumber } from "../../engine/formats/dtypes.ts";

const half = (v: DataView, at: number) => halfToNumber(v.getUint16(at, true));
const f = Math.fround;

export interface Decoded {
  /** The weights, as the f32 values ggml's dequantizer produces. */
  w: Float64Array;
  /** |scaled part| + |offset part| per weight (the magnitudes a kernel's sums are made of). */
  magnitude: Float64Array;
}

export function ggmlDecode(type: string, bytes: Uint8Array, n: number): Decoded {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const w = new Float64Array(n), magnitude = new Float64Array(n);
  const put = (i: number, scaled: number, offset: number) => {
    w[i] = f(scaled - offset);
    magnitude[i] = Math.abs(scaled) + Math.abs(offset);
  };
  if (type === "q8_0") {
    for (let i = 0; i < n / 32; i++) {
      const d = half(v, i * 34);
      for (let j = 0; j < 32; j++) put(i * 32 + j, f(v.getInt8(i * 34 + 2 + j) * d), 0);
    }
  } else if (type === "q4_0") {
    // for j < qk/2: x0 = (qs[j] & 0x0F) - 8; x1 = (qs[j] >> 4) - 8; y[j] = x0*d; y[j+qk/2] = x1*d
    for (let i = 0; i < n / 32; i++) {
      const d = half(v, i * 18);
      for (let j = 0; j < 16; j++) {
        const b = v.getUint8(i * 18 + 2 + j);
        put(i * 32 + j, f(((b & 0x0f) - 8) * d), 0);
        put(i * 32 + j + 16, f(((b >> 4) - 8) * d), 0);
      }
    }
  } else if (type === "q5_0") {
    // qh = u32; xh_0 = ((qh >> (j + 0)) << 4) & 0x10; xh_1 = ((qh >> (j + 12))) & 0x10;
    // x0 = ((qs[j] & 0x0F) | xh_0) - 16; x1 = ((qs[j] >> 4) | xh_1) - 16
    for (let i = 0; i < n / 32; i++) {
      const d = half(v, i * 22);
      const qh = v.getUint32(i * 22 + 2, true);
      for (let j = 0; j < 16; j++) {
        const b = v.getUint8(i * 22 + 6 + j);
        const xh0 = ((qh >>> j) << 4) & 0x10, xh1 = (qh >>> (j + 12)) & 0x10;
        put(i * 32 + j, f((((b & 0x0f) | xh0) - 16) * d), 0);
        put(i * 32 + j + 16, f((((b >> 4) | xh1) - 16) * d), 0);
      }
    }
  } else if (type === "q4_k") {
    // for (j = 0; j < QK_K; j += 64): get_scale_min_k4(is+0, ...) → d1 = d*sc, m1 = min*m; then
    // is+1 → d2, m2; y[l] = d1 * (q[l] & 0xF) - m1 (l < 32); y[32+l] = d2 * (q[l] >> 4) - m2;
    // q += 32; is += 2
    const scaleMin = (j: number, q: (k: number) => number): [number, number] =>
      j < 4
        ? [q(j) & 63, q(j + 4) & 63]
        : [(q(j + 4) & 0xf) | ((q(j - 4) >> 6) << 4), (q(j + 4) >> 4) | ((q(j - 0) >> 6) << 4)];
    for (let i = 0; i < n / 256; i++) {
      const at = i * 144;
      const d = half(v, at), min = half(v, at + 2);
      const sc = (k: number) => v.getUint8(at + 4 + k);
      let y = i * 256, q = at + 16, is = 0;
      for (let j = 0; j < 256; j += 64) {
        const [s1, m1] = scaleMin(is, sc), [s2, m2] = scaleMin(is + 1, sc);
        const d1 = f(d * s1), mm1 = f(min * m1), d2 = f(d * s2), mm2 = f(min * m2);
        for (let l = 0; l < 32; l++) put(y + l, f(d1 * (v.getUint8(q + l) & 0xf)), mm1);
        for (let l = 0; l < 32; l++) put(y + 32 + l, f(d2 * (v.getUint8(q + l) >> 4)), mm2);
        y += 64;
        q += 32;
        is += 2;
      }
    }
  } else if (type === "q6_k") {
    // for (n = 0; n < QK_K; n += 128) for l < 32: is = l/16;
    //   q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32  → y[l]      · d·sc[is+0]
    //   q2 = ((ql[l+32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32 → y[l+32] · d·sc[is+2]
    //   q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32   → y[l+64]  · d·sc[is+4]
    //   q4 = ((ql[l+32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32 → y[l+96] · d·sc[is+6]
    //   then y += 128; ql += 64; qh += 32; sc += 8
    for (let i = 0; i < n / 256; i++) {
      const at = i * 210;
      const d = half(v, at + 208);
      let y = i * 256, ql = at, qh = at + 128, sc = at + 192;
      for (let nn = 0; nn < 256; nn += 128) {
        for (let l = 0; l < 32; l++) {
          const is = l >> 4;
          const h = v.getUint8(qh + l), a = v.getUint8(ql + l), b = v.getUint8(ql + l + 32);
          const q1 = ((a & 0xf) | ((h & 3) << 4)) - 32;
          const q2 = ((b & 0xf) | (((h >> 2) & 3) << 4)) - 32;
          const q3 = ((a >> 4) | (((h >> 4) & 3) << 4)) - 32;
          const q4 = ((b >> 4) | (((h >> 6) & 3) << 4)) - 32;
          put(y + l, f(f(d * v.getInt8(sc + is)) * q1), 0);
          put(y + l + 32, f(f(d * v.getInt8(sc + is + 2)) * q2), 0);
          put(y + l + 64, f(f(d * v.getInt8(sc + is + 4)) * q3), 0);
          put(y + l + 96, f(f(d * v.getInt8(sc + is + 6)) * q4), 0);
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
      }
    }
  } else throw new Error(`no decoder for ${type}`);
  return { w, magnitude };
}
