// The Gemma 3 forward pass, top to bottom.
//
// One call evaluates a chunk of new tokens at positions startPos.. and appends their keys and
// values to the KV cache. Every step is an op of the backend (engine/gemma3/backend.ts): the WASM
// backend runs each as one kernel of asm/kernels.ts. The config is data (engine/gemma3/config.ts); the
// weights come from the tensor-name map (engine/gemma3/weights.ts).
//
// A Gemma 3 block, as in the paper and Hugging Face's Gemma3DecoderLayer:
//
//   h = x + postAttnNorm(attention(inputNorm(x)))        "sandwich" norms: before and after
//   x = h + postFfnNorm(down(gelu(gate(n)) * up(n)))      with n = preFfnNorm(h)
//
// with per-head RMSNorm of queries and keys (q_norm, k_norm) before RoPE, five sliding-window
// layers for every global one, and RMSNorm weights applied as (1 + w).

import type { Backend, LayerCache } from "./backend.ts";
import { type Gemma3Config, layerAttention } from "./config.ts";
import type { ModelWeights } from "./weights.ts";

/** Scratch buffers for one chunk of up to `maxTokens` tokens (T below), reused by every call.
 * Shapes use the config's names: H = hiddenSize, I = intermediateSize, V = vocabSize, heads and
 * kvHeads of headDim each. */
export interface Activations<A> {
  maxTokens: number;
  /** Rows of logits computed per head pass when all positions' logits are wanted. */
  logitRows: number;
  /** The chunk's token ids, [T] (i32). */
  ids: A;
  /** The residual stream, [T][H]. */
  x: A;
  /** A normed copy of x fed to a sub-block, [T][H]. */
  h: A;
  /** Queries, [T][heads][headDim]. */
  q: A;
  /** Keys of the chunk, [T][kvHeads][headDim] (attention appends them to the cache). */
  k: A;
  /** Values of the chunk, [T][kvHeads][headDim]. */
  v: A;
  /** Attention output before o_proj, [T][heads * headDim]. */
  attn: A;
  /** A sub-block's output before it joins the residual stream, [T][H]. */
  o: A;
  /** The feed-forward gate, [T][I]; GeGLU writes gelu(gate) * up back into it. */
  gate: A;
  /** The feed-forward up projection, [T][I]. */
  up: A;
  /** Logits of `logitRows` positions, [logitRows][V]. */
  logits: A;
}

/** What every forward call reads: the backend that runs the ops, the config, the weights on that
 * backend, and the activation buffers (shared by all sequences of a model, one call at a time). */
export interface ForwardContext<A, W> {
  backend: Backend<A, W>;
  config: Gemma3Config;
  weights: ModelWeights<W>;
  activations: Activations<A>;
}

/** The KV cache of one sequence: one LayerCache per layer. */
export interface KvCache<A> {
  layers: LayerCache<A>[];
  /** Bytes held by keys and values. */
  bytes: number;
  /** The sliding layers' ring buffers: their window, their slots (window + SPARE_SLOTS), which
   * layers have one, and the floats of each ring's keys (and of its values); null when no
   * layer's ring wraps (the context fits in the window). */
  ring: { window: number; slots: number; layers: number[]; floats: number } | null;
}

/**
 * Slots a sliding layer's ring keeps beyond its window. Evaluating position q overwrites
 * position q - slots; with a ring of exactly the window, going back even one token (a drafted
 * token the model did not agree with, a regenerated answer's last token) would need positions
 * already gone, and the whole context evaluated again. With SPARE_SLOTS more, a sequence can go
 * back up to SPARE_SLOTS + 1 positions for free (cacheHoldsPrefix). For the 270M they cost 16
 * slots x 2 KiB x 15 sliding layers, about 0.5 MiB a session.
 */
export const SPARE_SLOTS = 16;

/**
 * Whether a cache that has evaluated positions 0..evaluated-1 still holds everything that
 * positions from `keep` on read (positions keep - window + 1 .. keep - 1 of the sliding layers),
 * so that the sequence can be cut back to `keep` tokens and go on without evaluating any again.
 * Evaluating position q overwrote q - slots in the ring.
 */
export function cacheHoldsPrefix<A>(cache: KvCache<A>, keep: number, evaluated: number): boolean {
  const ring = cache.ring;
  if (!ring || evaluated <= ring.slots) return true;
  const newestOverwritten = evaluated - 1 - ring.slots;
  return newestOverwritten < keep - ring.window + 1;
}

/** Activation buffers of a model: one chunk's worth. */
export function allocActivations<A, W>(
  b: Backend<A, W>,
  c: Gemma3Config,
  maxTokens: number,
): Activations<A> {
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  // All-position logits are computed a few rows at a time: a chunk of 64 rows × 262,144 would be
  // 64 MiB of scratch for a 262k vocabulary.
  const logitRows = Math.max(1, Math.min(maxTokens, Math.floor((16 << 20) / (4 * c.vocabSize))));
  return {
    maxTokens,
    logitRows,
    ids: b.alloc(maxTokens),
    x: b.alloc(maxTokens * c.hiddenSize),
    h: b.alloc(maxTokens * c.hiddenSize),
    q: b.alloc(maxTokens * qDim),
    k: b.alloc(maxTokens * kvDim),
    v: b.alloc(maxTokens * kvDim),
    attn: b.alloc(maxTokens * qDim),
    o: b.alloc(maxTokens * c.hiddenSize),
    gate: b.alloc(maxTokens * c.intermediateSize),
    up: b.alloc(maxTokens * c.intermediateSize),
    logits: b.alloc(logitRows * c.vocabSize),
  };
}

/** Frees the buffers of allocActivations. */
export function freeActivations<A, W>(b: Backend<A, W>, act: Activations<A>): void {
  const { ids, x, h, q, k, v, attn, o, gate, up, logits } = act;
  for (const buffer of [ids, x, h, q, k, v, attn, o, gate, up, logits]) b.free(buffer);
}

/**
 * A KV cache for `contextLength` positions. Full-attention layers keep every position;
 * sliding-window layers keep only the last `slidingWindow` (a ring buffer), which is why the
 * 270M model's cache is small even at long contexts.
 */
export function allocKvCache<A, W>(
  b: Backend<A, W>,
  c: Gemma3Config,
  contextLength: number,
): KvCache<A> {
  const kvDim = c.numKvHeads * c.headDim;
  const layers: LayerCache<A>[] = [];
  let bytes = 0;
  let ring: KvCache<A>["ring"] = null;
  for (let l = 0; l < c.numLayers; l++) {
    const { window } = layerAttention(c, l);
    const capacity = window > 0 ? Math.min(window + SPARE_SLOTS, contextLength) : contextLength;
    layers.push({ keys: b.alloc(capacity * kvDim), values: b.alloc(capacity * kvDim), capacity });
    bytes += 2 * capacity * kvDim * 4;
    if (capacity < contextLength) {
      ring ??= { window, slots: capacity, layers: [], floats: capacity * kvDim };
      ring.layers.push(l);
    }
  }
  return { layers, bytes, ring };
}

/** Frees a KV cache's buffers. */
export function freeKvCache<A, W>(b: Backend<A, W>, cache: KvCache<A>): void {
  for (const l of cache.layers) {
    b.free(l.keys);
    b.free(l.values);
  }
}

/** Final norm and the output head (the embedding table, when tied) for `rows` positions from t,
 * into activations.logits. Only rows wanted are computed: the head is the largest matrix of the
 * 270M. */
function head<A, W>(ctx: ForwardContext<A, W>, t: number, rows: number): void {
  const { backend: b, config: c, weights: w, activations: act } = ctx;
  b.rmsNorm(b.offset(act.x, t * c.hiddenSize), w.finalNorm, act.h, rows, c.rmsNormEps);
  b.matmul(w.lmHead, act.h, act.logits, rows);
}

/**
 * Runs the model on `ids` like `forward` and returns, computed by the backend, the greedy next
 * token (k = 1: the argmax of the last position's logits) or the k best candidates with their
 * logits: only those come back, not the logits.
 */
export async function forwardTopK<A, W>(
  ctx: ForwardContext<A, W>,
  cache: KvCache<A>,
  ids: Int32Array,
  startPos: number,
  k: number,
): Promise<TopK> {
  await forward(ctx, cache, ids, startPos, "none");
  head(ctx, ids.length - 1, 1);
  return await backendTopK(ctx, 0, k);
}

/** The k best of the logits in row `row` of activations.logits, found by the backend. */
async function backendTopK<A, W>(ctx: ForwardContext<A, W>, row: number, k: number): Promise<TopK> {
  const { backend: b, config: c, activations: act } = ctx;
  const logits = b.offset(act.logits, row * c.vocabSize);
  if (k === 1 && b.argmax) return { ids: [await b.argmax(logits, c.vocabSize)], values: [] };
  if (!b.topK) throw new Error("this backend has no top-k");
  return await b.topK(logits, c.vocabSize, k);
}

/**
 * Runs `ids` like `forward` (at most activations.maxTokens of them), then hands `take` the rows
 * from row `from` on, one at a time, for as long as it asks for the next: each row's logits (in
 * `out`, reused) or, with `topK`, its candidates found by the backend. A pass that verifies
 * drafted tokens so computes the head, the 270M's largest matrix, only as far as the answer may
 * reach: the first row alone (the draft's first token is often wrong), then the rest together
 * (a product reads the weights once for several rows). Each row's bits are those of the token
 * evaluated alone.
 */
export async function forwardRows<A, W>(
  ctx: ForwardContext<A, W>,
  cache: KvCache<A>,
  ids: Int32Array,
  startPos: number,
  from: number,
  take: (row: Float32Array | TopK) => boolean,
  want: { out: Float32Array } | { topK: number },
): Promise<void> {
  const { backend: b, config: c, activations: act } = ctx;
  layers(ctx, ids, [{ cache, first: 0, tokens: ids.length, startPos }]);
  for (let t = from; t < ids.length;) {
    const rows = t === from ? 1 : Math.min(act.logitRows, ids.length - t);
    head(ctx, t, rows);
    for (let r = 0; r < rows; r++, t++) {
      let row: Float32Array | TopK;
      if ("topK" in want) row = await backendTopK(ctx, r, want.topK);
      else {
        await b.read(b.offset(act.logits, r * c.vocabSize), want.out);
        row = want.out;
      }
      if (!take(row)) return;
    }
  }
}

/** Candidate tokens, best first, with their logits (empty for an argmax). */
export interface TopK {
  ids: number[];
  values: number[];
}

/** What a forward call returns: no logits, the last position's, or every position's. */
export type LogitsWanted = "none" | "last" | "all";

/** The part of a forward call that belongs to one sequence: its cache, and its tokens' place in
 * the call's rows (first, count) and in the sequence (startPos..). */
interface Segment<A> {
  cache: KvCache<A>;
  first: number;
  tokens: number;
  startPos: number;
}

/**
 * Runs the model on `ids` (at most activations.maxTokens of them) at positions startPos.., appending to
 * the cache, and returns the requested logits ([tokens][vocab] for "all"), in `out` if given.
 */
export async function forward<A, W>(
  ctx: ForwardContext<A, W>,
  cache: KvCache<A>,
  ids: Int32Array,
  startPos: number,
  want: LogitsWanted,
  out?: Float32Array,
): Promise<Float32Array> {
  const { backend: b, config: c, activations: act } = ctx;
  const T = ids.length;
  layers(ctx, ids, [{ cache, first: 0, tokens: T, startPos }]);

  if (want === "none") return new Float32Array(0);
  const first = want === "last" ? T - 1 : 0;
  const logits = out ?? new Float32Array((T - first) * c.vocabSize);
  for (let t = first; t < T; t += act.logitRows) {
    const rows = Math.min(act.logitRows, T - t);
    head(ctx, t, rows);
    await b.read(
      act.logits,
      logits.subarray((t - first) * c.vocabSize, (t - first + rows) * c.vocabSize),
    );
  }
  return logits;
}

/** One sequence's next token in a batched decode step: where its logits go (`out`, [vocab]), or
 * `topK` candidates found by the backend instead. */
export interface DecodeStep<A> {
  cache: KvCache<A>;
  id: number;
  position: number;
  out?: Float32Array;
  topK?: number;
}

/**
 * One decode step for several sequences at once (at most activations.maxTokens): token i of the
 * chunk is steps[i].id at steps[i].position of its own cache. The matrix products see all the
 * tokens as one chunk, so each weight is read from memory once for all of them; rotary embedding
 * and attention run per sequence. A chunk's rows are computed exactly as each token alone (the
 * products' batch invariance), so every sequence gets the same bits as decoding by itself.
 * Returns each step's logits (in its `out`, or a new array) or candidates, or the error of a
 * step whose backend top-k refused its logits (NonFiniteLogitsError).
 */
export async function forwardBatch<A, W>(
  ctx: ForwardContext<A, W>,
  steps: DecodeStep<A>[],
): Promise<(Float32Array | TopK | Error)[]> {
  const { backend: b, config: c, activations: act } = ctx;
  const B = steps.length;
  if (new Set(steps.map((s) => s.cache)).size !== B) {
    throw new Error("a batched decode step has two tokens of one sequence");
  }
  const ids = Int32Array.from(steps, (s) => s.id);
  layers(
    ctx,
    ids,
    steps.map((s, i) => ({ cache: s.cache, first: i, tokens: 1, startPos: s.position })),
  );

  const results: (Float32Array | TopK | Error)[] = [];
  for (let t = 0; t < B; t += act.logitRows) {
    const rows = Math.min(act.logitRows, B - t);
    head(ctx, t, rows);
    for (let r = 0; r < rows; r++) {
      const step = steps[t + r];
      if (step.topK !== undefined) {
        // Non-finite logits fail this step only: the other rows are computed as if alone.
        results.push(await backendTopK(ctx, r, step.topK).catch((e) => e as Error));
      } else {
        const logits = step.out ?? new Float32Array(c.vocabSize);
        await b.read(b.offset(act.logits, r * c.vocabSize), logits);
        results.push(logits);
      }
    }
  }
  return results;
}

/**
 * The embedding and every layer, for a chunk of `ids` made of one or more sequences' segments
 * (in row order): matrix products, norms and the feed-forward run over all rows at once; rotary
 * embedding and attention per segment, at its positions and with its cache. Leaves the residual
 * stream in activations.x.
 */
function layers<A, W>(ctx: ForwardContext<A, W>, ids: Int32Array, segments: Segment<A>[]): void {
  const { backend: b, config: c, weights: w, activations: act } = ctx;
  const T = ids.length;
  const { hiddenSize: H, numHeads, numKvHeads, headDim, rmsNormEps: eps } = c;
  const qDim = numHeads * headDim, kvDim = numKvHeads * headDim;
  const attnShape = {
    heads: numHeads,
    kvHeads: numKvHeads,
    headDim,
    scale: c.queryPreAttnScalar ** -0.5,
  };

  // Embedding, scaled by sqrt(hidden_size) rounded to the activation dtype (f32).
  b.writeTokens(act.ids, ids);
  b.embed(w.embedTokens, act.ids, T, Math.fround(Math.sqrt(H)), act.x);

  for (let l = 0; l < c.numLayers; l++) {
    const lw = w.layers[l];
    const { window, ropeBase, ropeFactor } = layerAttention(c, l);

    // --- Attention sub-block ---
    b.rmsNorm(act.x, lw.inputNorm, act.h, T, eps);
    b.matmul(lw.qProj, act.h, act.q, T);
    b.matmul(lw.kProj, act.h, act.k, T);
    b.matmul(lw.vProj, act.h, act.v, T);
    // Gemma 3 normalises each query and key head (replacing Gemma 2's logit soft-capping).
    b.rmsNorm(act.q, lw.qNorm, act.q, T * numHeads, eps);
    b.rmsNorm(act.k, lw.kNorm, act.k, T * numKvHeads, eps);
    for (const { cache, first, tokens, startPos } of segments) {
      const q = b.offset(act.q, first * qDim), k = b.offset(act.k, first * kvDim);
      // Local layers rotate with a 10k base; global layers with 1M (and linear scaling if set).
      b.rope(q, tokens, numHeads, headDim, startPos, ropeBase, ropeFactor);
      b.rope(k, tokens, numKvHeads, headDim, startPos, ropeBase, ropeFactor);
      const v = b.offset(act.v, first * kvDim), attn = b.offset(act.attn, first * qDim);
      b.attention(q, k, v, cache.layers[l], attn, tokens, startPos, { ...attnShape, window });
    }
    b.matmul(lw.oProj, act.attn, act.o, T);
    b.rmsNorm(act.o, lw.postAttentionNorm, act.o, T, eps);
    b.add(act.x, act.o, T * H);

    // --- Feed-forward sub-block (GeGLU) ---
    b.rmsNorm(act.x, lw.preFeedforwardNorm, act.h, T, eps);
    b.matmul(lw.gateProj, act.h, act.gate, T);
    b.matmul(lw.upProj, act.h, act.up, T);
    b.geglu(act.gate, act.up, act.gate, T * c.intermediateSize);
    b.matmul(lw.downProj, act.gate, act.o, T);
    b.rmsNorm(act.o, lw.postFeedforwardNorm, act.o, T, eps);
    b.add(act.x, act.o, T * H);
  }
}
