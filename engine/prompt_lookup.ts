// Prompt-lookup decoding's drafts. Answers that extract, summarise, rewrite or edit copy spans of
// their prompt: when the last n tokens of the context appeared earlier in it, the tokens that
// followed them there are a good guess at what comes next. The session evaluates the guess (the
// draft) in one pass with the last token and keeps the model's own tokens for as long as they
// agree with it (Session.generate), so the answer is exactly the one without drafts: every
// row's logits are the same bits as the token evaluated alone, and the sampler draws once per
// answer token, in order.

import { SPARE_SLOTS } from "./gemma3/forward.ts";

/** Prompt lookup: draft up to `k` tokens from the last earlier occurrence of the context's last
 * `n` tokens. */
export interface LookupOptions {
  /** Tokens that must match (default 3): fewer drafts more often, more of them wrong. */
  n?: number;
  /** Most tokens drafted per pass (default 8, at most MAX_DRAFT). */
  k?: number;
}

/** Speculative decoding: guesses at the next tokens, verified in one pass. */
export interface SpeculativeOptions {
  /** Draft from the context itself (prompt-lookup decoding). */
  lookup?: LookupOptions;
}

/** The most tokens a pass may draft: a sliding layer's ring keeps SPARE_SLOTS positions beyond
 * its window, so that a pass whose draft the model rejects leaves the cache usable. */
export const MAX_DRAFT: number = SPARE_SLOTS;

/** The n-gram length to match, when not given. */
export const DEFAULT_LOOKUP_N = 3;
/** Tokens drafted per pass, when not given. */
export const DEFAULT_LOOKUP_K = 8;

/** The lookup settings of `speculative` with their defaults (null: no speculation); throws with
 * a message naming the option on a bad value. */
export function lookupSettings(
  speculative: SpeculativeOptions | undefined,
): { n: number; k: number } | null {
  if (speculative === undefined) return null;
  if (speculative === null || typeof speculative !== "object") {
    throw new TypeError("speculative must be an object, e.g. { lookup: { n: 3, k: 8 } }");
  }
  const unknown = Object.keys(speculative).filter((key) => key !== "lookup");
  if (unknown.length) {
    throw new Error(`speculative has no option ${unknown.join(", ")} (only "lookup")`);
  }
  const lookup = speculative.lookup;
  if (lookup === undefined) return null;
  if (lookup === null || typeof lookup !== "object") {
    throw new TypeError("speculative.lookup must be an object, e.g. { n: 3, k: 8 }");
  }
  const n = lookup.n ?? DEFAULT_LOOKUP_N, k = lookup.k ?? DEFAULT_LOOKUP_K;
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new RangeError(`speculative.lookup.n must be an integer from 1 to 64, got ${lookup.n}`);
  }
  if (!Number.isInteger(k) || k < 1 || k > MAX_DRAFT) {
    throw new RangeError(
      `speculative.lookup.k must be an integer from 1 to ${MAX_DRAFT}, got ${lookup.k}`,
    );
  }
  return { n, k };
}

/**
 * The draft: up to `k` tokens that followed the most recent earlier occurrence of the last `n`
 * tokens of `context` (empty when they occur nowhere else).
 */
export function draftFromContext(context: readonly number[], n: number, k: number): number[] {
  const end = context.length;
  if (k < 1 || end <= n) return [];
  const last = context[end - 1];
  // i is where an earlier occurrence would end (exclusive): i - n .. i - 1 against end - n ..
  for (let i = end - 1; i >= n; i--) {
    if (context[i - 1] !== last) continue;
    let j = 2;
    while (j <= n && context[i - j] === context[end - j]) j++;
    if (j > n) return context.slice(i, Math.min(i + k, end));
  }
  return [];
}

/**
 * What a drafted token costs, as a share of a plain decode step: the layers run for one more
 * token (the head, most of a step, is computed for the rows a verify pass reaches, several at a
 * time). Measured on the real 270M (Q4_K_M), 1 and 2 threads: a step 44 / 25 ms, each drafted
 * token 8 / 5 ms more (bench/speculative.ts reports what it gains).
 */
const DRAFT_TOKEN_COST = 0.2;
/** How fast the acceptance estimate forgets: each pass's counts weigh this much less. */
const FORGET = 0.8;
/** Passes without a draft, when drafts do not pay, before one token is drafted again to see. */
const PROBE_EVERY = 8;

/**
 * How many tokens to draft, from how often the model has agreed with drafts so far. A drafted
 * token pays when the chance that it and those before it are accepted, p^d, beats its cost
 * (DRAFT_TOKEN_COST of a step): d = ln(cost) / ln(p), at most k. Where even one does not pay
 * (free text that seldom repeats its context), none is drafted, but one every PROBE_EVERY
 * chances, so the estimate can recover. The answer never depends on it: only the speed.
 */
export class DraftLength {
  /** Decayed counts of drafted tokens the model agreed with, and of those it was asked about
   * (the accepted ones and the first rejected one; those after it were never compared). */
  #agreed = 1;
  #compared = 2;
  #skipped = 0;

  /** Tokens to draft now (0: none), at most `k`. */
  next(k: number): number {
    const p = this.#agreed / this.#compared;
    const pays = p >= 1 ? k : Math.floor(Math.log(DRAFT_TOKEN_COST) / Math.log(p));
    if (pays >= 1) return Math.min(k, pays);
    if (++this.#skipped < PROBE_EVERY) return 0;
    this.#skipped = 0;
    return Math.min(k, 1);
  }

  /** A pass verified `drafted` tokens, of which the model agreed with the first `accepted`. */
  update(drafted: number, accepted: number): void {
    this.#agreed = FORGET * this.#agreed + accepted;
    this.#compared = FORGET * this.#compared + accepted + (accepted < drafted ? 1 : 0);
  }
}
