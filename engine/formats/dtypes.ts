// Weight formats: one place that knows how many bytes an element takes and how to widen it.

/** The block-quantized formats this engine holds in memory and multiplies directly (their
 * layouts: quant.ts). */
export type QuantType = "q8_0" | "q4_0" | "q5_0" | "q4_k" | "q6_k";

/** Element types the engine can hold in memory: f32, and for weight matrices bf16 (widened in the
 * kernels) and the block-quantized formats of quant.ts (multiplied block by block). */
export type DType = "f32" | "bf16" | QuantType;

/** Element types a checkpoint may store; f16 is widened to f32 on load. */
export type StoredDType = DType | "f16";

/** Float element types and their bytes per element. */
export type FloatDType = "f32" | "bf16" | "f16";
export const floatBytes: Record<FloatDType, number> = { f32: 4, bf16: 2, f16: 2 };

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

/** The number one IEEE half bit pattern stands for. */
export function halfToNumber(bits: number): number {
  const out = new Float32Array(1);
  f16ToF32(new Uint16Array([bits]), out);
  return out[0];
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
