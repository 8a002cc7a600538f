// Small shared helpers for the tests: a seeded generator and float64 reference arithmetic.

import { ok, rejects } from "node:assert/strict";
import { f32ToBF16 } from "../../engine/formats/dtypes.ts";

/** A seeded generator (mulberry32) of uniform floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n normal samples (Box–Muller) times `std`, as f32. */
export function randn(rand: () => number, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - rand();
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  }
  return out;
}

/** Rounds values to bf16 and returns both the bits and the exact f32 values they stand for. */
export function asBF16(values: Float32Array): { bits: Uint16Array; values: Float32Array } {
  const bits = new Uint16Array(values.length);
  f32ToBF16(values, bits);
  const exact = new Float32Array(values.length);
  new Uint32Array(exact.buffer).set(Array.from(bits, (b) => b << 16));
  return { bits, values: exact };
}

/** The largest |a[i] - b[i]|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Unit roundoff of f32: a correctly rounded f32 operation errs by at most this, relatively. */
export const U32 = 2 ** -24;

/** The interleaved layout of f32 and bf16 rows (interleaveRows in asm/kernels.ts), written from
 * its definition: in each whole group of
 * `groupRows` rows (of `rowBytes`), chunk c (`chunkBytes`) of row i moves to the group's start +
 * (groupRows·c + i) · chunkBytes; rows after the last whole group stay where they are. */
export function interleavedReference(
  bytes: Uint8Array,
  rows: number,
  rowBytes: number,
  groupRows: number,
  chunkBytes: number,
): Uint8Array {
  const out = bytes.slice();
  for (let g = 0; g + groupRows <= rows; g += groupRows) {
    for (let i = 0; i < groupRows; i++) {
      for (let c = 0; c < rowBytes / chunkBytes; c++) {
        const from = (g + i) * rowBytes + c * chunkBytes;
        out.set(
          bytes.subarray(from, from + chunkBytes),
          g * rowBytes + (groupRows * c + i) * chunkBytes,
        );
      }
    }
  }
  return out;
}

/**
 * Asserts |got[i] - want[i]| <= tol[i] for every i, naming the first index that fails.
 */
export function assertWithin(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: ArrayLike<number> | number,
  what: string,
): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: length ${got.length} vs ${want.length}`);
  }
  for (let i = 0; i < got.length; i++) {
    const t = typeof tol === "number" ? tol : tol[i];
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= t)) {
      throw new Error(`${what}: index ${i}: got ${got[i]}, want ${want[i]} (|Δ| ${d} > ${t})`);
    }
  }
}

/** Reads every tensor of a safetensors file as f32 values (test-side reader, F32/BF16/F16). */
export function readSafetensorsF32(bytes: Uint8Array): Record<string, Float32Array> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const out: Record<string, Float32Array> = {};
  for (
    const [name, t] of Object.entries(header) as [
      string,
      { dtype: string; data_offsets: number[] },
    ][]
  ) {
    if (name === "__metadata__") continue;
    const raw = bytes.slice(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
    if (t.dtype === "F32") out[name] = new Float32Array(raw.buffer);
    else {
      const u16 = new Uint16Array(raw.buffer);
      out[name] = t.dtype === "BF16"
        ? new Float32Array(Uint32Array.from(u16, (b) => b << 16).buffer)
        : Float32Array.from(u16, (h) => {
          const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
          return e === 0
            ? s * m * 2 ** -24
            : e === 31
            ? (m ? NaN : s * Infinity)
            : s * (1 + m / 1024) * 2 ** (e - 15);
        });
    }
  }
  return out;
}

/** The fixtures folder of this repository. */
/** Asserts that `fn` rejects with a message matching every pattern. */
export async function failsWith(fn: () => Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await rejects(fn, (e: Error) => {
    for (const p of patterns) {
      ok(p.test(e.message), `message ${JSON.stringify(e.message)} does not match ${p}`);
    }
    return true;
  });
}

export const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

/** log(softmax(logits)) in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}
