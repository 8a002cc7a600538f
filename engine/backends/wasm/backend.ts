// The WASM SIMD backend: each op is one call into asm/kernels.ts over pointers.

import { type Backend, type LayerCache, NonFiniteLogitsError } from "../../gemma3/backend.ts";
import type { DType } from "../../formats/dtypes.ts";
import { isQuant, QUANT, weightBytes } from "../../formats/quant.ts";
import type { Kernels, ThreadKernels } from "./kernels.ts";
import { OP_TIMEOUT_MS, type WasmRuntime } from "./runtime.ts";
import { mapWeights, type ModelWeights } from "../../gemma3/weights.ts";

/** A weight in WebAssembly memory: matrices as stored (f32, bf16, a block format) or quantized on
 * load, norm vectors as f32. */
export interface WasmWeight {
  /** Byte address in the runtime's memory. */
  ptr: number;
  /** Element type in memory. */
  dtype: DType;
  /** Rows (output features); 1 for a vector. */
  rows: number;
  /** Columns (input features); the length for a vector. */
  cols: number;
  /** Rewritten by interleaveWeights into the kernels' layout (not as loaded). */
  interleaved?: boolean;
}

/** Activation buffers are byte addresses in the runtime's memory. */
export type Ptr = number;

/** The weights as the kernels read them fastest, rewritten in place in one pass at load: f32 and
 * bf16 matrices by interleaveRows (asm/kernels/matmul_float.ts), Q8_0, Q4_0 and Q5_0 matrices by
 * interleaveBlockRows (asm/kernels/matmul_quant.ts); the layouts, why and what they gain are
 * explained there. K-quant matrices and vectors stay as they are. */
export function interleaveWeights(
  rt: WasmRuntime,
  weights: ModelWeights<WasmWeight>,
): ModelWeights<WasmWeight> {
  let scratch = 0, scratchBytes = 0;
  const scratchFor = (bytes: number) => {
    if (bytes > scratchBytes) {
      if (scratch) rt.free(scratch);
      scratchBytes = bytes;
      scratch = rt.alloc(bytes);
    }
    return scratch;
  };
  // mapWeights calls this once per distinct weight (a tied head is the embedding).
  const out = mapWeights(weights, (w): WasmWeight => {
    if (w.rows === 1 || w.interleaved) return w; // vectors
    if (w.dtype === "f32" || w.dtype === "bf16") {
      const elemBytes = w.dtype === "f32" ? 4 : 2;
      const rows8 = scratchFor(8 * w.cols * elemBytes);
      rt.kernels.interleaveRows(w.ptr, w.rows, w.cols, elemBytes, rows8);
    } else if (w.dtype === "q8_0" || w.dtype === "q4_0" || w.dtype === "q5_0") {
      const rows4 = scratchFor(4 * weightBytes(w.dtype, 1, w.cols));
      rt.kernels.interleaveBlockRows(QUANT[w.dtype].kernelFormat, w.ptr, w.rows, w.cols, rows4);
    } else return w; // the K-quants stay in order
    return { ...w, interleaved: true };
  });
  if (scratch) rt.free(scratch);
  return out;
}

/** Bytes of rotation tables a WasmBackend keeps (see #ropeTable): 16 prompt chunks of 64 tokens
 * of the 270M (64 KB each), or a thousand decode steps' (1 KB). */
const ROPE_TABLE_BYTES = 1 << 20;

/** Implements the forward pass's ops with the WebAssembly kernels. Matrix products and attention
 * go to the worker pool when there is one; the small per-vector ops stay on the calling thread. */
export class WasmBackend implements Backend<Ptr, WasmWeight> {
  /** Pointers: any offset. */
  readonly batchesSequences = true;
  /** Element-wise ops smaller than this run on the calling thread: handing them to the pool costs
   * more than it saves (decode's vectors are a few thousand floats). Tests lower it. */
  static parallelMinFloats = 1 << 14;

  constructor(readonly rt: WasmRuntime) {}

  /** Quantized activations for products with block-quantized weights: int8 values, then per
   * 32-block an f32 scale, then per 32-block the i32 sum of the int8 values, then per 32-block
   * the i32 sums of its two halves, and for a decode batch of 4-7 tokens the first four as int16
   * (asm quantizeRowsQ8, activationScalesBytes); after them each thread's scratch for packing a
   * group of weight rows (asm packedBytes). */
  #q8: { ptr: number; bytes: number } | null = null;

  /** Attention's per-thread scratch (a tile's scores and row addresses: under 1 KB, for any
   * context), allocated on first use: [address, bytes per thread]. */
  #attention: [number, number] | null = null;
  #attentionScratch(): [number, number] {
    if (!this.#attention) {
      // Each thread's slice on its own cache lines.
      const stride = Math.ceil(this.rt.kernels.attentionScratchBytes() / 64) * 64;
      this.#attention = [this.rt.alloc(stride * this.rt.threadInfo.threads), stride];
    }
    return this.#attention;
  }

  /** x quantized to int8 blocks (grown as needed); returns [qx, sx, packing scratch, its bytes
   * per thread]. */
  #quantizeActivations(x: Ptr, tokens: number, cols: number): [number, number, number, number] {
    const qBytes = Math.ceil((tokens * cols) / 16) * 16 +
      this.rt.kernels.activationScalesBytes(tokens, cols);
    const packedStride = this.rt.kernels.packedBytes(cols);
    const need = qBytes + packedStride * this.rt.threadInfo.threads;
    if (!this.#q8 || this.#q8.bytes < need) {
      if (this.#q8) this.rt.free(this.#q8.ptr);
      this.#q8 = { ptr: this.rt.alloc(need), bytes: need };
    }
    const qx = this.#q8.ptr, sx = qx + Math.ceil((tokens * cols) / 16) * 16;
    this.#run(
      tokens * cols,
      (par) => par.parQuantizeRowsQ8(x, tokens, cols, qx, sx, OP_TIMEOUT_MS),
      (k) => k.quantizeRowsQ8(x, tokens, cols, qx, sx),
    );
    return [qx, sx, qx + qBytes, packedStride];
  }

  /**
   * Runs one op: on the worker pool when there is one and the op has at least
   * `parallelMinFloats` elements (`floats`; Infinity: always), else on this thread. A parallel
   * entry point returns a negative status when a worker did not answer in time; the pool is then
   * given up (see WasmRuntime.threadsFailed).
   */
  #run(
    floats: number,
    parallel: (par: ThreadKernels) => number,
    serial: (k: Kernels) => void,
  ): void {
    const par = floats >= WasmBackend.parallelMinFloats ? this.rt.parallel : null;
    if (!par) serial(this.rt.kernels);
    else if (parallel(par) < 0) this.rt.threadsFailed();
  }

  alloc(floats: number): Ptr {
    return this.rt.alloc(floats * 4);
  }
  free(buffer: Ptr): void {
    this.rt.free(buffer);
  }
  offset(buffer: Ptr, floats: number): Ptr {
    return buffer + floats * 4;
  }
  writeTokens(dst: Ptr, ids: Int32Array): void {
    this.rt.i32(dst, ids.length).set(ids);
  }
  /** The greedy token, found in place (asm argmaxF32): one id comes back, not the logits. */
  argmax(values: Ptr, n: number): Promise<number> {
    const id = this.rt.kernels.argmaxF32(values, n);
    if (id < 0) return Promise.reject(new NonFiniteLogitsError());
    return Promise.resolve(id);
  }
  read(src: Ptr, dst: Float32Array): Promise<void> {
    dst.set(this.rt.f32(src, dst.length));
    return Promise.resolve();
  }
  copy(src: Ptr, dst: Ptr, floats: number): void {
    this.rt.f32(dst, floats).set(this.rt.f32(src, floats));
  }

  embed(table: WasmWeight, ids: Ptr, tokens: number, scale: number, out: Ptr): void {
    const k = this.rt.kernels;
    const interleaved = table.interleaved ? 1 : 0;
    const args = [table.ptr, table.rows, ids, tokens, table.cols, scale, out, interleaved] as const;
    if (isQuant(table.dtype)) k.embedQuant(QUANT[table.dtype].kernelFormat, ...args);
    else (table.dtype === "bf16" ? k.embedBF16 : k.embedF32)(...args);
  }
  rmsNorm(x: Ptr, w: WasmWeight, out: Ptr, rows: number, eps: number): void {
    this.#run(
      rows * w.cols,
      (par) => par.parRmsNorm(x, w.ptr, out, rows, w.cols, eps, OP_TIMEOUT_MS),
      (k) => k.rmsNorm(x, w.ptr, out, rows, w.cols, eps),
    );
  }
  matmul(w: WasmWeight, x: Ptr, out: Ptr, tokens: number): void {
    // The serial kernels take a row range (all rows here); the pool splits the rows itself.
    const interleaved = w.interleaved ? 1 : 0;
    if (isQuant(w.dtype)) {
      const fmt = QUANT[w.dtype].kernelFormat;
      const [qx, sx, packed, packedStride] = this.#quantizeActivations(x, tokens, w.cols);
      const args = [fmt, w.ptr, qx, sx, out, w.rows, w.cols, tokens] as const;
      this.#run(
        Infinity,
        (par) => par.parMatmulQuant(...args, interleaved, packed, packedStride, OP_TIMEOUT_MS),
        (k) => k.matmulQuant(...args, 0, w.rows, interleaved, packed),
      );
      return;
    }
    const bf16 = w.dtype === "bf16";
    const args = [w.ptr, x, out, w.rows, w.cols, tokens] as const;
    this.#run(
      Infinity,
      (par) => par.parMatmul(bf16 ? 1 : 0, ...args, interleaved, OP_TIMEOUT_MS),
      (k) => (bf16 ? k.matmulBF16 : k.matmulF32)(...args, 0, w.rows, interleaved),
    );
  }
  rope(
    x: Ptr,
    tokens: number,
    heads: number,
    headDim: number,
    startPos: number,
    base: number,
    factor: number,
  ): void {
    const table = this.#ropeTable(tokens, headDim, startPos, base, factor);
    this.#run(
      tokens * heads * headDim,
      (par) => par.parRope(x, table, tokens, heads, headDim, OP_TIMEOUT_MS),
      (k) => k.ropeApply(x, table, 0, tokens, heads, headDim),
    );
  }

  /** Rotation tables (asm ropeTable) of the last few chunks, by their arguments: q and k of a
   * chunk, and every layer of the same base, rotate by the same angles, whose cos and sin (f64
   * pow, cos, sin for each token and frequency) then cost once per chunk and base instead of
   * twice per layer. The oldest go while they hold more than ROPE_TABLE_BYTES (a decode batch of
   * B sequences uses 2B small ones per step: two bases). */
  #ropeTables = new Map<string, { ptr: Ptr; bytes: number }>();
  #ropeTableBytes = 0;
  #ropeTable(tokens: number, headDim: number, startPos: number, base: number, factor: number): Ptr {
    const key = `${tokens} ${headDim} ${startPos} ${base} ${factor}`;
    let table = this.#ropeTables.get(key);
    if (table === undefined) {
      const bytes = tokens * headDim * 4;
      for (const [oldKey, old] of this.#ropeTables) {
        if (this.#ropeTableBytes + bytes <= ROPE_TABLE_BYTES) break;
        this.#ropeTables.delete(oldKey);
        this.rt.free(old.ptr);
        this.#ropeTableBytes -= old.bytes;
      }
      table = { ptr: this.rt.alloc(bytes), bytes };
      this.rt.kernels.ropeTable(table.ptr, 0, tokens, headDim, startPos, base, factor);
      this.#ropeTables.set(key, table);
      this.#ropeTableBytes += bytes;
    }
    return table.ptr;
  }
  attention(
    q: Ptr,
    k: Ptr,
    v: Ptr,
    cache: LayerCache<Ptr>,
    out: Ptr,
    tokens: number,
    startPos: number,
    s: {
      heads: number;
      kvHeads: number;
      headDim: number;
      window: number;
      scale: number;
    },
  ): void {
    const [scratch, stride] = this.#attentionScratch();
    const args = [
      q,
      k,
      v,
      cache.keys,
      cache.values,
      out,
      scratch,
      tokens,
      startPos,
      s.heads,
      s.kvHeads,
      s.headDim,
      cache.capacity,
      s.window,
      s.scale,
    ] as const;
    // With the pool, each thread gets its own slice of the scratch; on one thread, the kernel
    // takes a range of (token, head) items: all of them.
    this.#run(
      Infinity,
      (par) => par.parAttention(...args, stride, OP_TIMEOUT_MS),
      (kernels) => kernels.attention(...args, 0, tokens * s.heads),
    );
    this.rt.kernels.appendKv(
      k,
      v,
      cache.keys,
      cache.values,
      tokens,
      startPos,
      s.kvHeads * s.headDim,
      cache.capacity,
    );
  }
  geglu(gate: Ptr, up: Ptr, out: Ptr, n: number): void {
    // Weighted 4x: an exp and a division per element, about four times a norm's work per float,
    // so a decode batch of two or more (4,096+ floats) goes to the pool (4 batched sessions on 2
    // threads: 40 -> 22 µs per call).
    this.#run(
      4 * n,
      (par) => par.parGeglu(gate, up, out, n, OP_TIMEOUT_MS),
      (k) => k.geglu(gate, up, out, 0, n),
    );
  }
  add(x: Ptr, y: Ptr, n: number): void {
    this.rt.kernels.addInPlace(x, y, n);
  }
}
