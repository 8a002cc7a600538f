// Causal attention over a KV cache (with ring buffers for sliding-window layers), and appending a
// chunk's keys and values to the cache.

import { expNonPositive, hsum, madd } from "./shared";

// ---------------------------------------------------------------------------------------------
// Causal attention with a KV cache, for a chunk of `tokens` new tokens at startPos.
//
// The cache of a layer is `capacity` slots of [kvHeads][headDim] keys (and values); position p
// lives in slot p % capacity. For a full-attention layer capacity >= context length, so the
// modulo never wraps. For a sliding-window layer capacity = window: a ring buffer.
//
// Attention runs in two steps. `attention` reads keys and values of earlier positions from the
// cache and those of the chunk itself from the new k/v rows, and does not write the cache;
// `appendKv` then writes the chunk into the cache. Reading the chunk from k/v is what makes a
// ring of exactly `window` slots enough even for long chunks: while the chunk is attended, the
// cache still holds the `window` positions before it, and nothing has been overwritten yet. It
// also lets threads split the work by heads with no ordering between them.
//
// Token p sees keys lo..p with lo = p - window + 1 (sliding) or 0 (window = 0: full attention).
// Query head h reads KV head h / (heads / kvHeads) (grouped-query attention). Scores are scaled
// by `scale` (query_pre_attn_scalar^-0.5 for Gemma 3) and soft-maxed in f32.
// `scores` is scratch of at least the visible span's floats, rounded up to a multiple of 4.
// ---------------------------------------------------------------------------------------------

@inline function dot(a: usize, b: usize, n: i32): f32 {
  const vecN = n & ~3;
  // Two accumulators: each add waits on the previous one's result, so one chain would stall.
  let acc = f32x4.splat(0), acc2 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= vecN; i += 8) {
    const off = <usize>i << 2;
    acc = madd(v128.load(a + off), v128.load(b + off), acc);
    acc2 = madd(v128.load(a + off, 16), v128.load(b + off, 16), acc2);
  }
  for (; i < vecN; i += 4) {
    const off = <usize>i << 2;
    acc = madd(v128.load(a + off), v128.load(b + off), acc);
  }
  let s = hsum(f32x4.add(acc, acc2));
  for (let i = vecN; i < n; i++) {
    const off = <usize>i << 2;
    s += load<f32>(a + off) * load<f32>(b + off);
  }
  return s;
}

/** dot(a, b_m, n) for four rows b0..b3 at once, each summed exactly as dot sums it (so a score
 * does not depend on which loop computes it); a's loads are shared. Results in lanes 0–3. */
@inline function dot4(a: usize, b0: usize, b1: usize, b2: usize, b3: usize, n: i32): v128 {
  const vecN = n & ~3;
  let c0 = f32x4.splat(0), d0 = f32x4.splat(0), c1 = f32x4.splat(0), d1 = f32x4.splat(0);
  let c2 = f32x4.splat(0), d2 = f32x4.splat(0), c3 = f32x4.splat(0), d3 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= vecN; i += 8) {
    const off = <usize>i << 2;
    const a0 = v128.load(a + off), a1 = v128.load(a + off, 16);
    c0 = madd(a0, v128.load(b0 + off), c0);
    d0 = madd(a1, v128.load(b0 + off, 16), d0);
    c1 = madd(a0, v128.load(b1 + off), c1);
    d1 = madd(a1, v128.load(b1 + off, 16), d1);
    c2 = madd(a0, v128.load(b2 + off), c2);
    d2 = madd(a1, v128.load(b2 + off, 16), d2);
    c3 = madd(a0, v128.load(b3 + off), c3);
    d3 = madd(a1, v128.load(b3 + off, 16), d3);
  }
  for (; i < vecN; i += 4) {
    const off = <usize>i << 2;
    const a0 = v128.load(a + off);
    c0 = madd(a0, v128.load(b0 + off), c0);
    c1 = madd(a0, v128.load(b1 + off), c1);
    c2 = madd(a0, v128.load(b2 + off), c2);
    c3 = madd(a0, v128.load(b3 + off), c3);
  }
  let s0 = hsum(f32x4.add(c0, d0)), s1 = hsum(f32x4.add(c1, d1));
  let s2 = hsum(f32x4.add(c2, d2)), s3 = hsum(f32x4.add(c3, d3));
  for (let i = vecN; i < n; i++) {
    const off = <usize>i << 2;
    const x = load<f32>(a + off);
    s0 += x * load<f32>(b0 + off);
    s1 += x * load<f32>(b1 + off);
    s2 += x * load<f32>(b2 + off);
    s3 += x * load<f32>(b3 + off);
  }
  return f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(s0), 1, s1), 2, s2), 3, s3);
}

// The rows a query token reads, positions lo..pos: first those before the chunk, from the cache
// (a ring: the slot after the last is the first), then the chunk's own new rows. Each part is
// walked by pointer, with no division per row.

/** The cache row after the one at p, in a ring of `ringBytes` that ends at ringEnd. */
@inline function ringNext(p: usize, kvBytes: usize, ringEnd: usize, ringBytes: usize): usize {
  const next = p + kvBytes;
  return next == ringEnd ? next - ringBytes : next;
}

/** The row of a query's j-th position: among the first `cached`, the ring's slot from `firstSlot`
 * bytes into the cache at `ring` (wrapping after ringBytes); after them, the chunk's rows from
 * `fresh`. */
@inline function rowOf(j: i32, cached: i32, ring: usize, firstSlot: usize, ringBytes: usize, fresh: usize, kvBytes: usize): usize {
  if (j >= cached) return fresh + <usize>(j - cached) * kvBytes;
  const at = firstSlot + <usize>j * kvBytes;
  return ring + (at < ringBytes ? at : at - ringBytes);
}

/** Scores (q·k · scale) of keys j0 ≤ j < j1 into scores[j], the first key at `row`; the keys
 * after it follow in the ring (`ring` true) or one after another. Returns the maximum score so
 * far (`maxScore` in). With `fourAtATime`, four keys at a time (dot4: q's loads shared; faster
 * while the keys are in cache), the rest one by one (one stream: faster from memory); either
 * way each score is the same number. */
@inline function scoreKeys(qh: usize, row: usize, j0: i32, j1: i32, ring: bool, fourAtATime: bool, kvBytes: usize, ringEnd: usize, ringBytes: usize, headDim: i32, scale: f32, scores: usize, maxScore: f32): f32 {
  let p = row;
  let j = j0;
  for (; j + 4 <= j1 && fourAtATime; j += 4) {
    const k0 = p;
    const k1 = ring ? ringNext(k0, kvBytes, ringEnd, ringBytes) : k0 + kvBytes;
    const k2 = ring ? ringNext(k1, kvBytes, ringEnd, ringBytes) : k1 + kvBytes;
    const k3 = ring ? ringNext(k2, kvBytes, ringEnd, ringBytes) : k2 + kvBytes;
    p = ring ? ringNext(k3, kvBytes, ringEnd, ringBytes) : k3 + kvBytes;
    const sc = f32x4.mul(dot4(qh, k0, k1, k2, k3, headDim), f32x4.splat(scale));
    v128.store(scores + (<usize>j << 2), sc);
    maxScore = max(maxScore, max(max(f32x4.extract_lane(sc, 0), f32x4.extract_lane(sc, 1)), max(f32x4.extract_lane(sc, 2), f32x4.extract_lane(sc, 3))));
  }
  for (; j < j1; j++) {
    const sc = dot(qh, p, headDim) * scale;
    store<f32>(scores + (<usize>j << 2), sc);
    maxScore = max(maxScore, sc);
    p = ring ? ringNext(p, kvBytes, ringEnd, ringBytes) : p + kvBytes;
  }
  return maxScore;
}

/** Attention of query heads [h0, h1) of every token of the chunk; the cache is only read. */
export function attention(
  q: usize, k: usize, v: usize, kCache: usize, vCache: usize, out: usize, scores: usize,
  tokens: i32, startPos: i32, heads: i32, kvHeads: i32, headDim: i32,
  capacity: i32, window: i32, scale: f32, h0: i32, h1: i32,
): void {
  const headBytes = <usize>headDim << 2;
  const kvBytes = <usize>kvHeads * headBytes;
  const qBytes = <usize>heads * headBytes;
  const group = heads / kvHeads;
  const vecD = headDim & ~3;
  const blockD = headDim & ~31;
  const ringBytes = <usize>capacity * kvBytes;
  for (let t = 0; t < tokens; t++) {
    const pos = startPos + t;
    const lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    const n = pos - lo + 1;
    // Positions lo..lo+cached-1 come from the cache, from slot lo % capacity; the rest, from
    // position max(lo, startPos), are the chunk's rows.
    const cached = lo < startPos ? startPos - lo : 0;
    const firstSlot = cached > 0 ? <usize>(lo % capacity) * kvBytes : 0;
    const firstFresh = <usize>(lo > startPos ? lo - startPos : 0) * kvBytes;
    for (let h = h0; h < h1; h++) {
      const qh = q + <usize>t * qBytes + <usize>h * headBytes;
      const kvOff = <usize>(h / group) * headBytes;
      const kRingEnd = kCache + ringBytes + kvOff;
      const inCache = n <= VALUES_IN_CACHE;
      let maxScore = scoreKeys(qh, kCache + firstSlot + kvOff, 0, cached, true, inCache, kvBytes, kRingEnd, ringBytes, headDim, scale, scores, <f32>-Infinity);
      maxScore = scoreKeys(qh, k + firstFresh + kvOff, cached, n, false, inCache, kvBytes, 0, 0, headDim, scale, scores, maxScore);
      // Softmax weights, four at a time (expNonPositive; the last ones padded with -Infinity,
      // whose weight is 0, into the scratch's spare floats) and summed in four lanes.
      const maxv = f32x4.splat(maxScore);
      const n4 = (n + 3) & ~3;
      for (let j = n; j < n4; j++) store<f32>(scores + (<usize>j << 2), -Infinity);
      let sums = f32x4.splat(0);
      for (let j = 0; j < n4; j += 4) {
        const at = scores + (<usize>j << 2);
        const p = expNonPositive(f32x4.sub(v128.load(at), maxv), tokens >>> 31);
        v128.store(at, p);
        sums = f32x4.add(sums, p);
      }
      const sum = hsum(sums);
      const inv: f32 = <f32>1.0 / sum;
      for (let j = 0; j < n; j++) store<f32>(scores + (<usize>j << 2), load<f32>(scores + (<usize>j << 2)) * inv);
      // out = Σ_j p_j · v_j. Up to VALUES_IN_CACHE positions, 32 output elements at a time are
      // kept in registers over a span of 64 positions (whose value rows then stay in cache for
      // the other elements) and added to the previous spans' sums in memory; then 4 elements at
      // a time, then 1. Beyond that, value rows stream from memory, and reading each one whole
      // and in order is faster: one row at a time, added into out. Each element gets the same
      // adds in the same order either way.
      const oh = out + <usize>t * qBytes + <usize>h * headBytes;
      if (n > VALUES_IN_CACHE) {
        memory.fill(oh, 0, headBytes);
        for (let j = 0; j < n; j++) {
          const p = f32x4.splat(load<f32>(scores + (<usize>j << 2)));
          const vj = rowOf(j, cached, vCache + kvOff, firstSlot, ringBytes, v + firstFresh + kvOff, kvBytes);
          for (let i = 0; i < vecD; i += 4) {
            const off = <usize>i << 2;
            v128.store(oh + off, madd(p, v128.load(vj + off), v128.load(oh + off)));
          }
          const ps = f32x4.extract_lane(p, 0);
          for (let i = vecD; i < headDim; i++) {
            const off = <usize>i << 2;
            store<f32>(oh + off, load<f32>(oh + off) + ps * load<f32>(vj + off));
          }
        }
        continue;
      }
      for (let j0 = 0; j0 < n; j0 += VALUE_SPAN) {
        const j1 = j0 + VALUE_SPAN < n ? j0 + VALUE_SPAN : n;
        const first = rowOf(j0, cached, vCache + kvOff, firstSlot, ringBytes, v + firstFresh + kvOff, kvBytes);
        for (let i = 0; i < headDim;) {
          const width = i < blockD ? 32 : i < vecD ? 4 : 1;
          const off = <usize>i << 2;
          const o = oh + off;
          let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
          let a4 = f32x4.splat(0), a5 = f32x4.splat(0), a6 = f32x4.splat(0), a7 = f32x4.splat(0);
          let s: f32 = 0;
          if (j0 > 0) {
            if (width == 32) {
              a0 = v128.load(o); a1 = v128.load(o, 16); a2 = v128.load(o, 32); a3 = v128.load(o, 48);
              a4 = v128.load(o, 64); a5 = v128.load(o, 80); a6 = v128.load(o, 96); a7 = v128.load(o, 112);
            } else if (width == 4) a0 = v128.load(o);
            else s = load<f32>(o);
          }
          let row = first + off;
          const ringEnd = vCache + ringBytes + kvOff + off;
          for (let j = j0; j < j1; j++) {
            if (j == cached) row = v + firstFresh + kvOff + off;
            const pj = load<f32>(scores + (<usize>j << 2));
            if (width == 32) {
              const p = f32x4.splat(pj);
              a0 = madd(p, v128.load(row), a0);
              a1 = madd(p, v128.load(row, 16), a1);
              a2 = madd(p, v128.load(row, 32), a2);
              a3 = madd(p, v128.load(row, 48), a3);
              a4 = madd(p, v128.load(row, 64), a4);
              a5 = madd(p, v128.load(row, 80), a5);
              a6 = madd(p, v128.load(row, 96), a6);
              a7 = madd(p, v128.load(row, 112), a7);
            } else if (width == 4) {
              a0 = madd(f32x4.splat(pj), v128.load(row), a0);
            } else s += pj * load<f32>(row);
            row = j < cached ? ringNext(row, kvBytes, ringEnd, ringBytes) : row + kvBytes;
          }
          if (width == 32) {
            v128.store(o, a0); v128.store(o, a1, 16); v128.store(o, a2, 32); v128.store(o, a3, 48);
            v128.store(o, a4, 64); v128.store(o, a5, 80); v128.store(o, a6, 96); v128.store(o, a7, 112);
          } else if (width == 4) v128.store(o, a0);
          else store<f32>(o, s);
          i += width;
        }
      }
    }
  }
}

/** Positions per span of attention's weighted sum of values (64 rows of 1 KB for the 270M). */
const VALUE_SPAN: i32 = 64;
/** Up to this many positions, the weighted sum of values goes by spans; beyond, row by row.
 * Measured against row by row on one thread (4 heads over 1 KV head of 256): 1.2–1.4× up to
 * 1024 positions, 1.1× at 2048, 0.8× at 4096 and 0.6–0.7× at 8192. */
const VALUES_IN_CACHE: i32 = 2048;

/** Writes the chunk's keys and values into the cache, in order (later positions win a slot). */
export function appendKv(k: usize, v: usize, kCache: usize, vCache: usize, tokens: i32, startPos: i32, kvDim: i32, capacity: i32): void {
  const rowBytes = <usize>kvDim << 2;
  // Only the last `capacity` tokens survive; skip the ones that would be overwritten.
  const first = tokens > capacity ? tokens - capacity : 0;
  for (let t = first; t < tokens; t++) {
    const slot = <usize>((startPos + t) % capacity);
    memory.copy(kCache + slot * rowBytes, k + <usize>t * rowBytes, rowBytes);
    memory.copy(vCache + slot * rowBytes, v + <usize>t * rowBytes, rowBytes);
  }
}
