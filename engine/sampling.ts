// Choosing the next token from logits. The order of the filters follows Hugging Face's
// generate(): repetition penalty, temperature, top-k, top-p, min-p, then a draw. Temperature 0
// means greedy (argmax, lowest id on a tie). A seeded generator makes every draw reproducible.

/** How tokens are sampled. */
export interface SamplingOptions {
  /** Softmax temperature; 0 (the default) picks the most likely token. */
  temperature?: number;
  /** Keep only the k most likely tokens (0: no limit). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability adds up to p (1: no limit). */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one (0: off). */
  minP?: number;
  /** Divide positive logits (multiply negative ones) of tokens already in the context (1: off). */
  repetitionPenalty?: number;
  /** Seed of the random generator; the same seed gives the same tokens. Default: random. */
  seed?: number;
}

/** xoshiro128**, seeded through splitmix32: small, fast, and good enough for sampling. */
export class Random {
  #s = new Uint32Array(4);
  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.#s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  /** A uniform float in [0, 1). */
  next(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function check(ok: boolean, msg: string): void {
  if (!ok) throw new Error(msg);
}

/** Validates sampling options, with messages that name the option and its range. */
export function validateSampling(o: SamplingOptions): void {
  const num = (v: unknown) => typeof v === "number" && Number.isFinite(v);
  if (o.temperature !== undefined) {
    check(
      num(o.temperature) && o.temperature >= 0,
      `temperature must be >= 0, got ${o.temperature}`,
    );
  }
  if (o.topK !== undefined) {
    check(Number.isInteger(o.topK) && o.topK >= 0, `topK must be an integer >= 0, got ${o.topK}`);
  }
  if (o.topP !== undefined) {
    check(num(o.topP) && o.topP > 0 && o.topP <= 1, `topP must be in (0, 1], got ${o.topP}`);
  }
  if (o.minP !== undefined) {
    check(num(o.minP) && o.minP >= 0 && o.minP < 1, `minP must be in [0, 1), got ${o.minP}`);
  }
  if (o.repetitionPenalty !== undefined) {
    check(
      num(o.repetitionPenalty) && o.repetitionPenalty > 0,
      `repetitionPenalty must be > 0, got ${o.repetitionPenalty}`,
    );
  }
  if (o.seed !== undefined) {
    check(Number.isSafeInteger(o.seed), `seed must be an integer, got ${o.seed}`);
  }
}

/** The index of the largest value, lowest index on a tie; throws on NaN (a broken model). */
export function argmax(values: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > bestValue) {
      bestValue = v;
      best = i;
    } else if (v !== v) throw new Error(`the model produced NaN at logit ${i}`);
  }
  return best;
}

/** Picks tokens from logits according to SamplingOptions. */
export class Sampler {
  readonly #o: Required<SamplingOptions>;
  readonly #rng: Random;
  #weights: Float64Array | undefined;
  /** Whether the last `sample` drew from `#weights` as they stand (the whole vocabulary's,
   * temperature only), so that `redrawAmong` may draw from them again. */
  #drewFromWeights = false;

  constructor(options: SamplingOptions = {}) {
    validateSampling(options);
    this.#o = {
      temperature: options.temperature ?? 0,
      topK: options.topK ?? 0,
      topP: options.topP ?? 1,
      minP: options.minP ?? 0,
      repetitionPenalty: options.repetitionPenalty ?? 1,
      seed: options.seed ?? Math.floor(Math.random() * 2 ** 32),
    };
    this.#rng = new Random(this.#o.seed);
  }

  /** Whether this sampler always takes the most likely token (plain argmax of the logits). */
  get greedy(): boolean {
    return this.#o.temperature === 0 && this.#o.repetitionPenalty === 1;
  }

  /** The next token, given the logits and the tokens already in the context. */
  sample(logits: Float32Array, context: Iterable<number> = []): number {
    const o = this.#o;
    this.#drewFromWeights = false;
    let l = logits;
    if (o.repetitionPenalty !== 1) {
      l = logits.slice();
      for (const id of new Set(context)) {
        if (id >= 0 && id < l.length) {
          l[id] = l[id] > 0 ? l[id] / o.repetitionPenalty : l[id] * o.repetitionPenalty;
        }
      }
    }
    if (o.temperature === 0) return argmax(l);

    const top = l[argmax(l)];
    const invT = 1 / o.temperature;
    // Unnormalised probabilities relative to the best token (which gets 1).
    const weight = (i: number) => Math.exp((l[i] - top) * invT);
    if (o.topK > 0 && o.topK < l.length) {
      // The k best, best first (lower id first on ties): the order a backend's top-k gives.
      const ids = topKIndices(l, o.topK).sort((a, b) => l[b] - l[a] || a - b);
      return this.sampleCandidates(ids, ids.map((i) => l[i]));
    }
    // The whole vocabulary: narrow it with a threshold before building any arrays, since a
    // 262k-entry vocabulary is sampled once per generated token.
    // One weights array per sampler (a fresh 2 MB one per token costs page faults).
    if (this.#weights?.length !== l.length) this.#weights = new Float64Array(l.length);
    const w = this.#weights;
    for (let i = 0; i < l.length; i++) w[i] = weight(i);
    if (o.topP >= 1 && o.minP === 0) {
      this.#drewFromWeights = true;
      return drawFrom(w, this.#rng.next());
    }
    let mass = 0;
    for (let i = 0; i < w.length; i++) mass += w[i];
    const { ids, p } = o.topP < 1 ? nucleusCandidates(w, o.topP, mass) : above(w, o.minP);
    return this.#narrowAndDraw(ids, p, mass);
  }

  /**
   * The next token drawn from `ids` alone (every other token has probability zero): in
   * distribution what `sample` gives with every other logit at -Infinity, without a pass over the
   * whole vocabulary. The filters apply to these tokens as they would there (top-k among them,
   * top-p of their mass, min-p of their best); greedy takes the best, the lowest id on a tie.
   */
  sampleAmong(
    logits: Float32Array,
    ids: ArrayLike<number>,
    context: Iterable<number> = [],
  ): number {
    const o = this.#o;
    const penalized = o.repetitionPenalty !== 1 ? new Set(context) : undefined;
    const value = (id: number) => {
      const v = logits[id];
      if (v !== v) throw new Error(`the model produced NaN at logit ${id}`);
      if (!penalized?.has(id)) return v;
      return v > 0 ? v / o.repetitionPenalty : v * o.repetitionPenalty;
    };
    const order = Array.from(ids, (id) => ({ id, v: value(id) }));
    if (order.length === 0) throw new Error("no token to draw from");
    order.sort((a, b) => b.v - a.v || a.id - b.id);
    if (o.temperature === 0) return order[0].id;
    const kept = o.topK > 0 ? order.slice(0, o.topK) : order;
    return this.sampleCandidates(kept.map((c) => c.id), kept.map((c) => c.v));
  }

  /**
   * After a `sample` that drew from the whole vocabulary with temperature alone (no top-k, top-p
   * or min-p): a token drawn again from the same weights, restricted to the tokens set in
   * `allowed` (a bitset: bit i of word i >> 5). That is the distribution `sample` gives with every
   * other logit at -Infinity, without computing the weights again. Undefined where it does not
   * apply (another path, or every allowed weight underflowed to 0): then mask and sample.
   */
  redrawAmong(allowed: Uint32Array): number | undefined {
    const w = this.#weights;
    if (!this.#drewFromWeights || !w) return undefined;
    this.#drewFromWeights = false;
    const n = Math.min(w.length, allowed.length * 32);
    let total = 0;
    for (let i = 0; i < n; i++) if ((allowed[i >>> 5] >>> (i & 31)) & 1) total += w[i];
    if (!(total > 0)) return undefined;
    let r = this.#rng.next() * total;
    let last = -1;
    for (let i = 0; i < n; i++) {
      if (!((allowed[i >>> 5] >>> (i & 31)) & 1) || w[i] === 0) continue;
      last = i;
      r -= w[i];
      if (r < 0) return i;
    }
    return last; // rounding left r >= 0: the last allowed token with weight
  }

  /** Top-k sampling needs only the k best tokens, which a backend can find itself: with no
   * repetition penalty and temperature > 0, that k (else 0). */
  get topKOnly(): number {
    const o = this.#o;
    return o.temperature > 0 && o.repetitionPenalty === 1 && o.topK > 0 ? o.topK : 0;
  }

  /** The next token from the top-k candidates (ids best first, lower id first on ties, with
   * their logits): temperature, top-p and min-p applied to them, as `sample` does. */
  sampleCandidates(ids: number[], logits: number[]): number {
    const invT = 1 / this.#o.temperature;
    // Unnormalised probabilities relative to the best token (which gets 1); the mass top-p is
    // measured against is that of all tokens that survived top-k.
    const p = logits.map((v) => Math.exp((v - logits[0]) * invT));
    let mass = 0;
    for (const x of p) mass += x;
    return this.#narrowAndDraw(ids, p, mass);
  }

  #narrowAndDraw(ids: number[], p: number[], mass: number): number {
    const o = this.#o;
    if (o.topP < 1) {
      const order = ids.map((_, i) => i).sort((a, b) => p[b] - p[a] || ids[a] - ids[b]);
      let cum = 0;
      let keep = 0;
      while (keep < order.length) {
        cum += p[order[keep++]];
        if (cum >= o.topP * mass) break;
      }
      const kept = order.slice(0, keep);
      ids = kept.map((i) => ids[i]);
      p = kept.map((i) => p[i]);
    }
    if (o.minP > 0) {
      const floor = o.minP * Math.max(...p);
      const kept = p.map((_, i) => i).filter((i) => p[i] >= floor);
      ids = kept.map((i) => ids[i]);
      p = kept.map((i) => p[i]);
    }
    return ids[drawFrom(p, this.#rng.next())];
  }
}

/** Index drawn with probability proportional to weights[i], given a uniform u in [0, 1). */
function drawFrom(weights: ArrayLike<number>, u: number): number {
  let total = 0;
  for (let i = 0; i < weights.length; i++) total += weights[i];
  let r = u * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i];
    if (r < 0) return i;
  }
  // Rounding left r >= 0 after the last subtraction: take the last token with weight.
  for (let i = weights.length - 1; i > 0; i--) if (weights[i] > 0) return i;
  return 0;
}

/** Tokens whose weight is at least `threshold`, with their weights. */
function above(w: Float64Array, threshold: number): { ids: number[]; p: number[] } {
  const ids: number[] = [];
  const p: number[] = [];
  for (let i = 0; i < w.length; i++) {
    if (w[i] >= threshold) {
      ids.push(i);
      p.push(w[i]);
    }
  }
  return { ids, p };
}

/**
 * Tokens that certainly contain the top-p nucleus, without sorting the whole vocabulary: take
 * every token whose weight is at least a threshold; if their mass already reaches p of the total,
 * the nucleus (the most likely tokens up to mass p) lies among them. Otherwise lower the
 * threshold.
 */
function nucleusCandidates(
  w: Float64Array,
  topP: number,
  total: number,
): { ids: number[]; p: number[] } {
  for (let threshold = 1e-3; threshold > 1e-300; threshold *= 1e-3) {
    const c = above(w, threshold);
    if (c.p.reduce((s, x) => s + x, 0) >= topP * total) return c;
  }
  return above(w, 0);
}

/** The k largest logits' indices (any order), via a size-k min-heap: O(V log k). */
function topKIndices(l: Float32Array, k: number): number[] {
  const heap: number[] = [];
  const less = (a: number, b: number) => l[a] < l[b] || (l[a] === l[b] && a > b);
  const down = (i: number) => {
    for (;;) {
      const a = 2 * i + 1, b = a + 1;
      let m = i;
      if (a < heap.length && less(heap[a], heap[m])) m = a;
      if (b < heap.length && less(heap[b], heap[m])) m = b;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (let i = 0; i < l.length; i++) {
    if (heap.length < k) {
      heap.push(i);
      for (let j = heap.length - 1; j > 0;) {
        const parent = (j - 1) >> 1;
        if (!less(heap[j], heap[parent])) break;
        [heap[j], heap[parent]] = [heap[parent], heap[j]];
        j = parent;
      }
    } else if (less(heap[0], i)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap;
}

/** One generated token's log-probability and the `n` most likely tokens, from the distribution
 * it was drawn from before any sampling filter or grammar mask (natural logs). */
export interface TokenLogprob {
  /** The token. */
  id: number;
  /** Its log-probability. */
  logprob: number;
  /** Best first, lowest id on ties. */
  top: { id: number; logprob: number }[];
}

/** The most alternatives `logprobs` may ask for (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;

/** Checks a `logprobs` option (how many alternatives per token, 0 to 20). */
export function checkTopLogprobs(n: number | undefined): void {
  if (n !== undefined && (!Number.isInteger(n) || n < 0 || n > MAX_TOP_LOGPROBS)) {
    throw new RangeError(`logprobs must be an integer from 0 to ${MAX_TOP_LOGPROBS}, got ${n}`);
  }
}

/** log-softmax of `logits` at `id`, and the `n` most likely tokens (best first, lowest id on
 * ties). */
export function logprobsOf(logits: Float32Array, id: number, n: number): TokenLogprob {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const best: number[] = [];
  for (let i = 0; i < logits.length && n > 0; i++) {
    if (best.length === n && logits[i] <= logits[best[n - 1]]) continue;
    let j = best.length < n ? best.length : n - 1;
    while (j > 0 && logits[best[j - 1]] < logits[i]) j--;
    best.splice(j, 0, i);
    if (best.length > n) best.pop();
  }
  return {
    id,
    logprob: logits[id] - lse,
    top: best.map((t) => ({ id: t, logprob: logits[t] - lse })),
  };
}
