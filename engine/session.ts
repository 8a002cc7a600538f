// A session is one sequence being evaluated: its KV cache, its position, and generation.

import {
  allocKvCache,
  cacheHoldsPrefix,
  type DecodeStep,
  forward,
  type ForwardContext,
  forwardRows,
  forwardTopK,
  freeKvCache,
  type KvCache,
  type TopK,
} from "./gemma3/forward.ts";
import {
  checkTopLogprobs,
  logprobsOf,
  Sampler,
  type SamplingOptions,
  type TokenLogprob,
} from "./sampling.ts";
import { isGgufLocation, yieldToEventLoop } from "./io.ts";
import { NonFiniteLogitsError } from "./gemma3/backend.ts";
import { compileConstraint, type ConstraintOptions } from "./grammar/constraint.ts";
import { GrammarMatcher, tokenTrie, type Vocabulary } from "./grammar/matcher.ts";
import {
  draftFromContext,
  DraftLength,
  lookupSettings,
  type SpeculativeOptions,
} from "./prompt_lookup.ts";

/** When a session snapshots its sliding layers (`SessionOptions.checkpoints`). */
export interface CheckpointOptions {
  /** Memory the snapshots may take, in bytes (default 64 MiB; 0: none). One holds every sliding
   * layer's ring: 15.5 MiB for the 270M (f32, as the cache keeps them: the bits must come back
   * exactly). Past the budget, the one used least recently goes. */
  budgetBytes?: number;
  /** Also one every this many positions of a long evaluation (default 512; 0: only at the
   * ends of turns). None is taken before position 64, nor where the whole context fits in the
   * sliding window (nothing is ever overwritten there). */
  every?: number;
}

/** CheckpointOptions' defaults. */
export const CHECKPOINT_DEFAULTS: Required<CheckpointOptions> = {
  budgetBytes: 64 << 20,
  every: 512,
};

/** No checkpoint before this position: evaluating that much again is one chunk's pass, not
 * worth a snapshot of every ring (15.5 MiB for the 270M). */
const CHECKPOINT_MIN_POSITION = 64;

/** A snapshot of a session's sliding-layer rings after its first `position` tokens. */
interface Checkpoint {
  position: number;
  /** The session's #written then (the rings' state includes what it says was overwritten). */
  written: number;
  /** Keys and values of each ring layer, in KvCache.ring.layers' order. */
  buffers: unknown[];
  /** When it was taken or last restored (a counter): the least recent goes first. */
  used: number;
}

/** Options of `Session.eval`. */
export interface EvalOptions {
  /** "last" (default): the last token's logits, [vocab]. "all": every token's, [tokens × vocab]. */
  logits?: "last" | "all";
  /** Write the logits here instead of a new array (its length must match), e.g. to reuse one
   * array per step: a fresh 1 MB array per token costs page faults. */
  out?: Float32Array;
}

/** Options of `Session.generate`: sampling, constraints, and when to stop. */
export interface GenerateOptions extends SamplingOptions, ConstraintOptions {
  /** Generate at most this many tokens (default: until a stop token or a full context). */
  maxTokens?: number;
  /** Token ids that end generation; the stop token is not yielded. Default: the model's EOS ids. */
  stopTokens?: number[];
  /** Called with each token before it is yielded, and the logits it was drawn from (before any
   * sampling filter; the array is reused for the next step: copy what you keep). Setting it keeps
   * the logits on the CPU even where the backend could pick tokens itself. */
  onLogits?: (logits: Float32Array, id: number) => void;
  /** Report each generated token's log-probability and this many most likely alternatives
   * (0 to 20) in the result (`GenerationEnd.logprobs`). */
  logprobs?: number;
  /** Speculative decoding: `{ lookup: { n, k } }` drafts up to k tokens from where the last n
   * tokens appeared earlier in the context (prompt lookup) and verifies them in one pass. The
   * tokens are exactly those without it; only the speed differs (faster where the answer copies
   * the prompt). */
  speculative?: SpeculativeOptions;
}

/** Why generation ended: "end_of_turn": a stop token came (<end_of_turn>, <eos>, or one of
 * `stopTokens`), or the grammar was matched to its end; "stop": the text reached a stop string;
 * "length": `maxTokens` were generated, or the context is full. */
export type FinishReason = "end_of_turn" | "stop" | "length";

/** What `Session.generate` returns when it is done (the async generator's return value). */
export interface GenerationEnd {
  /** Why it ended. */
  finishReason: FinishReason;
  /** Tokens generated (yielded). */
  tokens: number;
  /** With `logprobs`: one entry per generated token. */
  logprobs?: TokenLogprob[];
  /** With `speculative`: tokens drafted, drafted tokens the model agreed with (each saved a
   * forward pass), and passes that verified a draft. */
  speculative?: { drafted: number; accepted: number; passes: number };
}

/** What a session needs from its model (the forward pass's context and a turn at it); shared by
 * all sessions of the model. */
export interface SessionHost<A, W> extends ForwardContext<A, W> {
  /** Runs `fn` when no other evaluation of the model is running (they share activations). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** One decode step, run in a batch with other sessions' steps (engine/decode_batcher.ts). */
  decode(step: DecodeStep<unknown>): Promise<Float32Array | TopK>;
  /** Whether other sessions than the one with `cache` are decoding (DecodeBatcher). */
  othersDecoding(cache: KvCache<unknown>): boolean;
  /** Called by dispose(). */
  release(session: Session): void;
  /** The tokenizer's vocabulary, for grammar-constrained generation (absent without one). */
  vocabulary?: Vocabulary;
  /** Where the weights came from (a path or URL), for messages about them. */
  source?: string;
}

/** One sequence: a KV cache, its position, evaluation and generation. */
export class Session {
  readonly #host: SessionHost<unknown, unknown>;
  #cache: KvCache<unknown> | null;
  /** Tokens in the context, in order; the last `#pending` of them are not evaluated yet. */
  #tokens: number[] = [];
  /** Tokens yielded by generate() but not run through the model yet (they will be, first). */
  #pending: number[] = [];
  #lastLogits: Float32Array | null = null;
  /** Positions 0..#written-1 have been written to the cache since it was last empty (some may
   * be past the context: a draft's tokens the model did not agree with, a truncated answer);
   * what the sliding layers' rings have overwritten follows from it (cacheHoldsPrefix). */
  #written = 0;
  /** Snapshots of the sliding layers, by position (each valid while the tokens before it are
   * unchanged: a truncate drops those past its length). */
  #checkpoints: Checkpoint[] = [];
  readonly #checkpointBudget: number;
  readonly #checkpointEvery: number;
  #checkpointClock = 0;
  /** The end of this session's last call: its calls run one after another. */
  #turn: Promise<unknown> = Promise.resolve();

  /** The most tokens this session's context can hold. */
  readonly contextLength: number;

  /** @internal Use `model.createSession()`. */
  constructor(
    host: SessionHost<unknown, unknown>,
    contextLength: number,
    checkpoints: CheckpointOptions = {},
  ) {
    const { budgetBytes, every } = { ...CHECKPOINT_DEFAULTS, ...checkpoints };
    if (!Number.isInteger(budgetBytes) || budgetBytes < 0) {
      throw new RangeError(`checkpoints.budgetBytes must be an integer >= 0, got ${budgetBytes}`);
    }
    if (!Number.isInteger(every) || every < 0) {
      throw new RangeError(`checkpoints.every must be an integer >= 0, got ${every}`);
    }
    this.#host = host;
    this.contextLength = contextLength;
    this.#checkpointBudget = budgetBytes;
    this.#checkpointEvery = every;
    this.#cache = allocKvCache(host.backend, host.config, contextLength);
  }

  /** Positions this session holds sliding-layer checkpoints at, in order. */
  get checkpointPositions(): number[] {
    return this.#checkpoints.map((c) => c.position).sort((a, b) => a - b);
  }

  /** Bytes held by checkpoints (at most `checkpoints.budgetBytes`). */
  get checkpointBytes(): number {
    return this.#checkpoints.length * this.#oneCheckpointBytes();
  }

  /** Bytes of one checkpoint: keys and values of every ring (0 without rings). */
  #oneCheckpointBytes(): number {
    const ring = this.#cache?.ring;
    return ring ? ring.layers.length * 2 * ring.floats * 4 : 0;
  }

  /** Snapshots the rings after the first `position` tokens (all evaluated, none since), within
   * the budget; never fails the evaluation it is part of (no memory: no checkpoint). */
  #takeCheckpoint(position: number): void {
    const cache = this.#live(), ring = cache.ring, b = this.#host.backend;
    if (!ring || this.#checkpoints.some((c) => c.position === position)) return;
    const bytes = this.#oneCheckpointBytes();
    if (bytes > this.#checkpointBudget) return;
    while (this.checkpointBytes + bytes > this.#checkpointBudget) {
      const oldest = this.#checkpoints.reduce((a, c) => (c.used < a.used ? c : a));
      this.#dropCheckpoint(oldest);
    }
    const buffers: unknown[] = [];
    try {
      for (const l of ring.layers) {
        for (const src of [cache.layers[l].keys, cache.layers[l].values]) {
          const dst = b.alloc(ring.floats);
          buffers.push(dst);
          b.copy(src, dst, ring.floats);
        }
      }
    } catch {
      for (const buffer of buffers) b.free(buffer);
      return;
    }
    this.#checkpoints.push({
      position,
      written: this.#written,
      buffers,
      used: ++this.#checkpointClock,
    });
  }

  #dropCheckpoint(c: Checkpoint): void {
    for (const buffer of c.buffers) this.#host.backend.free(buffer);
    this.#checkpoints.splice(this.#checkpoints.indexOf(c), 1);
  }

  /** Puts a checkpoint's rings back: the cache is as it was after its first c.position tokens
   * (the full layers hold those positions still: they never wrap). */
  #restoreCheckpoint(c: Checkpoint): void {
    const cache = this.#live(), ring = cache.ring!, b = this.#host.backend;
    let i = 0;
    for (const l of ring.layers) {
      b.copy(c.buffers[i++], cache.layers[l].keys, ring.floats);
      b.copy(c.buffers[i++], cache.layers[l].values, ring.floats);
    }
    this.#written = c.written;
    c.used = ++this.#checkpointClock;
  }

  /** Where #evaluateChunks takes checkpoints, evaluating `count` tokens from `start`: the end of
   * what was there (the end of the last turn), before the last token (a regenerated answer goes
   * back to there: reusePrefix keeps at least one token to evaluate), and every
   * `checkpoints.every` positions. */
  #checkpointPlan(start: number, count: number): number[] {
    if (!this.#cache?.ring || this.#checkpointBudget === 0 || count < 2) return [];
    const at = new Set([start, start + count - 1]);
    const every = this.#checkpointEvery;
    if (every > 0) {
      for (let p = Math.ceil((start + 1) / every) * every; p < start + count; p += every) at.add(p);
    }
    return [...at].filter((p) => p >= CHECKPOINT_MIN_POSITION).sort((a, b) => a - b);
  }

  /** Tokens in the context so far (the position the next token will take). */
  get position(): number {
    return this.#tokens.length;
  }

  /** Tokens of the context whose keys and values are in the cache; the rest of `tokens` (the
   * last generated token, or tokens a truncate must evaluate again) go through the model with
   * the next call. */
  get evaluatedTokens(): number {
    return this.#tokens.length - this.#pending.length;
  }

  /** Bytes of memory held by this session's KV cache. */
  get kvBytes(): number {
    return this.#live().bytes;
  }

  #live(): KvCache<unknown> {
    if (!this.#cache) throw new Error("this session has been disposed");
    return this.#cache;
  }

  /** Runs `fn` after this session's earlier calls have finished (a call reads the position the
   * one before it leaves). */
  #inTurn<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#turn.then(fn);
    this.#turn = run.catch(() => {});
    return run;
  }

  #checkIds(ids: ArrayLike<number>): Int32Array {
    if (ids === null || typeof ids !== "object" || typeof ids.length !== "number") {
      throw new TypeError("token ids must be an array of integers");
    }
    if (ids.length === 0) throw new Error("no tokens to evaluate: the token list is empty");
    const vocab = this.#host.config.vocabSize;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new RangeError(
          `token id ${id} at index ${i} is outside the vocabulary (0..${vocab - 1})`,
        );
      }
    }
    const total = this.position + ids.length;
    if (total > this.contextLength) {
      throw new RangeError(
        `${ids.length} tokens at position ${this.position} need ${total} positions, more than the ` +
          `context length ${this.contextLength} (reset() the session or create it with a larger contextLength)`,
      );
    }
    return Int32Array.from(ids);
  }

  /**
   * Appends tokens to the context and returns logits: the last token's ([vocab]) or, with
   * `{ logits: "all" }`, every given token's ([tokens × vocab], row-major).
   * Invalid input throws before anything changes, so the session stays usable.
   */
  async eval(ids: ArrayLike<number>, options: EvalOptions = {}): Promise<Float32Array> {
    this.#live();
    const want = options.logits ?? "last";
    if (want !== "last" && want !== "all") {
      throw new Error(`logits must be "last" or "all", got ${JSON.stringify(want)}`);
    }
    const newIds = this.#checkIds(ids);
    const { config } = this.#host;
    const out = options.out;
    if (out !== undefined) {
      const need = (want === "all" ? newIds.length : 1) * config.vocabSize;
      if (!(out instanceof Float32Array) || out.length !== need) {
        throw new RangeError(`out must be a Float32Array of ${need} floats`);
      }
    }
    return await this.#inTurn(async () => {
      const result = await this.#evaluate(newIds, want, out) as Float32Array;
      this.#checkFinite(result, want === "all");
      this.#lastLogits = result.subarray(result.length - config.vocabSize);
      return result;
    });
  }

  /** Weights that are damaged (or a format decoded wrongly) show up as NaN or infinity in the
   * logits: said at once, with the file, rather than as a sampler's puzzle later. */
  #checkFinite(logits: Float32Array, rows = false): void {
    const vocab = this.#host.config.vocabSize;
    for (let i = 0; i < logits.length; i++) {
      if (!Number.isFinite(logits[i])) {
        throw this.#nonFinite(
          `${logits[i]} (logit ${i % vocab}${rows ? ` of token ${Math.floor(i / vocab)}` : ""})`,
        );
      }
    }
  }

  /** The error for logits that are not finite (`what`: which value and where). */
  #nonFinite(what: string): Error {
    // A config value can do it too (query_pre_attn_scalar 1e-300 scales scores to infinity); a
    // folder's config is config.json, a GGUF's is in the file.
    const source = this.#host.source;
    const files = source === undefined
      ? "the model's files"
      : isGgufLocation(source)
      ? source
      : `${source} (its weights, or config.json)`;
    return new Error(
      `the model computed ${what}: its weights or its config give non-finite values; ` +
        `${files} may be damaged`,
    );
  }

  /**
   * Runs pending tokens and then newIds through the model, chunk by chunk, and returns the
   * logits asked for, or with { topK } the k best candidates (k = 1: the argmax), found by the
   * backend. A single token (a decode step) goes in a batch with other sessions' steps.
   */
  async #evaluate(
    newIds: Int32Array,
    want: "last" | "all" | { topK: number },
    out?: Float32Array,
  ): Promise<Float32Array | TopK> {
    const cache = this.#live();
    const host = this.#host;
    // Generated tokens not yet evaluated go first; their logits are not returned.
    const pending = this.#pending.length;
    const all = new Int32Array(pending + newIds.length);
    all.set(this.#pending);
    all.set(newIds, pending);
    const start = this.#tokens.length - pending;
    const decodeStep = all.length === 1 && want !== "all";
    if (decodeStep) this.#written = Math.max(this.#written, start + 1);
    const result = decodeStep
      ? await host.decode({
        cache,
        id: all[0],
        position: start,
        out,
        topK: typeof want === "object" ? want.topK : undefined,
      })
      : await host.exclusive(() => this.#evaluateChunks(cache, all, start, pending, want, out));
    this.#pending = [];
    this.#tokens.push(...newIds);
    this.#lastLogits = null;
    return result;
  }

  /** #evaluate's tokens `all` from position `start`, chunk by chunk, in one turn at the model;
   * the first `pending` are generated tokens whose logits are not returned. */
  async #evaluateChunks(
    cache: KvCache<unknown>,
    all: Int32Array,
    start: number,
    pending: number,
    want: "last" | "all" | { topK: number },
    out?: Float32Array,
  ): Promise<Float32Array | TopK> {
    const host = this.#host;
    const { config, activations } = host;
    const rows: Float32Array[] = [];
    let best: TopK | null = null;
    const checkpoints = this.#checkpointPlan(start, all.length);
    let sinceYield = 0;
    for (let i = 0; i < all.length;) {
      // A long prompt is many chunks: let the event loop run between them.
      if (sinceYield >= activations.maxTokens) {
        await yieldToEventLoop();
        sinceYield = 0;
      }
      // Chunks end where checkpoints go (a token's bits do not depend on its chunk).
      if (checkpoints[0] === start) this.#takeCheckpoint(checkpoints.shift()!);
      const end = Math.min(
        i + activations.maxTokens,
        all.length,
        (checkpoints[0] ?? Infinity) - start + i,
      );
      const chunk = all.subarray(i, end);
      i = end;
      sinceYield += chunk.length;
      this.#written = Math.max(this.#written, start + chunk.length);
      const isLast = end === all.length;
      if (typeof want === "object" && isLast) {
        best = await forwardTopK(host, cache, chunk, start, want.topK);
      } else {
        const chunkWant = want === "all" ? "all" : isLast ? "last" : "none";
        const into = want === "last" && isLast ? out : undefined;
        const got = await forward(host, cache, chunk, start, chunkWant, into);
        if (want === "all") {
          // Drop the rows of pending tokens, which belong to an earlier call.
          const skip = Math.max(0, pending - (end - chunk.length));
          rows.push(skip ? got.subarray(skip * config.vocabSize) : got);
        } else if (isLast) rows.push(got);
      }
      start += chunk.length;
    }
    if (best) return best;
    let result = rows.length === 1 ? rows[0] : concat(rows);
    if (out && result !== out) {
      out.set(result);
      result = out;
    }
    return result;
  }

  /** Evaluates ids and returns the k best candidates for the next token, found by the backend
   * (k = 1: the argmax). */
  async #evalOnBackend(ids: ArrayLike<number>, k: number): Promise<TopK> {
    const newIds = this.#checkIds(ids);
    return await this.#inTurn(() => this.#evaluate(newIds, { topK: k }))
      .catch((e) => this.#rethrowNonFinite(e)) as TopK;
  }

  /** A backend's NonFiniteLogitsError (from its argmax or top-k) as the session says it, with
   * the model's files; any other error as it is. */
  #rethrowNonFinite(e: unknown): never {
    throw e instanceof NonFiniteLogitsError ? this.#nonFinite("logits that are not numbers") : e;
  }

  /**
   * Evaluates `promptIds` (which may be empty to continue from the last evaluation) and yields
   * generated token ids one by one. Each yielded token becomes part of the context. Stops at a
   * stop token (not yielded), after `maxTokens`, when the context is full, or where a grammar
   * (`jsonSchema`, `grammar`) is complete; returns why (`GenerationEnd`).
   *
   * With a grammar, the sampled token is checked first; only when the grammar refuses it are
   * the refused tokens masked out and a token drawn again, from the rest (the same distribution
   * as masking first, at the cost of one check per token). Stop tokens are allowed exactly where
   * the grammar may end.
   *
   * With `speculative: { lookup }`, a pass evaluates the last token together with a draft of
   * the tokens that followed the same n-gram earlier in the context, and the answer takes the
   * model's tokens for as long as they agree with the draft: several tokens per pass where the
   * answer copies its prompt, and exactly the tokens it would give without drafts.
   */
  async *generate(
    promptIds: ArrayLike<number>,
    options: GenerateOptions = {},
  ): AsyncGenerator<number, GenerationEnd> {
    this.#live();
    const sampler = new Sampler(options);
    const max = options.maxTokens ?? Infinity;
    if (max !== Infinity && (!Number.isInteger(max) || max < 0)) {
      throw new Error(`maxTokens must be an integer >= 0, got ${options.maxTokens}`);
    }
    const topLogprobs = options.logprobs;
    checkTopLogprobs(topLogprobs);
    const lookup = lookupSettings(options.speculative);
    const draftLength = new DraftLength();
    const stopIds = options.stopTokens ?? this.#host.config.eosTokenIds;
    const stop = new Set(stopIds);
    const grammar = compileConstraint(options);
    let matcher: GrammarMatcher | undefined;
    if (grammar) {
      const vocab = this.#host.vocabulary;
      if (!vocab) {
        throw new Error("constrained generation needs the model's tokenizer, and it has none");
      }
      matcher = new GrammarMatcher(grammar, tokenTrie(vocab), stop);
    }
    const logprobs: TokenLogprob[] | undefined = topLogprobs === undefined ? undefined : [];
    const drafts = lookup ? { drafted: 0, accepted: 0, passes: 0 } : undefined;
    const end = (finishReason: FinishReason, tokens: number): GenerationEnd => ({
      finishReason,
      tokens,
      ...logprobs && { logprobs },
      ...drafts && { speculative: drafts },
    });
    // Greedy or top-k decoding on a backend that finds the best tokens itself (WebGPU): only the
    // candidates come back, not the logits. Otherwise one logits array serves every step (a
    // fresh 1 MB array per token costs page faults).
    const b = this.#host.backend;
    const k = options.onLogits || matcher || logprobs
      ? 0
      : sampler.greedy && b.argmax
      ? 1
      : sampler.topKOnly > 0 && b.topK
      ? sampler.topKOnly
      : 0;
    const vocabSize = this.#host.config.vocabSize;
    const step = k > 0 ? undefined : new Float32Array(vocabSize);
    const masked = matcher ? new Float32Array(vocabSize) : undefined;
    /** The logits the next token is drawn from (null when the backend picks it). */
    let current: Float32Array | null = null;
    /** The next token from logits: sampled, then (with a grammar) checked, and drawn again from
     * the allowed tokens when the grammar refuses it. */
    const choose = (logits: Float32Array): number => {
      const id = sampler.sample(logits, this.#tokens);
      return matcher ? enforceGrammar(matcher, id, logits, masked!, sampler, this.#tokens) : id;
    };
    /** The next token from the backend's k best candidates (k = 1: greedy). */
    const chooseAmong = (best: TopK): number =>
      k === 1 ? best.ids[0] : sampler.sampleCandidates(best.ids, best.values);
    /** Evaluates ids; the result picks the token that follows them (sampling from logits only
     * when a token is wanted). */
    const next = async (ids: ArrayLike<number>): Promise<() => number> => {
      if (k > 0) {
        const best = await this.#evalOnBackend(ids, k);
        return () => chooseAmong(best);
      }
      const logits = current = await this.eval(ids, { out: step });
      return () => choose(logits);
    };

    let pick: () => number;
    if (promptIds.length > 0) pick = await next(promptIds);
    else if (this.#lastLogits && this.#pending.length === 0) {
      const logits = current = this.#lastLogits;
      pick = () => choose(logits);
    } else if (this.#pending.length > 0) {
      const last = this.#pending.pop()!;
      this.#tokens.pop();
      pick = await next([last]);
    } else throw new Error("nothing to continue from: give prompt tokens");

    /** Tokens decided so far; the context ends with them. */
    let decidedCount = 0;
    /** The token `pickToken` gives joins the context, or the reason generation ends instead. */
    const decide = (pickToken: () => number): number | FinishReason => {
      if (decidedCount >= max || this.position >= this.contextLength) return "length";
      const id = pickToken();
      if (stop.has(id)) return "end_of_turn";
      if (options.onLogits && current) options.onLogits(current, id);
      if (logprobs && current) logprobs.push(logprobsOf(current, id, topLogprobs!));
      matcher?.accept(id);
      // The token joins the context now; it is evaluated when the caller asks for the next one
      // (or by the next eval), so stopping early costs no extra forward pass.
      this.#tokens.push(id);
      this.#pending.push(id);
      this.#lastLogits = null;
      decidedCount++;
      return id;
    };
    /** One forward pass from the last decided token: the tokens it decides (or why it ends). */
    const forwardOnce = async (): Promise<(number | FinishReason)[]> => {
      const host = this.#host;
      const room = Math.min(
        host.activations.maxTokens - this.#pending.length,
        this.contextLength - this.position,
        max - decidedCount - 1,
      );
      // No drafts while other sessions decode: a verify pass takes the model alone, where their
      // steps and this one share each pass over the weights (the tokens are the same either way).
      const drafting = lookup && room > 0 && !host.othersDecoding(this.#live());
      const length = drafting ? draftLength.next(Math.min(lookup.k, room)) : 0;
      const draft = length > 0 ? draftFromContext(this.#tokens, lookup!.n, length) : [];
      if (draft.length === 0) {
        const last = this.#pending.pop()!;
        this.#tokens.pop();
        return [decide(await next([last]))];
      }
      // The last token's row picks a token; while it is the draft's, the next row (the draft
      // token's) is valid too and picks the one after, and so on.
      const decided: (number | FinishReason)[] = [];
      drafts!.drafted += draft.length;
      drafts!.passes++;
      const accepted = await this.#verifyDraft(
        draft,
        step ? { out: step } : { topK: k },
        (row) => {
          current = row instanceof Float32Array ? row : null;
          const d = decide(
            row instanceof Float32Array ? () => choose(row) : () => chooseAmong(row),
          );
          decided.push(d);
          return d === draft[decided.length - 1] && !matcher?.mustEnd;
        },
      );
      drafts!.accepted += accepted;
      draftLength.update(draft.length, accepted);
      return decided;
    };

    const firstToken = this.position;
    let yielded = 0;
    let decided = [decide(pick)];
    try {
      for (;;) {
        for (const d of decided) {
          if (typeof d === "string") return end(d, yielded);
          yielded++; // counted before the yield: a caller may stop at it
          yield d;
          // Where the grammar is complete only a stop token could follow: end without it.
          if (matcher?.mustEnd) return end("end_of_turn", yielded);
        }
        if (yielded >= max || this.position >= this.contextLength) return end("length", yielded);
        // The caller has handled the tokens (written them to a stream, say); let the event loop
        // send them, and serve other work, before the next forward pass.
        await yieldToEventLoop();
        decided = await forwardOnce();
      }
    } finally {
      // A caller that stops early (return() at a yield) has not seen the tokens a verify pass
      // decided after that one: they leave the context.
      if (this.#cache && this.position > firstToken + yielded) {
        this.truncate(firstToken + yielded);
      }
    }
  }

  /**
   * Evaluates the pending tokens and `draft` in one pass (a turn at the model of its own), then
   * hands `take` the rows from the last pending token's on, one at a time, for as long as it
   * asks: `take` decides a token from each (adding it to the context) and says whether it was
   * the draft's. The decided tokens that were the draft's are evaluated by this pass already;
   * the last one, unless it was, is left pending. Returns how many were the draft's.
   */
  async #verifyDraft(
    draft: number[],
    want: { out: Float32Array } | { topK: number },
    take: (row: Float32Array | TopK) => boolean,
  ): Promise<number> {
    const cache = this.#live();
    const host = this.#host;
    return await this.#inTurn(async () => {
      const ids = Int32Array.from([...this.#pending, ...draft]);
      const start = this.#tokens.length - this.#pending.length;
      const from = this.#pending.length - 1;
      this.#pending = [];
      this.#written = Math.max(this.#written, start + ids.length);
      await host.exclusive(() =>
        forwardRows(host, cache, ids, start, from, (row) => {
          if (row instanceof Float32Array) this.#checkFinite(row);
          return take(row);
        }, want)
      ).catch((e) => this.#rethrowNonFinite(e));
      const firstDecided = start + from + 1;
      let agreed = 0;
      while (
        firstDecided + agreed < this.#tokens.length &&
        this.#tokens[firstDecided + agreed] === draft[agreed]
      ) agreed++;
      this.#pending = this.#tokens.slice(firstDecided + agreed);
      return agreed;
    });
  }

  /** The token ids in the context, oldest first (a copy). */
  get tokens(): number[] {
    return [...this.#tokens];
  }

  /**
   * Shortens the context to its first `length` tokens, so a sequence can continue from there.
   * Full-attention layers just forget the rest. A sliding-window layer's ring buffer, though, has
   * overwritten older positions with newer ones (its SPARE_SLOTS beyond the window let a cut of
   * up to 17 tokens keep everything); when the dropped tokens destroyed keys the remaining ones
   * still need, the rings are put back from the latest checkpoint at or before `length` and the
   * tokens after it are evaluated again (lazily, on the next eval), or all of them without one.
   */
  truncate(length: number): void {
    this.#live();
    if (!Number.isInteger(length) || length < 0 || length > this.position) {
      throw new RangeError(`truncate needs a length from 0 to ${this.position}, got ${length}`);
    }
    if (length === this.position) return;
    const { keep, checkpoint } = this.#resumePoint(length);
    // Checkpoints past the new end belong to tokens that are going.
    for (const c of [...this.#checkpoints]) if (c.position > length) this.#dropCheckpoint(c);
    if (checkpoint) this.#restoreCheckpoint(checkpoint);
    else if (keep === 0) {
      // Evaluated again from the start: every position's keys are written anew after any stale
      // ones, so none of those can overwrite what is needed any more.
      this.#written = 0;
    }
    this.#tokens = this.#tokens.slice(0, length);
    this.#pending = this.#tokens.slice(keep);
    this.#lastLogits = null;
  }

  /** Where evaluation would resume after truncate(length): the tokens kept evaluated, from the
   * cache as it is (what the rings have not overwritten) or from the latest checkpoint at or
   * before `length` when that keeps more. */
  #resumePoint(length: number): { keep: number; checkpoint?: Checkpoint } {
    const evaluated = this.#tokens.length - this.#pending.length;
    let keep = Math.min(evaluated, length);
    if (!cacheHoldsPrefix(this.#live(), keep, this.#written)) keep = 0;
    let checkpoint: Checkpoint | undefined;
    for (const c of this.#checkpoints) {
      if (c.position <= length && c.position > keep) [keep, checkpoint] = [c.position, c];
    }
    return { keep, checkpoint };
  }

  /** How many tokens of `prompt` reusePrefix(prompt) would keep evaluated (not compute again):
   * the server gives a request the slot that keeps the most. */
  reusableTokens(prompt: readonly number[]): number {
    const kept = Math.max(0, Math.min(commonPrefix(this.#tokens, prompt), prompt.length - 1));
    return kept === this.position ? this.evaluatedTokens : this.#resumePoint(kept).keep;
  }

  /**
   * Keeps the longest start of `prompt` that this session already holds and drops the rest, so
   * that only `prompt.slice(kept)` needs evaluating; at least one token is left to evaluate (its
   * logits pick what follows). Returns `kept`.
   */
  reusePrefix(prompt: readonly number[]): number {
    const kept = Math.min(commonPrefix(this.#tokens, prompt), prompt.length - 1);
    this.truncate(Math.max(0, kept));
    return this.position;
  }

  /** Empties the context (the cache memory is kept for reuse). */
  reset(): void {
    this.#live();
    for (const c of [...this.#checkpoints]) this.#dropCheckpoint(c);
    this.#written = 0;
    this.#tokens = [];
    this.#pending = [];
    this.#lastLogits = null;
  }

  /** Frees the KV cache; the session cannot be used afterwards. */
  dispose(): void {
    if (!this.#cache) return;
    for (const c of [...this.#checkpoints]) this.#dropCheckpoint(c);
    freeKvCache(this.#host.backend, this.#cache);
    this.#cache = null;
    this.#host.release(this);
  }
}

/** Up to this many allowed tokens are drawn from as a list; more, from the masked vocabulary. */
const FEW_ALLOWED = 4096;

/**
 * The grammar's say on a token `id` that `sampler` drew from `logits`: `id` itself when the
 * grammar allows it (one check, no mask: llama.cpp's fast path); else a token drawn again from
 * the allowed ones: as a list when they are few (most grammar states allow a handful), else from
 * the first draw's weights restricted to them, or from the logits with every refused token set
 * to -Infinity (written into `scratch`).
 */
export function enforceGrammar(
  matcher: GrammarMatcher,
  id: number,
  logits: Float32Array,
  scratch: Float32Array,
  sampler: Sampler,
  context: readonly number[],
): number {
  if (matcher.allows(id)) return id;
  const allowed = matcher.mask();
  const few: number[] = [];
  for (let w = 0; w < allowed.length && few.length <= FEW_ALLOWED; w++) {
    for (let bits = allowed[w]; bits !== 0; bits &= bits - 1) {
      few.push(w * 32 + 31 - Math.clz32(bits & -bits));
    }
  }
  if (few.length === 0) {
    throw new Error(
      "the grammar allows no token here (no token of the vocabulary spells what it needs)",
    );
  }
  if (few.length <= FEW_ALLOWED) return sampler.sampleAmong(logits, few, context);
  // Many allowed (inside a string, say): draw again from the weights the first draw computed.
  const again = sampler.redrawAmong(allowed);
  if (again !== undefined) return again;
  for (let i = 0; i < logits.length; i++) {
    scratch[i] = (allowed[i >>> 5] >>> (i & 31)) & 1 ? logits[i] : -Infinity;
  }
  return sampler.sample(scratch, context);
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** How many leading tokens two sequences share. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}
