// The operations the forward pass (engine/gemma3/forward.ts) is written in. A backend implements
// them over its own buffers: the WASM backend over pointers into linear memory; a WebGPU backend
// over GPU buffers. `A` is an activation buffer handle (f32), `W` a weight handle.

/** One layer's KV cache: `capacity` slots of [kvHeads][headDim] keys and values. */
export interface LayerCache<A> {
  keys: A;
  values: A;
  /** Slots; position p is stored in slot p % capacity. */
  capacity: number;
}

/** The kernels of a Gemma 3 forward pass. Shapes are in elements; buffers hold f32 rows. */
export interface Backend<A, W> {
  /** Whether rope and attention take buffers at an offset (from `offset`), so that the tokens of
   * several sequences can share one forward call (forwardBatch). */
  readonly batchesSequences: boolean;
  /** An f32 buffer of `floats` elements, zero-filled. */
  alloc(floats: number): A;
  /** Releases a buffer from `alloc`. */
  free(buffer: A): void;
  /** The same buffer starting `floats` elements later. */
  offset(buffer: A, floats: number): A;
  /** Copies token ids (as i32) into a buffer. */
  writeTokens(dst: A, ids: Int32Array): void;
  /** Copies `dst.length` floats from `src` into `dst`. */
  read(src: A, dst: Float32Array): Promise<void>;
  /** Copies `floats` floats from one buffer to another, where the backend keeps them (a
   * session's checkpoint of its sliding layers, and back). */
  copy(src: A, dst: A, floats: number): void;

  /** out[t] = table[ids[t]] * scale. */
  embed(table: W, ids: A, tokens: number, scale: number, out: A): void;
  /** out = x / rms(x) * (1 + w), for `rows` vectors of the weight's length. */
  rmsNorm(x: A, w: W, out: A, rows: number, eps: number): void;
  /** out[t] = W · x[t] for `tokens` rows of x. */
  matmul(w: W, x: A, out: A, tokens: number): void;
  /** Rotary embedding in place; token t sits at startPos + t. */
  rope(
    x: A,
    tokens: number,
    heads: number,
    headDim: number,
    startPos: number,
    base: number,
    factor: number,
  ): void;
  /** Attends over the cached positions and the chunk itself, then appends the chunk to the cache. */
  attention(
    q: A,
    k: A,
    v: A,
    cache: LayerCache<A>,
    out: A,
    tokens: number,
    startPos: number,
    shape: {
      heads: number;
      kvHeads: number;
      headDim: number;
      window: number;
      scale: number;
    },
  ): void;
  /** out = geluTanh(gate) * up. */
  geglu(gate: A, up: A, out: A, n: number): void;
  /** x += y. */
  add(x: A, y: A, n: number): void;
  /** Optional: the index of the largest of n values (the lowest on ties), computed where the
   * backend runs, so that greedy decoding reads back one id instead of the logits. Throws
   * NonFiniteLogitsError if a value is NaN (or, where the backend can tell, infinite). */
  argmax?(values: A, n: number): Promise<number>;
  /** Optional: the k largest of n values, best first (lowest index first on ties), with their
   * values, computed where the backend runs (for top-k sampling without reading the logits). */
  topK?(values: A, n: number, k: number): Promise<{ ids: number[]; values: number[] }>;
}

/** Logits that are not numbers (NaN, or infinite): damaged weights, or a config value that
 * overflows. Thrown by backends that look at the logits themselves (argmax, topK); the session
 * says which model files are at fault. */
export class NonFiniteLogitsError extends Error {
  constructor() {
    super("the model computed logits that are not finite numbers");
    this.name = "NonFiniteLogitsError";
  }
}
