// Weight formats: one place that knows how many bytes an element takes and how to widen it.

/** Element types the engine can hold in memory: f32, and bf16 and q8_0 (weights only; kernels
 * widen bf16 and multiply q8_0 blocks directly). */
export type DType = "f32" | "bf16" | "q8_0";

/** Element types a checkpoint may store; f16 is widened to f32 on load. */
export type StoredDType = DType | "f16";

/** Element types a checkpoint may store; f16 is widened to f32 on load. */
export type StoredOrQuantized = StoredDType | "q8_0";

/** Bytes per element (q8_0: 34 bytes per block of 32). */
export const dtypeBytes: Record<StoredOrQuantized, number> = { f32: 4, bf16: 2, f16: 2, q8_0: 34 / 32 };

/** Q8_0 (ggml): blocks of 32 weights, an f16 scale d then 32 int8 q, weight = d · q. */
export const Q8_0 = { blockElems: 32, blockBytes: 34 };

/** Rounds f32 values to IEEE half bit patterns, to nearest, ties to even. */
export function f32ToF16(v: number): number {
  const f = new Float32Array([v]);
  const b = new Uint32Array(f.buffer)[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = (mant >>> shift) & 0xffff;
    const rest = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && (half & 1)) ? 1 : 0));
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return sign | h;
}

/**
 * Quantizes rows of f32 values (a multiple of 32 long) to Q8_0 blocks exactly as ggml's
 * quantize_row_q8_0 does: d = max|x| / 127 in f32, q = roundf(x · (1/d)) (half away from zero),
 * d stored as f16.
 */
export function quantizeQ8_0(src: Float32Array, dst: Uint8Array): void {
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  const blocks = src.length / 32;
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(src[b * 32 + i]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, f32ToF16(d), true);
    for (let i = 0; i < 32; i++) {
      const v = Math.fround(src[b * 32 + i] * id);
      view.setInt8(b * 34 + 2 + i, Math.sign(v) * Math.floor(Math.abs(v) + 0.5));
    }
  }
}

/** Q8_0 blocks back to f32 values (d · q, as ggml's dequantize_row_q8_0). */
export function dequantizeQ8_0(src: Uint8Array, dst: Float32Array): void {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const half = new Float32Array(1);
  const h = new Uint16Array(1);
  for (let b = 0; b < dst.length / 32; b++) {
    h[0] = view.getUint16(b * 34, true);
    f16ToF32(h, half);
    for (let i = 0; i < 32; i++) dst[b * 32 + i] = Math.fround(half[0] * view.getInt8(b * 34 + 2 + i));
  }
}

/** Widens bf16 bit patterns to f32 (exact: bf16 is the top half of an f32). */
export function bf16ToF32(src: Uint16Array, dst: Float32Array): void {
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
}

/** Rounds f32 values to bf16 bit patterns, to nearest, ties to even (NaN stays NaN). */
export function f32ToBF16(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i];
    if ((b & 0x7fffffff) > 0x7f800000) dst[i] = (b >>> 16) | 0x40;
    else dst[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
}

/** Widens IEEE half-precision bit patterns to f32 (exact, including subnormals, inf and NaN). */
export function f16ToF32(src: Uint16Array, dst: Float32Array): void {
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) dst[i] = sign * frac * 2 ** -24;
    else if (exp === 31) dst[i] = frac ? NaN : sign * Infinity;
    else dst[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
}
