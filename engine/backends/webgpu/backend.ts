// The WebGPU backend: the forward pass's ops (engine/gemma3/backend.ts) as WGSL compute shaders
// (engine/backends/webgpu/shaders.ts) over GPU buffers. Weights stay in their stored format (f32,
// bf16 or a block format) and are decoded in the shaders; activations and accumulation are f32.
//
// Ops are recorded into one command encoder; nothing runs until logits are read (or `flush`), so
// a decoded token is one submission and one read-back of the logits. Each op's parameters go
// into a 256-byte slot of one uniform buffer, written once per submission.

import { type Backend, type LayerCache, NonFiniteLogitsError } from "../../gemma3/backend.ts";
import type { DType } from "../../formats/dtypes.ts";
import { isQuant, quantBytes } from "../../formats/quant.ts";
import {
  addShader,
  appendKvShader,
  argmaxShader,
  attentionShader,
  embedShader,
  gegluShader,
  matmulShader,
  rmsNormShader,
  ropeShader,
  takeMaxShader,
} from "./shaders.ts";

/** An f32 activation buffer, from element `off` on. */
export interface GpuBuf {
  buf: GPUBuffer;
  off: number;
}

/** A weight on the GPU: its rows split into parts that each fit one storage binding. */
export interface GpuWeight {
  dtype: DType;
  rows: number;
  cols: number;
  parts: { buf: GPUBuffer; row0: number; rows: number }[];
}

const SLOT = 256;
const SLOTS = 4096;
const MAX_GROUPS = 65535;

/** Set once no adapter was found: asked again, a browser prints "No available adapters." on the
 * console each time, and the answer does not change while the page or process lives. */
let noAdapter: { reason: string } | undefined;

/** Why WebGPU cannot be used here, or null when an adapter exists. */
export async function webGpuAdapter(): Promise<
  { adapter: GPUAdapter; software: boolean } | { reason: string }
> {
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) return { reason: "this runtime has no WebGPU (navigator.gpu)" };
  if (noAdapter) return noAdapter;
  const adapter = await gpu.requestAdapter().catch(() => null);
  if (!adapter) return noAdapter = { reason: "no WebGPU adapter (no GPU, or no driver)" };
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const software = info.isFallbackAdapter === true ||
    /llvmpipe|lavapipe|swiftshader/i.test(info.description ?? "");
  return { adapter, software };
}

export class WebGpuBackend implements Backend<GpuBuf, GpuWeight> {
  /** Its attention shader reads its buffers from the start. */
  readonly batchesSequences = false;
  readonly device: GPUDevice;
  /** Largest storage binding, in bytes (weights are split to fit it). */
  readonly maxBinding: number;
  /** What the adapter is, in words. */
  readonly description: string;
  #encoder: GPUCommandEncoder | null = null;
  #params = new ArrayBuffer(SLOT * SLOTS);
  #slot = 0;
  #paramBuf: GPUBuffer;
  #pipelines = new Map<string, GPUComputePipeline>();
  #scores: GPUBuffer | null = null;
  #ropeTables = new Map<string, GPUBuffer>();
  #lost: string | null = null;

  private constructor(device: GPUDevice, description: string, maxBinding?: number) {
    this.device = device;
    this.description = description;
    this.maxBinding = maxBinding ??
      Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    this.#paramBuf = device.createBuffer({
      size: SLOT * SLOTS,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.lost.then((info) => {
      this.#lost = `the WebGPU device was lost (${
        info.message || info.reason || "no reason given"
      })`;
    });
    device.addEventListener("uncapturederror", (e) => {
      this.#lost ??= `WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`;
    });
  }

  /** A backend on the adapter (with the largest storage bindings it allows; tests may ask for
   * smaller ones, `maxBinding` bytes, to exercise the splitting of large weights). */
  static async create(
    adapter: GPUAdapter,
    options: { maxBinding?: number } = {},
  ): Promise<WebGpuBackend> {
    const limits = adapter.limits;
    const device = await adapter.requestDevice({
      requiredLimits: {
        maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
        maxBufferSize: limits.maxBufferSize,
        maxStorageBuffersPerShaderStage: Math.min(8, limits.maxStorageBuffersPerShaderStage),
      },
    });
    return new WebGpuBackend(
      device,
      adapter.info.description || adapter.info.vendor || "WebGPU adapter",
      options.maxBinding,
    );
  }

  #check(): void {
    if (this.#lost) throw new Error(this.#lost);
  }

  // ---- buffers --------------------------------------------------------------------------------

  alloc(floats: number): GpuBuf {
    const size = Math.max(16, Math.ceil((floats * 4) / 16) * 16);
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    return { buf: this.device.createBuffer({ size, usage }), off: 0 };
  }
  free(b: GpuBuf): void {
    if (b.off === 0) b.buf.destroy();
  }
  offset(b: GpuBuf, floats: number): GpuBuf {
    return { buf: b.buf, off: b.off + floats };
  }
  writeTokens(dst: GpuBuf, ids: Int32Array): void {
    // A queue write lands before commands submitted later but after those submitted earlier:
    // submit what reads the ids buffer now first.
    this.#submit();
    this.device.queue.writeBuffer(dst.buf, dst.off * 4, ids as Int32Array<ArrayBuffer>);
  }
  copy(src: GpuBuf, dst: GpuBuf, floats: number): void {
    this.#enc().copyBufferToBuffer(src.buf, src.off * 4, dst.buf, dst.off * 4, floats * 4);
  }
  async read(src: GpuBuf, dst: Float32Array): Promise<void> {
    const bytes = Math.ceil((dst.length * 4) / 4) * 4;
    const staging = this.device.createBuffer({
      size: Math.max(16, bytes),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#enc().copyBufferToBuffer(src.buf, src.off * 4, staging, 0, bytes);
    this.#submit();
    await staging.mapAsync(GPUMapMode.READ);
    this.#check();
    dst.set(new Float32Array(staging.getMappedRange(0, bytes), 0, dst.length));
    staging.unmap();
    staging.destroy();
  }
  /** Runs everything recorded so far. */
  async flush(): Promise<void> {
    this.#submit();
    await this.device.queue.onSubmittedWorkDone();
    this.#check();
  }

  /** Uploads a weight given as its stored bytes (rows × cols of `dtype`), split into parts. */
  uploadWeight(dtype: DType, rows: number, cols: number, bytes: Uint8Array): GpuWeight {
    const rowBytes = isQuant(dtype)
      ? quantBytes(dtype, 1, cols)
      : cols * (dtype === "bf16" ? 2 : 4);
    // Parts hold whole rows, and for bf16 an even number of elements per part start.
    const perPart = Math.max(1, Math.floor(this.maxBinding / rowBytes));
    const parts: GpuWeight["parts"] = [];
    for (let row0 = 0; row0 < rows; row0 += perPart) {
      const n = Math.min(perPart, rows - row0);
      const size = Math.ceil((n * rowBytes) / 4) * 4;
      const buf = this.device.createBuffer({
        size,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
        mappedAtCreation: true,
      });
      new Uint8Array(buf.getMappedRange()).set(
        bytes.subarray(row0 * rowBytes, (row0 + n) * rowBytes),
      );
      buf.unmap();
      parts.push({ buf, row0, rows: n });
    }
    return { dtype, rows, cols, parts };
  }

  freeWeight(w: GpuWeight): void {
    for (const p of w.parts) p.buf.destroy();
  }

  // ---- recording ------------------------------------------------------------------------------

  #enc(): GPUCommandEncoder {
    this.#check();
    return this.#encoder ??= this.device.createCommandEncoder();
  }

  #submit(): void {
    if (!this.#encoder) return;
    this.device.queue.writeBuffer(this.#paramBuf, 0, this.#params, 0, this.#slot * SLOT);
    this.device.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
    this.#slot = 0;
  }

  #pipeline(key: string, code: () => string): GPUComputePipeline {
    let p = this.#pipelines.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ code: code() });
      p = this.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      this.#pipelines.set(key, p);
    }
    return p;
  }

  /** Records one dispatch: parameters (a, b: u32 × 4; f: f32 × 4), buffers by binding number. */
  #dispatch(
    pipeline: GPUComputePipeline,
    a: number[],
    b: number[],
    f: number[],
    buffers: GPUBuffer[],
    groups: [number, number],
  ): void {
    if (this.#slot === SLOTS) this.#submit();
    const enc = this.#enc();
    const at = this.#slot * SLOT;
    // Params { a: vec4<u32>, b: vec4<u32>, f: vec4<f32> }; unused lanes are zero.
    new Uint32Array(this.#params, at, 12).fill(0);
    new Uint32Array(this.#params, at, 4).set(a);
    new Uint32Array(this.#params, at + 16, 4).set(b);
    new Float32Array(this.#params, at + 32, 4).set(f);
    this.#slot++;
    const entries: GPUBindGroupEntry[] = [{
      binding: 0,
      resource: { buffer: this.#paramBuf, offset: at, size: 48 },
    }];
    buffers.forEach((buf, i) => entries.push({ binding: i + 1, resource: { buffer: buf } }));
    const group = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(groups[0], groups[1]);
    pass.end();
  }

  /** Workgroups for `n` independent groups, as (x, y) within the per-dimension limit. */
  #spread(n: number): [number, number] {
    return n <= MAX_GROUPS ? [Math.max(1, n), 1] : [MAX_GROUPS, Math.ceil(n / MAX_GROUPS)];
  }

  // ---- ops ------------------------------------------------------------------------------------

  embed(table: GpuWeight, ids: GpuBuf, tokens: number, scale: number, out: GpuBuf): void {
    if (ids.off !== 0) throw new Error("embed: token ids must start their buffer");
    const pipe = this.#pipeline(`embed-${table.dtype}`, () => embedShader(table.dtype));
    for (const part of table.parts) {
      this.#dispatch(pipe, [tokens, table.cols, part.row0, part.rows], [out.off], [scale], [
        part.buf,
        ids.buf,
        out.buf,
      ], [
        Math.ceil(table.cols / 64),
        tokens,
      ]);
    }
  }

  rmsNorm(x: GpuBuf, w: GpuWeight, out: GpuBuf, rows: number, eps: number): void {
    const inPlace = x.buf === out.buf;
    if (inPlace && x.off !== out.off) throw new Error("rmsNorm: in place only at the same offset");
    const pipe = this.#pipeline(`rms-${inPlace}`, () => rmsNormShader(inPlace));
    const buffers = inPlace ? [w.parts[0].buf, out.buf] : [w.parts[0].buf, x.buf, out.buf];
    this.#dispatch(pipe, [rows, w.cols], [x.off, out.off], [eps], buffers, [rows, 1]);
  }

  matmul(w: GpuWeight, x: GpuBuf, out: GpuBuf, tokens: number): void {
    const pipe = this.#pipeline(`matmul-${w.dtype}`, () => matmulShader(w.dtype));
    for (const part of w.parts) {
      this.#dispatch(pipe, [part.rows, w.cols, tokens, part.row0], [x.off, out.off, w.rows], [], [
        part.buf,
        x.buf,
        out.buf,
      ], this.#spread(part.rows));
    }
  }

  rope(
    x: GpuBuf,
    tokens: number,
    heads: number,
    headDim: number,
    startPos: number,
    base: number,
    factor: number,
  ): void {
    // (cos, sin) per token and frequency in f64, as the WASM kernel computes them.
    const half = headDim / 2;
    const key = `${tokens}/${startPos}/${base}/${factor}/${headDim}`;
    let table = this.#ropeTables.get(key);
    if (!table) {
      const cs = new Float32Array(tokens * half * 2);
      for (let t = 0; t < tokens; t++) {
        const pos = (startPos + t) / factor;
        for (let i = 0; i < half; i++) {
          const angle = pos * Math.pow(base, -(2 * i) / headDim);
          cs[(t * half + i) * 2] = Math.cos(angle);
          cs[(t * half + i) * 2 + 1] = Math.sin(angle);
        }
      }
      if (this.#ropeTables.size > 8) {
        this.#submit();
        for (const b of this.#ropeTables.values()) b.destroy();
        this.#ropeTables.clear();
      }
      table = this.device.createBuffer({
        size: cs.byteLength,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      });
      this.device.queue.writeBuffer(table, 0, cs);
      this.#ropeTables.set(key, table);
    }
    const pipe = this.#pipeline("rope", () => ropeShader);
    this.#dispatch(pipe, [tokens, heads, headDim, x.off], [], [], [table, x.buf], [
      Math.ceil(half / 64),
      tokens * heads,
    ]);
  }

  attention(
    q: GpuBuf,
    k: GpuBuf,
    v: GpuBuf,
    cache: LayerCache<GpuBuf>,
    out: GpuBuf,
    tokens: number,
    startPos: number,
    s: { heads: number; kvHeads: number; headDim: number; window: number; scale: number },
  ): void {
    for (const b of [q, k, v, out, cache.keys, cache.values]) {
      if (b.off !== 0) throw new Error("attention: buffers must start at 0");
    }
    // Scores of every (token, head) at once: the span a query sees is at most the cache plus the chunk.
    const span = Math.min(startPos + tokens, s.window > 0 ? s.window : startPos + tokens);
    const need = tokens * s.heads * span * 4;
    if (!this.#scores || this.#scores.size < need) {
      this.#submit(); // recorded ops may still use the old buffer
      this.#scores?.destroy();
      this.#scores = this.device.createBuffer({
        size: Math.max(256, need * 2),
        usage: GPUBufferUsage.STORAGE,
      });
    }
    const pipe = this.#pipeline("attention", () => attentionShader);
    this.#dispatch(
      pipe,
      [tokens, startPos, s.heads, s.kvHeads],
      [s.headDim, cache.capacity, s.window, span],
      [s.scale],
      [q.buf, k.buf, v.buf, cache.keys.buf, cache.values.buf, this.#scores, out.buf],
      [tokens * s.heads, 1],
    );
    const kvDim = s.kvHeads * s.headDim;
    const append = this.#pipeline("appendKv", () => appendKvShader);
    this.#dispatch(append, [tokens, startPos, kvDim, cache.capacity], [], [], [
      k.buf,
      v.buf,
      cache.keys.buf,
      cache.values.buf,
    ], [
      Math.ceil(kvDim / 64),
      tokens,
    ]);
  }

  geglu(gate: GpuBuf, up: GpuBuf, out: GpuBuf, n: number): void {
    if (out.buf !== gate.buf || out.off !== 0 || gate.off !== 0 || up.off !== 0) {
      throw new Error("geglu: the WebGPU kernel writes into gate");
    }
    const groups = Math.ceil(n / 64);
    this.#dispatch(
      this.#pipeline("geglu", () => gegluShader),
      [n],
      [],
      [],
      [up.buf, gate.buf],
      this.#spread(groups),
    );
  }

  add(x: GpuBuf, y: GpuBuf, n: number): void {
    if (x.off !== 0 || y.off !== 0) throw new Error("add: buffers must start at 0");
    this.#dispatch(
      this.#pipeline("add", () => addShader),
      [n],
      [],
      [],
      [y.buf, x.buf],
      this.#spread(Math.ceil(n / 64)),
    );
  }

  async argmax(values: GpuBuf, n: number): Promise<number> {
    this.#argmaxOut ??= this.alloc(4);
    this.#dispatch(this.#pipeline("argmax", () => argmaxShader), [n, values.off], [], [], [
      values.buf,
      this.#argmaxOut.buf,
    ], [1, 1]);
    const out = new Float32Array(1);
    await this.read(this.#argmaxOut, out);
    const id = new Int32Array(out.buffer)[0];
    if (id < 0) throw new NonFiniteLogitsError();
    return id;
  }
  #argmaxOut: GpuBuf | null = null;

  async topK(values: GpuBuf, n: number, k: number): Promise<{ ids: number[]; values: number[] }> {
    k = Math.min(k, n);
    const copy = this.alloc(n), out = this.alloc(2 * k);
    this.#enc().copyBufferToBuffer(values.buf, values.off * 4, copy.buf, 0, n * 4);
    const pipe = this.#pipeline("takeMax", () => takeMaxShader);
    for (let step = 0; step < k; step++) {
      this.#dispatch(pipe, [n, step], [], [], [copy.buf, out.buf], [1, 1]);
    }
    const raw = new Float32Array(2 * k);
    await this.read(out, raw);
    this.free(copy);
    this.free(out);
    const ints = new Int32Array(raw.buffer);
    const ids: number[] = [], vals: number[] = [];
    for (let i = 0; i < k; i++) {
      ids.push(ints[2 * i]);
      vals.push(raw[2 * i + 1]);
    }
    if (vals.some((v) => Number.isNaN(v))) throw new NonFiniteLogitsError();
    return { ids, values: vals };
  }

  /** Releases the device's buffers. */
  dispose(): void {
    this.#scores?.destroy();
    for (const b of this.#ropeTables.values()) b.destroy();
    this.#paramBuf.destroy();
    this.device.destroy();
  }
}
