// Batched decoding across sessions. Sessions of one model share its activations and take turns
// at it; a decode step (one token of one session) reads every weight from memory for a single
// token, and memory, not arithmetic, bounds it. When several sessions decode at once (a server's
// slots, or any concurrent generate calls) their steps wait here and go through the model as one
// chunk (forwardBatch): one pass over the weights for all of them. Each session gets the bits it
// would get alone (the products are batch-invariant), so batching is invisible but for speed.

import {
  type DecodeStep,
  forwardBatch,
  type ForwardContext,
  type KvCache,
  type TopK,
} from "./gemma3/forward.ts";
import { yieldToEventLoop } from "./io.ts";

/** How long a batch waits for the sequences of the previous one to come back with their next
 * step (their generate loops hand the last token to the caller and yield to the event loop
 * first; every 50 ms one of them yields through a timer, about 2 ms in Deno, and 2 ms of waiting
 * split batches of four about every other step). A sequence that has stopped costs the others
 * this once; then it is no longer waited for. A decode step takes 20-50 ms on the 270M. */
const GATHER_MS = 5;

interface Waiting<A> extends DecodeStep<A> {
  resolve(result: Float32Array | TopK): void;
  reject(error: unknown): void;
}

/** Counts of batched decoding, for metrics. */
export interface DecodeBatchStats {
  /** Decode steps run (one token of one session each). */
  steps: number;
  /** Forward passes they took: steps / batches is the mean batch. */
  batches: number;
}

/** Collects the decode steps of a model's sessions into batches of at most `maxBatch`. */
export class DecodeBatcher<A, W> {
  readonly #ctx: ForwardContext<A, W>;
  readonly #exclusive: <T>(fn: () => Promise<T>) => Promise<T>;
  readonly #maxBatch: number;
  #waiting: Waiting<A>[] = [];
  #flushQueued = false;
  /** The sequences of the last batch: the next one waits up to GATHER_MS for them. */
  #expected = new Set<KvCache<A>>();
  readonly stats: DecodeBatchStats = { steps: 0, batches: 0 };

  /** `exclusive` gives a turn at the model (shared with prompt evaluation); `maxBatch` bounds a
   * batch (the activations' chunk size; 1 where the backend cannot batch sequences). */
  constructor(
    ctx: ForwardContext<A, W>,
    exclusive: <T>(fn: () => Promise<T>) => Promise<T>,
    maxBatch: number,
  ) {
    this.#ctx = ctx;
    this.#exclusive = exclusive;
    this.#maxBatch = maxBatch;
  }

  /** Decodes one token of one sequence, in the next batch; resolves with its logits (in
   * `step.out` if given) or its candidates (`step.topK`). */
  step(step: DecodeStep<A>): Promise<Float32Array | TopK> {
    return new Promise((resolve, reject) => {
      this.#waiting.push({ ...step, resolve, reject });
      this.#queueFlush();
    });
  }

  /** Whether sequences other than `cache`'s are decoding now (waiting here, or in the last
   * batch): a session then leaves out prompt lookup's verify passes, which take the model alone,
   * and shares each pass over the weights with them instead. */
  othersDecoding(cache: KvCache<A>): boolean {
    for (const c of this.#expected) if (c !== cache) return true;
    return this.#waiting.some((w) => w.cache !== cache);
  }

  #queueFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    // Errors reach each step's promise; the turn itself never fails.
    void this.#exclusive(() => this.#flush());
  }

  /** All of the last batch's sequences are back, or a batch is full. */
  #gathered(): boolean {
    if (this.#waiting.length >= this.#maxBatch) return true;
    const back = new Set(this.#waiting.map((w) => w.cache));
    for (const cache of this.#expected) if (!back.has(cache)) return false;
    return true;
  }

  async #flush(): Promise<void> {
    const deadline = performance.now() + GATHER_MS;
    while (!this.#gathered() && performance.now() < deadline) await yieldToEventLoop();
    this.#flushQueued = false;
    // One step per sequence in a batch (a sequence's next step depends on this one's result).
    const batch: Waiting<A>[] = [];
    const taken = new Set<KvCache<A>>();
    this.#waiting = this.#waiting.filter((w) => {
      if (batch.length >= this.#maxBatch || taken.has(w.cache)) return true;
      batch.push(w);
      taken.add(w.cache);
      return false;
    });
    if (this.#waiting.length > 0) this.#queueFlush();
    this.#expected = taken;
    if (batch.length === 0) return;
    this.stats.steps += batch.length;
    this.stats.batches++;
    try {
      const results = await forwardBatch(this.#ctx, batch);
      batch.forEach((w, i) => {
        const r = results[i];
        if (r instanceof Error) w.reject(r);
        else w.resolve(r);
      });
    } catch (e) {
      for (const w of batch) w.reject(e);
    }
  }
}
