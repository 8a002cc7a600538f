// The WebAssembly runtime: instantiates the kernels (asm/kernels.ts) over one linear memory and
// hands out regions of that memory. Everything the model touches (weights, KV caches, activations)
// lives in this memory, so kernels can work on it without copies.

import {
  kernelsRelaxedWasmBase64,
  kernelsThreadsRelaxedWasmBase64,
  kernelsThreadsWasmBase64,
  kernelsWasmBase64,
} from "./kernels_wasm.ts";
import type { Kernels, ThreadKernels } from "./kernels.ts";
import { ThreadPool, threadsUnavailableReason } from "./worker_pool.ts";
import { env } from "../../io.ts";

const PAGE = 65536;
/** wasm32 addresses 4 GiB at most. */
const MAX_PAGES = 65536;
/** Every allocation is aligned (and rounded) to a cache line; SIMD loads need only 16. */
const ALIGN = 64;
/** The first page stays unused: address 0 is never a valid allocation. */
const HEAP_START = PAGE;

const compiled = new Map<string, Promise<WebAssembly.Module>>();

function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const bytes = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** The kernel builds: threaded or not, and with relaxed SIMD (fused multiply-add) or plain. */
const BUILDS = {
  st: kernelsWasmBase64,
  "st-relaxed": kernelsRelaxedWasmBase64,
  mt: kernelsThreadsWasmBase64,
  "mt-relaxed": kernelsThreadsRelaxedWasmBase64,
};
type Build = keyof typeof BUILDS;

let relaxedOk: boolean | undefined;
/** Whether this engine accepts relaxed SIMD (Deno and Bun do; Node 20 only behind a flag).
 * Set GEMMA3_WASM_RELAXED=0 to use the plain builds anyway. */
function relaxedSupported(): boolean {
  if (relaxedOk === undefined) {
    const off = env("GEMMA3_WASM_RELAXED");
    relaxedOk = off !== "0" && WebAssembly.validate(decodeBase64(kernelsRelaxedWasmBase64));
  }
  return relaxedOk;
}

/** Compiles one of the embedded kernel builds, once per process. */
function kernelsModule(threaded: boolean, relaxed: boolean): Promise<WebAssembly.Module> {
  const key: Build = `${threaded ? "mt" : "st"}${relaxed ? "-relaxed" : ""}`;
  let m = compiled.get(key);
  if (!m) {
    if (typeof WebAssembly === "undefined") {
      throw new Error("this runtime has no WebAssembly support");
    }
    m = WebAssembly.compile(decodeBase64(BUILDS[key])).catch((e) => {
      compiled.delete(key);
      const message = (e as Error).message ?? String(e);
      // A page whose Content Security Policy forbids compiling WebAssembly fails here too; that
      // is no lack of SIMD.
      if (/Content Security Policy|unsafe-eval|CSP/i.test(message)) {
        throw new Error(
          `the page's Content Security Policy forbids compiling WebAssembly (${message}); add ` +
            `'wasm-unsafe-eval' to its script-src`,
        );
      }
      throw new Error(
        `cannot compile the WASM kernels (${(e as Error).message}); they need WebAssembly SIMD ` +
          `${
            threaded ? "and threads " : ""
          }(Deno ≥ 1.9, Bun ≥ 1.0, Node ≥ 16.4, Chrome ≥ 91, Firefox ≥ 89, Safari ≥ 16.4)`,
      );
    });
    compiled.set(key, m);
  }
  return m;
}

/** Options of `WasmRuntime.create`. */
export interface RuntimeOptions {
  /** Threads, the calling one included (default: navigator.hardwareConcurrency, else 1). */
  threads?: number;
  /** Which kernel build: "relaxed" (fused multiply-add, relaxed int8 dot products) or "plain"
   * SIMD. Default: relaxed where the engine accepts it. Tests run both. */
  simd?: "relaxed" | "plain";
}

/** The threads a runtime ended up with, and why not more. */
export interface ThreadInfo {
  threads: number;
  /** Set when fewer threads run than were asked for. */
  fallbackReason?: string;
}

/** Milliseconds an op may take before the workers are presumed dead. */
export const OP_TIMEOUT_MS = 60_000;

interface Block {
  ptr: number;
  bytes: number;
}

/**
 * One instance of the kernels and the memory they see, with a small first-fit allocator.
 * Allocations are few and large (a tensor, a KV cache, an activation buffer), so a sorted free
 * list with coalescing is all that is needed.
 *
 * Typed-array views of the memory go stale when it grows; take them with `f32()`/`u8()` right
 * before use and do not keep them across allocations.
 */
export class WasmRuntime {
  /** The linear memory the kernels work on. */
  readonly memory: WebAssembly.Memory;
  /** The kernel entry points. */
  readonly kernels: Kernels;
  #free: Block[] = [];
  #used = new Map<number, number>();
  #top = HEAP_START;

  /** The multi-threaded entry points, while a worker pool is running. */
  #par: ThreadKernels | null = null;
  #pool: ThreadPool | null = null;
  /** How many threads run, and why not more. */
  threadInfo: ThreadInfo = { threads: 1 };

  private constructor(memory: WebAssembly.Memory, kernels: Kernels) {
    this.memory = memory;
    this.kernels = kernels;
  }

  /**
   * Instantiates the kernels over a fresh memory. With more than one thread (and where shared
   * memory and workers exist) the memory is shared and a worker pool is started; otherwise the
   * single-threaded build runs, with the same results.
   */
  static async create(options: RuntimeOptions = {}): Promise<WasmRuntime> {
    const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
    const asked = options.threads ?? nav?.hardwareConcurrency ?? 1;
    if (!Number.isInteger(asked) || asked < 1 || asked > 64) {
      throw new RangeError(`threads must be an integer from 1 to 64, got ${options.threads}`);
    }
    const unavailable = asked > 1 ? threadsUnavailableReason() : null;
    const threaded = asked > 1 && unavailable === null;
    const memory = new WebAssembly.Memory({
      initial: HEAP_START / PAGE + 1,
      maximum: MAX_PAGES,
      shared: threaded,
    });
    if (options.simd === "relaxed" && !relaxedSupported()) {
      throw new Error("this runtime does not accept relaxed SIMD");
    }
    const module = await kernelsModule(
      threaded,
      options.simd ? options.simd === "relaxed" : relaxedSupported(),
    );
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    const rt = new WasmRuntime(memory, instance.exports as unknown as Kernels);
    if (!threaded) {
      rt.threadInfo = { threads: 1, ...(unavailable ? { fallbackReason: unavailable } : {}) };
      return rt;
    }
    const par = instance.exports as unknown as ThreadKernels;
    const ctrl = rt.alloc(4096);
    // Deno, Bun and Node let the main thread block in a wait; a browser's main thread may not.
    const g = globalThis as {
      Deno?: unknown;
      Bun?: unknown;
      process?: { versions?: { node?: string } };
      document?: unknown;
    };
    const canWait = g.Deno || g.Bun || g.process?.versions?.node || !g.document ? 1 : 0;
    par.threadsInit(ctrl, asked, canWait);
    try {
      rt.#pool = await ThreadPool.start(module, memory, ctrl, asked);
    } catch (e) {
      // Workers that cannot start (a platform without them, a CSP, a failing worker) leave the
      // model on one thread, with the same results, and say why: never a failed load.
      rt.threadInfo = { threads: 1, fallbackReason: (e as Error).message };
      return rt;
    }
    rt.#par = par;
    rt.threadInfo = { threads: asked };
    return rt;
  }

  /** The parallel entry points, or null when running on one thread. */
  get parallel(): ThreadKernels | null {
    return this.#par;
  }

  /** Called when a parallel op timed out: stop the pool and carry on single-threaded. */
  threadsFailed(): never {
    this.#pool?.terminate();
    this.#pool = null;
    this.#par = null;
    this.threadInfo = { threads: 1, fallbackReason: "a worker thread stopped responding" };
    throw new Error(
      "a worker thread stopped responding; the model now runs on one thread (retry the call)",
    );
  }

  /** Stops the worker pool (the memory and kernels stay usable on one thread). */
  dispose(): void {
    if (this.#par && this.#pool) this.#par.threadsExit(5000);
    this.#pool?.terminate();
    this.#pool = null;
    this.#par = null;
  }

  /** Bytes currently allocated. */
  get allocatedBytes(): number {
    let n = 0;
    for (const b of this.#used.values()) n += b;
    return n;
  }

  /** Allocates `bytes` (zero-filled), aligned to 64 bytes; throws a clear error past 4 GiB. */
  alloc(bytes: number): number {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    let ptr = -1;
    const i = this.#free.findIndex((b) => b.bytes >= size);
    if (i >= 0) {
      const b = this.#free[i];
      ptr = b.ptr;
      if (b.bytes === size) this.#free.splice(i, 1);
      else {
        b.ptr += size;
        b.bytes -= size;
      }
      new Uint8Array(this.memory.buffer, ptr, size).fill(0);
    } else {
      ptr = this.#top;
      const end = ptr + size;
      const have = this.memory.buffer.byteLength;
      if (end > have) {
        const pages = Math.ceil((end - have) / PAGE);
        if (have / PAGE + pages > MAX_PAGES) {
          throw new Error(
            `out of WebAssembly memory: need ${mib(end)} in total, wasm32 allows 4096 MiB ` +
              `(${mib(this.allocatedBytes)} in use)`,
          );
        }
        try {
          this.memory.grow(pages);
        } catch (e) {
          throw new Error(`cannot grow WebAssembly memory to ${mib(end)}: ${(e as Error).message}`);
        }
      }
      this.#top = end;
    }
    this.#used.set(ptr, size);
    return ptr;
  }

  /** Returns an allocation to the free list; freeing 0 or an unknown pointer is an error. */
  free(ptr: number): void {
    const size = this.#used.get(ptr);
    if (size === undefined) throw new Error(`free of unknown pointer ${ptr}`);
    this.#used.delete(ptr);
    const list = this.#free;
    let i = 0;
    while (i < list.length && list[i].ptr < ptr) i++;
    list.splice(i, 0, { ptr, bytes: size });
    // Coalesce with the next block, then with the previous one.
    if (i + 1 < list.length && ptr + size === list[i + 1].ptr) {
      list[i].bytes += list[i + 1].bytes;
      list.splice(i + 1, 1);
    }
    if (i > 0 && list[i - 1].ptr + list[i - 1].bytes === ptr) {
      list[i - 1].bytes += list[i].bytes;
      list.splice(i, 1);
      i--;
    }
    // A free block at the top goes back to the bump region.
    const last = list[list.length - 1];
    if (last && last.ptr + last.bytes === this.#top) {
      this.#top = last.ptr;
      list.pop();
    }
  }

  /** A Float32Array view of `length` floats at `ptr`. */
  f32(ptr: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, length);
  }

  /** An Int32Array view of `length` ints at `ptr`. */
  i32(ptr: number, length: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, length);
  }

  /** A Uint8Array view of `length` bytes at `ptr`. */
  u8(ptr: number, length: number): Uint8Array<ArrayBuffer> {
    return new Uint8Array(this.memory.buffer as ArrayBuffer, ptr, length);
  }
}

/** Formats a byte count in MiB for messages. */
export function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
