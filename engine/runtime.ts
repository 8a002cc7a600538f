// The WebAssembly runtime: instantiates the kernels (asm/kernels.ts) over one linear memory and
// hands out regions of that memory. Everything the model touches (weights, KV caches,
// activations) lives in this memory, so kernels can work on it without copies.

import { kernelsWasmBase64 } from "./kernels_wasm.ts";

/** The kernel exports of asm/kernels.ts; pointers are byte offsets into the memory. */
export interface Kernels {
  matmulF32(w: number, x: number, y: number, rows: number, cols: number, tokens: number): void;
  matmulBF16(w: number, x: number, y: number, rows: number, cols: number, tokens: number): void;
  embedF32(table: number, ids: number, tokens: number, hidden: number, scale: number, out: number): void;
  embedBF16(table: number, ids: number, tokens: number, hidden: number, scale: number, out: number): void;
  rmsNorm(x: number, w: number, out: number, rows: number, n: number, eps: number): void;
  ropeInPlace(
    x: number,
    tokens: number,
    heads: number,
    headDim: number,
    startPos: number,
    base: number,
    factor: number,
  ): void;
  attention(
    q: number,
    k: number,
    v: number,
    kCache: number,
    vCache: number,
    out: number,
    scores: number,
    tokens: number,
    startPos: number,
    heads: number,
    kvHeads: number,
    headDim: number,
    capacity: number,
    window: number,
    scale: number,
    h0: number,
    h1: number,
  ): void;
  appendKv(k: number, v: number, kCache: number, vCache: number, tokens: number, startPos: number, kvDim: number, capacity: number): void;
  geglu(gate: number, up: number, out: number, n: number): void;
  addInPlace(x: number, y: number, n: number): void;
}

const PAGE = 65536;
/** wasm32 addresses 4 GiB at most. */
const MAX_PAGES = 65536;
/** Every allocation is aligned (and rounded) to a cache line; SIMD loads need only 16. */
const ALIGN = 64;
/** The first page stays unused: address 0 is never a valid allocation. */
const HEAP_START = PAGE;

let compiled: Promise<WebAssembly.Module> | undefined;

function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const bytes = new Uint8Array(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** Compiles the embedded kernels once per process. */
export function kernelsModule(): Promise<WebAssembly.Module> {
  if (!compiled) {
    if (typeof WebAssembly === "undefined" || !WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]))) {
      throw new Error("this runtime has no WebAssembly support");
    }
    compiled = WebAssembly.compile(decodeBase64(kernelsWasmBase64)).catch((e) => {
      compiled = undefined;
      throw new Error(
        `cannot compile the WASM kernels (${(e as Error).message}); they need WebAssembly SIMD ` +
          "(Deno ≥ 1.9, Bun ≥ 1.0, Node ≥ 16.4, Chrome ≥ 91, Firefox ≥ 89, Safari ≥ 16.4)",
      );
    });
  }
  return compiled;
}

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

  private constructor(memory: WebAssembly.Memory, kernels: Kernels) {
    this.memory = memory;
    this.kernels = kernels;
  }

  /** Instantiates the kernels over a fresh memory. */
  static async create(): Promise<WasmRuntime> {
    const memory = new WebAssembly.Memory({ initial: HEAP_START / PAGE + 1, maximum: MAX_PAGES });
    const instance = await WebAssembly.instantiate(await kernelsModule(), { env: { memory } });
    return new WasmRuntime(memory, instance.exports as unknown as Kernels);
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
