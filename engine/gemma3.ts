// loadModel and the model object: owns the runtime, the weights and the shared activations, and
// makes sessions.

import type { Gemma3Config } from "./config.ts";
import { isDirectory, isUrl } from "./io.ts";
import { type LoadProgress, loadHfFolder, type WasmWeight } from "./load_hf.ts";
import { type Activations, allocActivations } from "./model.ts";
import { WasmRuntime } from "./runtime.ts";
import { Session, type SessionHost } from "./session.ts";
import { type Ptr, WasmBackend } from "./wasm_backend.ts";
import type { ModelWeights } from "./weights.ts";

/** Options of `loadModel`. */
export interface LoadOptions {
  /** Where to run: "wasm" (WebAssembly SIMD), or "auto" (the default; currently always wasm). */
  backend?: "auto" | "wasm";
  /** Called as weight data is read, for progress display. */
  onProgress?: (progress: LoadProgress) => void;
  /** Tokens evaluated per forward call when a prompt is long (default 64). */
  maxChunk?: number;
}

/** Options of `model.createSession`. */
export interface SessionOptions {
  /** Most tokens the session can hold; sets the size of the full-attention layers' cache.
   * Default: 4096, or the model's maximum if smaller. */
  contextLength?: number;
}

/** A loaded Gemma 3 model. Create sessions to evaluate and generate. */
export class Gemma3Model {
  /** The parsed configuration. */
  readonly config: Gemma3Config;
  /** The backend the model runs on. */
  readonly backend: "wasm";
  readonly #rt: WasmRuntime;
  readonly #host: SessionHost<Ptr, WasmWeight>;
  readonly #allocations: number[];
  readonly #sessions = new Set<Session>();
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  /** @internal Use `loadModel()`. */
  constructor(
    rt: WasmRuntime,
    config: Gemma3Config,
    weights: ModelWeights<WasmWeight>,
    allocations: number[],
    maxChunk: number,
  ) {
    this.config = config;
    this.backend = "wasm";
    this.#rt = rt;
    this.#allocations = allocations;
    const backend = new WasmBackend(rt);
    const activations: Activations<Ptr> = allocActivations(backend, config, maxChunk);
    this.#host = {
      backend,
      config,
      weights,
      activations,
      exclusive: <T>(fn: () => Promise<T>): Promise<T> => {
        const run = this.#queue.then(fn);
        this.#queue = run.catch(() => {});
        return run;
      },
      release: (s) => this.#sessions.delete(s),
    };
  }

  /** Bytes of WebAssembly memory in use (weights, caches, activations). */
  get memoryBytes(): number {
    return this.#rt.allocatedBytes;
  }

  /** A new, empty sequence with its own KV cache. */
  createSession(options: SessionOptions = {}): Session {
    if (this.#disposed) throw new Error("this model has been disposed");
    const max = this.config.maxPositionEmbeddings;
    const contextLength = options.contextLength ?? Math.min(4096, max);
    if (!Number.isInteger(contextLength) || contextLength < 1 || contextLength > max) {
      throw new RangeError(`contextLength must be an integer from 1 to ${max} (the model's maximum), got ${contextLength}`);
    }
    const s = new Session(this.#host as SessionHost<unknown, unknown>, contextLength);
    this.#sessions.add(s);
    return s;
  }

  /** Frees the model and all its sessions. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    await this.#queue;
    for (const s of [...this.#sessions]) s.dispose();
    const a = this.#host.activations;
    for (const p of [a.ids, a.x, a.h, a.q, a.k, a.v, a.attn, a.o, a.gate, a.up, a.logits]) this.#rt.free(p);
    for (const p of this.#allocations) this.#rt.free(p);
    this.#disposed = true;
  }
}

/**
 * Loads a Gemma 3 model from a Hugging Face folder: a local path or an http(s) URL of a folder
 * holding config.json and model.safetensors (or sharded safetensors with their index).
 */
export async function loadModel(source: string, options: LoadOptions = {}): Promise<Gemma3Model> {
  if (typeof source !== "string" || source === "") throw new TypeError("loadModel needs a folder path or URL");
  const backend = options.backend ?? "auto";
  if (backend !== "auto" && backend !== "wasm") {
    throw new Error(`backend ${JSON.stringify(backend)} is not available; use "wasm" or "auto"`);
  }
  const maxChunk = options.maxChunk ?? 64;
  if (!Number.isInteger(maxChunk) || maxChunk < 1) throw new RangeError(`maxChunk must be a positive integer, got ${maxChunk}`);
  if (!isUrl(source) && !(await isDirectory(source))) {
    throw new Error(`${source}: not a folder (expected a Hugging Face model folder with config.json)`);
  }
  const rt = await WasmRuntime.create();
  const { config, weights, allocations } = await loadHfFolder(source, rt, options.onProgress);
  return new Gemma3Model(rt, config, weights, allocations, maxChunk);
}
