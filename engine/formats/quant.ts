// Block-quantized weight formats (ggml's layouts), in plain TypeScript: how each block is laid out,
// how to make blocks from f32 values and how to get the values back. The WASM kernels
// (asm/kernels/matmul_quant.ts) compute on the same bytes; these functions are what the loader, the
// GGUF writer and the tests use.
//
// Every format stores rows as a run of blocks; a block covers 32 or 256 consecutive weights of
// one row. Scales are IEEE halves (f16). The layouts, byte by byte:
//   Q8_0  (34 B / 32):  d · q,             q int8             [d][q0 … q31]
//   Q4_0  (18 B / 32):  d · (q − 8),       q 4-bit            [d][qs: byte j = q_j | q_{j+16} << 4]
//   Q5_0  (22 B / 32):  d · (q − 16),      q 5-bit            [d][qh: u32, bit j = bit 4 of q_j][qs as Q4_0]
//   Q4_K (144 B / 256): 8 sub-blocks of 32, weight = d·sc_s·q − dmin·m_s, sc and m 6-bit, q 4-bit
//                       [d][dmin][scales: 12 bytes packing sc_0..7, m_0..7][qs: 128 bytes]
//   Q6_K (210 B / 256): 16 sub-blocks of 16, weight = d·sc_s·(q − 32), sc int8, q 6-bit
//                       [ql: 128 bytes, low 4 bits][qh: 64 bytes, high 2 bits][sc: 16 × int8][d]
// The bit placement inside qs/ql/qh is spelled out where it is packed, below.

import { type DType, f32ToF16, halfToNumber, type QuantType } from "./dtypes.ts";
import { GGML_TYPES } from "./gguf.ts";

/** One block format. */
export interface BlockFormat {
  name: QuantType;
  /** ggml type number (see GGML_TYPES). */
  ggmlType: number;
  /** Weights per block. */
  blockElems: number;
  /** Bytes per block. */
  blockBytes: number;
  /** Number the WASM kernels use for this format (asm/kernels/matmul_quant.ts, FMT_*). */
  kernelFormat: number;
  /** f32 values (a multiple of blockElems) → blocks. */
  quantize(src: Float32Array, dst: Uint8Array): void;
  /** Blocks → f32 values, exactly as ggml's dequantize_row_*. */
  dequantize(src: Uint8Array, dst: Float32Array): void;
}

const half = (view: DataView, at: number) => halfToNumber(view.getUint16(at, true));
const f32 = Math.fround;
/** C's roundf: to nearest, halves away from zero. */
const roundAway = (v: number) => Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
const views = (a: Uint8Array) => new DataView(a.buffer, a.byteOffset, a.byteLength);

// ---- Q8_0 -------------------------------------------------------------------------------------

/** As ggml's quantize_row_q8_0: d = max|x| / 127 in f32, q = roundf(x · (1/d)), d stored as f16. */
function quantizeQ8_0(src: Float32Array, dst: Uint8Array): void {
  const view = views(dst);
  for (let b = 0; b < src.length / 32; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(src[b * 32 + i]));
    const d = f32(amax / 127);
    const id = d ? f32(1 / d) : 0;
    view.setUint16(b * 34, f32ToF16(d), true);
    for (let i = 0; i < 32; i++) view.setInt8(b * 34 + 2 + i, roundAway(f32(src[b * 32 + i] * id)));
  }
}

function dequantizeQ8_0(src: Uint8Array, dst: Float32Array): void {
  const view = views(src);
  for (let b = 0; b < dst.length / 32; b++) {
    const d = half(view, b * 34);
    for (let i = 0; i < 32; i++) dst[b * 32 + i] = f32(d * view.getInt8(b * 34 + 2 + i));
  }
}

// ---- Q4_0 and Q5_0 ----------------------------------------------------------------------------

/** The value of largest magnitude, with its sign (ggml keeps the first on ties). */
function signedMax(src: Float32Array, from: number, n: number): number {
  let amax = 0, max = 0;
  for (let i = from; i < from + n; i++) {
    if (Math.abs(src[i]) > amax) [amax, max] = [Math.abs(src[i]), src[i]];
  }
  return max;
}

/** As ggml's quantize_row_q4_0 / q5_0: d = max / −2^(bits−1) (the extreme value maps to q = 0
 * exactly), q = min(2^bits − 1, trunc(x/d + 2^(bits−1) + 0.5)). */
function quantizeLowBit(src: Float32Array, dst: Uint8Array, bits: 4 | 5): void {
  const view = views(dst);
  const bytes = bits === 4 ? 18 : 22, offset = 1 << (bits - 1), top = (1 << bits) - 1;
  for (let b = 0; b < src.length / 32; b++) {
    const d = f32(signedMax(src, b * 32, 32) / -offset);
    const id = d ? f32(1 / d) : 0;
    const at = b * bytes;
    view.setUint16(at, f32ToF16(d), true);
    const qsAt = at + (bits === 4 ? 2 : 6);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(top, Math.trunc(f32(f32(src[b * 32 + j] * id) + offset + 0.5)));
      const q1 = Math.min(top, Math.trunc(f32(f32(src[b * 32 + 16 + j] * id) + offset + 0.5)));
      view.setUint8(qsAt + j, (q0 & 15) | ((q1 & 15) << 4));
      qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
    }
    if (bits === 5) view.setUint32(at + 2, qh >>> 0, true);
  }
}

function dequantizeLowBit(src: Uint8Array, dst: Float32Array, bits: 4 | 5): void {
  const view = views(src);
  const bytes = bits === 4 ? 18 : 22, offset = 1 << (bits - 1);
  for (let b = 0; b < dst.length / 32; b++) {
    const at = b * bytes;
    const d = half(view, at);
    const qh = bits === 5 ? view.getUint32(at + 2, true) : 0;
    const qsAt = at + (bits === 4 ? 2 : 6);
    for (let j = 0; j < 16; j++) {
      const byte = view.getUint8(qsAt + j);
      const q0 = (byte & 15) | (((qh >>> j) & 1) << 4);
      const q1 = (byte >> 4) | (((qh >>> (j + 16)) & 1) << 4);
      dst[b * 32 + j] = f32(d * (q0 - offset));
      dst[b * 32 + 16 + j] = f32(d * (q1 - offset));
    }
  }
}

// ---- Q4_K -------------------------------------------------------------------------------------
// Our quantizer is a plain min/max one (ggml's searches for better scales; any valid blocks load
// the same way in every engine, which is what the comparisons with llama.cpp rely on).

/** Scale and min of sub-block j (0..7) from the 12 packed bytes at `at` (ggml's get_scale_min_k4):
 * bytes 0–3 hold sc_0..3 in their low 6 bits, bytes 4–7 m_0..3; sc_4..7 and m_4..7 keep their low
 * 4 bits in bytes 8–11 (sc low nibble, m high nibble) and their top 2 bits in the spare top bits
 * of bytes 0–3 (sc) and 4–7 (m). */
export function q4kScaleMin(view: DataView, at: number, j: number): [number, number] {
  const u = (i: number) => view.getUint8(at + i);
  if (j < 4) return [u(j) & 63, u(j + 4) & 63];
  return [(u(j + 4) & 15) | ((u(j - 4) >> 6) << 4), (u(j + 4) >> 4) | ((u(j) >> 6) << 4)];
}

function quantizeQ4_K(src: Float32Array, dst: Uint8Array): void {
  const view = views(dst);
  for (let b = 0; b < src.length / 256; b++) {
    const x = src.subarray(b * 256, b * 256 + 256);
    const scales: number[] = [], mins: number[] = [];
    for (let s = 0; s < 8; s++) {
      let lo = 0, hi = 0;
      for (let i = 0; i < 32; i++) {
        lo = Math.min(lo, x[s * 32 + i]), hi = Math.max(hi, x[s * 32 + i]);
      }
      scales.push((hi - lo) / 15);
      mins.push(-lo);
    }
    const d = f32(Math.max(...scales) / 63), dmin = f32(Math.max(...mins) / 63);
    const dh = halfToNumber(f32ToF16(d));
    const dminh = halfToNumber(f32ToF16(dmin));
    const sc = scales.map((s) => (dh ? Math.min(63, Math.round(s / dh)) : 0));
    const m = mins.map((v) => (dminh ? Math.min(63, Math.round(v / dminh)) : 0));
    const at = b * 144;
    view.setUint16(at, f32ToF16(d), true);
    view.setUint16(at + 2, f32ToF16(dmin), true);
    for (let j = 0; j < 4; j++) {
      view.setUint8(at + 4 + j, sc[j] | ((sc[j + 4] >> 4) << 6));
      view.setUint8(at + 8 + j, m[j] | ((m[j + 4] >> 4) << 6));
      view.setUint8(at + 12 + j, (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
    const q = new Uint8Array(256);
    for (let s = 0; s < 8; s++) {
      const step = dh * sc[s], shift = dminh * m[s];
      for (let i = 0; i < 32; i++) {
        q[s * 32 + i] = step
          ? Math.max(0, Math.min(15, Math.round((x[s * 32 + i] + shift) / step)))
          : 0;
      }
    }
    // qs: 64 weights per 32 bytes; byte l of chunk c holds weight 64c + l (low nibble) and
    // 64c + 32 + l (high nibble).
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) {
        view.setUint8(at + 16 + 32 * c + l, q[64 * c + l] | (q[64 * c + 32 + l] << 4));
      }
    }
  }
}

function dequantizeQ4_K(src: Uint8Array, dst: Float32Array): void {
  const view = views(src);
  for (let b = 0; b < dst.length / 256; b++) {
    const at = b * 144;
    const d = half(view, at), dmin = half(view, at + 2);
    for (let s = 0; s < 8; s++) {
      const [sc, m] = q4kScaleMin(view, at + 4, s);
      const scale = f32(d * sc), shift = f32(dmin * m);
      for (let l = 0; l < 32; l++) {
        const byte = view.getUint8(at + 16 + 32 * (s >> 1) + l);
        const q = s & 1 ? byte >> 4 : byte & 15;
        dst[b * 256 + s * 32 + l] = f32(f32(scale * q) - shift);
      }
    }
  }
}

// ---- Q6_K -------------------------------------------------------------------------------------
// Weight i of a 256-block (half h = i / 128, r = i % 128, group g = r / 32, l = r % 32) has its
// low 4 bits in ql[64h + l + 32·(g & 1)] (low nibble for g < 2, high for g ≥ 2) and its top 2 bits
// in qh[32h + l] at bit 2g; its scale is sc[8h + 2g + l / 16].

const q6Index = (i: number) => {
  const h = i >> 7, r = i & 127, g = r >> 5, l = r & 31;
  return {
    ql: 64 * h + l + 32 * (g & 1),
    highNibble: g >= 2,
    qh: 32 * h + l,
    qhShift: 2 * g,
    sc: 8 * h + 2 * g + (l >> 4),
  };
};

function quantizeQ6_K(src: Float32Array, dst: Uint8Array): void {
  const view = views(dst);
  for (let b = 0; b < src.length / 256; b++) {
    const x = src.subarray(b * 256, b * 256 + 256);
    const scales: number[] = [];
    for (let s = 0; s < 16; s++) {
      let amax = 0;
      for (let i = 0; i < 16; i++) amax = Math.max(amax, Math.abs(x[s * 16 + i]));
      scales.push(amax / 31);
    }
    const d = f32(Math.max(...scales) / 127);
    const dh = halfToNumber(f32ToF16(d));
    const sc = scales.map((s) => (dh ? Math.min(127, Math.round(s / dh)) : 0));
    const at = b * 210;
    dst.fill(0, at, at + 210);
    for (let i = 0; i < 256; i++) {
      const step = dh * sc[i >> 4];
      const q = (step ? Math.max(-32, Math.min(31, Math.round(x[i] / step))) : 0) + 32;
      const p = q6Index(i);
      const ql = view.getUint8(at + p.ql);
      view.setUint8(at + p.ql, p.highNibble ? (ql & 15) | ((q & 15) << 4) : (ql & 0xf0) | (q & 15));
      view.setUint8(at + 128 + p.qh, view.getUint8(at + 128 + p.qh) | ((q >> 4) << p.qhShift));
    }
    for (let s = 0; s < 16; s++) view.setInt8(at + 192 + s, sc[s]);
    view.setUint16(at + 208, f32ToF16(d), true);
  }
}

function dequantizeQ6_K(src: Uint8Array, dst: Float32Array): void {
  const view = views(src);
  for (let b = 0; b < dst.length / 256; b++) {
    const at = b * 210;
    const d = half(view, at + 208);
    for (let i = 0; i < 256; i++) {
      const p = q6Index(i);
      const ql = view.getUint8(at + p.ql);
      const q = (p.highNibble ? ql >> 4 : ql & 15) |
        (((view.getUint8(at + 128 + p.qh) >> p.qhShift) & 3) << 4);
      dst[b * 256 + i] = f32(f32(d * view.getInt8(at + 192 + p.sc)) * (q - 32));
    }
  }
}

// ---- the registry -----------------------------------------------------------------------------

function format(
  name: QuantType,
  ggmlType: number,
  kernelFormat: number,
  quantize: BlockFormat["quantize"],
  dequantize: BlockFormat["dequantize"],
): BlockFormat {
  const { blockElems, blockBytes } = GGML_TYPES[ggmlType];
  return { name, ggmlType, blockElems, blockBytes, kernelFormat, quantize, dequantize };
}

/** Every block format, by name. */
export const QUANT: Record<QuantType, BlockFormat> = {
  q8_0: format("q8_0", 8, 0, quantizeQ8_0, dequantizeQ8_0),
  q4_0: format(
    "q4_0",
    2,
    1,
    (s, d) => quantizeLowBit(s, d, 4),
    (s, d) => dequantizeLowBit(s, d, 4),
  ),
  q5_0: format(
    "q5_0",
    6,
    2,
    (s, d) => quantizeLowBit(s, d, 5),
    (s, d) => dequantizeLowBit(s, d, 5),
  ),
  q4_k: format("q4_k", 12, 3, quantizeQ4_K, dequantizeQ4_K),
  q6_k: format("q6_k", 14, 4, quantizeQ6_K, dequantizeQ6_K),
};

/** The block format stored as ggml type `type`, if this engine has it. */
export function quantByGgmlType(type: number): BlockFormat | undefined {
  return Object.values(QUANT).find((f) => f.ggmlType === type);
}

/** Whether `name` is a block format. */
export function isQuant(name: string): name is QuantType {
  return Object.hasOwn(QUANT, name);
}

/** Bytes of a rows × cols matrix in a block format. */
export function quantBytes(name: QuantType, rows: number, cols: number): number {
  const f = QUANT[name];
  return (rows * cols / f.blockElems) * f.blockBytes;
}

/** Which block format each weight matrix gets when quantizing (on load, or when writing GGUF). */
export interface QuantPlan {
  /** The projections of every layer. */
  matrices: QuantType;
  /** The token embedding (also the output head when tied: 63% of the bytes read per token). */
  head: QuantType;
}

/** The embedding/head format llama-quantize gives a file of `weights`: Q8_0 for Q4_0, Q6_K for
 * Q4_K (the head matters most for quality), else the same. */
export function defaultHeadFormat(weights: QuantType): QuantType {
  return weights === "q4_0" ? "q8_0" : weights === "q4_k" ? "q6_k" : weights;
}

/** The formats weight matrices can be quantized to while loading (`loadModel`'s `weights`). */
export type LoadQuantType = "q8_0" | "q4_0";
/** Every LoadQuantType, for validating options and flags. */
export const LOAD_QUANT_TYPES: readonly LoadQuantType[] = ["q8_0", "q4_0"];

/** The plan for a `weights` choice, as llama.cpp's llama-quantize makes it (the head in
 * defaultHeadFormat unless asked otherwise). */
export function quantPlan(weights: QuantType, head?: QuantType): QuantPlan {
  return { matrices: weights, head: head ?? defaultHeadFormat(weights) };
}

/** The format a matrix of `cols` columns gets under `plan`, or null to keep it as floats: rows that
 * do not fill whole blocks fall back as llama-quantize does (Q4_K → Q5_0, Q6_K → Q8_0), and to
 * floats when not even 32-blocks fit. */
export function formatFor(plan: QuantPlan, isHead: boolean, cols: number): QuantType | null {
  let want = isHead ? plan.head : plan.matrices;
  if (cols % QUANT[want].blockElems !== 0) {
    want = want === "q4_k" ? "q5_0" : want === "q6_k" ? "q8_0" : want;
  }
  return cols % QUANT[want].blockElems === 0 ? want : null;
}

/** Bytes of a rows × cols weight in memory. */
export function weightBytes(dtype: DType, rows: number, cols: number): number {
  if (isQuant(dtype)) return quantBytes(dtype, rows, cols);
  return rows * cols * (dtype === "bf16" ? 2 : 4);
}
