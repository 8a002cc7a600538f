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
// also lets threads split the work by token and head with no ordering between them.
//
// Token p sees keys lo..p with lo = p - window + 1 (sliding) or 0 (window = 0: full attention).
// Query head h reads KV head h / (heads / kvHeads) (grouped-query attention). Scores are scaled
// by `scale` (query_pre_attn_scalar^-0.5 for Gemma 3) and soft-maxed in f32.
//
// Tiles, with an online softmax. A query's keys are taken KEY_TILE positions at a time, tiles
// starting at multiples of KEY_TILE (absolute positions, not offsets in the chunk). For each
// tile: its scores, their maximum m, the running maximum M' = max(M, m); the output so far and
// the sum of weights so far are rescaled by e^(M - M') when it grew; then each key's weight
// e^(s - M') is added to the sum and, times its value row, to the output. At the end the output
// is divided by the sum. So no query needs a score row as long as its context (a 32k-token
// prompt would need 128 KB of them per head), and the query heads that share a KV head (4 in
// Gemma 3 270M and 1B) go through each tile together: every key and value row is loaded once
// for all of them, not once per head. Because tile bounds are absolute positions, a query's tiles
// — and every rounding of its softmax — are the same whether it is evaluated alone, in a chunk of
// any length, or after a cache hit; and each head's sums are the same sequence of operations
// whichever other heads share its pass, so any split of heads and tokens across threads gives
// the same bits.
// ---------------------------------------------------------------------------------------------

/** Key positions per tile. Measured on a 2,048- and a 4,096-token prefill of the 270M (1 thread):
 * 16, 32 and 64 within 5% of each other, 64 the fastest. */
const KEY_TILE: i32 = 64;
/** Query heads attended in one pass over a tile (the heads of a KV head, up to this many). */
const HEAD_SET: i32 = 4;

// One thread's scratch: the tile's scores for each head of the set ([HEAD_SET][KEY_TILE] f32),
// then the addresses of the tile's key rows and of its value rows (KEY_TILE each), then each
// head's running maximum and running sum.
const SCORES_BYTES: usize = <usize>(HEAD_SET * KEY_TILE) << 2;
const ROWS_BYTES: usize = <usize>KEY_TILE << 2;
const STATE_BYTES: usize = <usize>HEAD_SET << 2;

/** Bytes of scratch `attention` needs per thread (the same for any model or context). */
export function attentionScratchBytes(): i32 {
  return <i32>(SCORES_BYTES + 2 * ROWS_BYTES + 2 * STATE_BYTES);
}

/** Attention of items [i0, i1) of the chunk, item t · heads + h being query head h of token t
 * (threads split a chunk's items any way: each head's output is computed the same). The cache is
 * only read. `scratch`: attentionScratchBytes() bytes, the calling thread's own. */
export function attention(
  q: usize, k: usize, v: usize, kCache: usize, vCache: usize, out: usize, scratch: usize,
  tokens: i32, startPos: i32, heads: i32, kvHeads: i32, headDim: i32,
  capacity: i32, window: i32, scale: f32, i0: i32, i1: i32,
): void {
  const group = heads / kvHeads;
  for (let i = i0; i < i1;) {
    const t = i / heads, h = i % heads;
    // The heads from h on that share its KV head: at most HEAD_SET, and within the range.
    const groupEnd = (h / group + 1) * group;
    const n = min(min(groupEnd - h, HEAD_SET), i1 - i);
    attendHeads(q, k, v, kCache, vCache, out, scratch, t, startPos, h, n, heads, kvHeads, headDim, capacity, window, scale);
    i += n;
  }
}

/** Query heads h..h+n-1 (one KV head's) of token t, tile by tile. */
function attendHeads(
  q: usize, k: usize, v: usize, kCache: usize, vCache: usize, out: usize, scratch: usize,
  t: i32, startPos: i32, h: i32, n: i32, heads: i32, kvHeads: i32, headDim: i32,
  capacity: i32, window: i32, scale: f32,
): void {
  const headBytes = <usize>headDim << 2;
  const kvBytes = <usize>kvHeads * headBytes;
  const ringBytes = <usize>capacity * kvBytes;
  const kvOff = <usize>(h / (heads / kvHeads)) * headBytes;
  const pos = startPos + t;
  const lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
  const qh = q + <usize>(t * heads + h) * headBytes;
  const oh = out + <usize>(t * heads + h) * headBytes;
  const scores = scratch, kRows = scratch + SCORES_BYTES, vRows = kRows + ROWS_BYTES;
  const runMax = vRows + ROWS_BYTES, runSum = runMax + STATE_BYTES;
  const zero = t >>> 31; // 0, unknown to the engine (keptSplatF32)
  memory.fill(oh, 0, <usize>n * headBytes);
  for (let i = 0; i < n; i++) {
    store<f32>(runMax + (<usize>i << 2), -Infinity);
    store<f32>(runSum + (<usize>i << 2), 0);
  }
  // Positions before startPos are in the cache's ring, from slot lo % capacity on; the rest are
  // the chunk's own rows. The slot is carried from tile to tile (no division per row).
  let slot: usize = lo < startPos ? <usize>(lo % capacity) * kvBytes : 0;
  for (let tile = lo - lo % KEY_TILE; tile <= pos; tile += KEY_TILE) {
    // The tile's visible positions are tile + [j0, j1).
    const j0 = lo > tile ? lo - tile : 0;
    const j1 = pos + 1 - tile < KEY_TILE ? pos + 1 - tile : KEY_TILE;
    for (let j = j0; j < j1; j++) {
      const p = tile + j;
      let kRow: usize, vRow: usize;
      if (p < startPos) {
        kRow = kCache + slot + kvOff;
        vRow = vCache + slot + kvOff;
        slot += kvBytes;
        if (slot == ringBytes) slot = 0;
      } else {
        const off = <usize>(p - startPos) * kvBytes + kvOff;
        kRow = k + off;
        vRow = v + off;
      }
      store<u32>(kRows + (<usize>j << 2), <u32>kRow);
      store<u32>(vRows + (<usize>j << 2), <u32>vRow);
    }

    // Scores; the tile's positions outside [j0, j1) get -Infinity (weight 0).
    for (let i = 0; i < n; i++) {
      const row = scores + (<usize>(i * KEY_TILE) << 2);
      for (let j = 0; j < j0; j++) store<f32>(row + (<usize>j << 2), -Infinity);
      for (let j = j1; j < KEY_TILE; j++) store<f32>(row + (<usize>j << 2), -Infinity);
    }
    if (n == HEAD_SET) scoreFourHeads(qh, headBytes, kRows, j0, j1, headDim, scale, scores);
    else {
      for (let i = 0; i < n; i++) {
        scoreOneHead(qh + <usize>i * headBytes, kRows, j0, j1, headDim, scale, scores + (<usize>(i * KEY_TILE) << 2));
      }
    }

    // The online softmax's step, per head: the new running maximum, the output and the sum so
    // far rescaled to it, the tile's weights e^(s - max) in place of its scores (summed in four
    // lanes, by position in the tile).
    for (let i = 0; i < n; i++) {
      const row = scores + (<usize>(i * KEY_TILE) << 2);
      let m4 = v128.load(row);
      for (let j = 4; j < KEY_TILE; j += 4) m4 = f32x4.max(m4, v128.load(row + (<usize>j << 2)));
      const tileMax = max(max(f32x4.extract_lane(m4, 0), f32x4.extract_lane(m4, 1)), max(f32x4.extract_lane(m4, 2), f32x4.extract_lane(m4, 3)));
      const before = load<f32>(runMax + (<usize>i << 2));
      const newMax = max(before, tileMax);
      // e^(before - newMax): exactly 1 while the maximum stays, 0 for the first tile.
      const rescale = f32x4.extract_lane(expNonPositive(f32x4.splat(before - newMax), zero), 0);
      const m = f32x4.splat(newMax);
      let sums = f32x4.splat(0);
      for (let j = 0; j < KEY_TILE; j += 4) {
        const at = row + (<usize>j << 2);
        const w = expNonPositive(f32x4.sub(v128.load(at), m), zero);
        v128.store(at, w);
        sums = f32x4.add(sums, w);
      }
      store<f32>(runSum + (<usize>i << 2), load<f32>(runSum + (<usize>i << 2)) * rescale + hsum(sums));
      store<f32>(runMax + (<usize>i << 2), newMax);
      if (rescale != 1 && before != -Infinity) scaleRow(oh + <usize>i * headBytes, headDim, rescale);
    }

    // out += Σ weight · value, over the tile's positions.
    if (n == HEAD_SET) addValuesFourHeads(oh, headBytes, vRows, j0, j1, headDim, scores);
    else {
      for (let i = 0; i < n; i++) {
        addValuesOneHead(oh + <usize>i * headBytes, vRows, j0, j1, headDim, scores + (<usize>(i * KEY_TILE) << 2));
      }
    }
  }
  for (let i = 0; i < n; i++) divideRow(oh + <usize>i * headBytes, headDim, load<f32>(runSum + (<usize>i << 2)));
}

// Every score is one sequence of operations, whichever loop computes it: a vector sum over
// headDim & ~3 (one multiply-add per four elements, in order), its lanes added (hsum), the last
// headDim % 4 products added one by one, times scale. Likewise every output element: its running
// value, plus weight · value for each position in order (a multiply-add, or for the last
// headDim % 4 elements a multiply and an add), times the rescale factors, divided by the sum.

/** s + Σ a[i] · b[i] for i in [from, to), one product at a time. */
@inline function tailDot(a: usize, b: usize, from: i32, to: i32, s: f32): f32 {
  for (let i = from; i < to; i++) s += load<f32>(a + (<usize>i << 2)) * load<f32>(b + (<usize>i << 2));
  return s;
}

/** Scores of one query head for the tile's keys [j0, j1): four keys at a time (the query's loads
 * shared), then one by one. */
function scoreOneHead(qh: usize, kRows: usize, j0: i32, j1: i32, headDim: i32, scale: f32, row: usize): void {
  const vecD = headDim & ~3;
  let j = j0;
  for (; j + 4 <= j1; j += 4) {
    const k0 = <usize>load<u32>(kRows + (<usize>j << 2)), k1 = <usize>load<u32>(kRows + (<usize>j << 2), 4);
    const k2 = <usize>load<u32>(kRows + (<usize>j << 2), 8), k3 = <usize>load<u32>(kRows + (<usize>j << 2), 12);
    let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
    for (let i = 0; i < vecD; i += 4) {
      const off = <usize>i << 2;
      const x = v128.load(qh + off);
      c0 = madd(x, v128.load(k0 + off), c0);
      c1 = madd(x, v128.load(k1 + off), c1);
      c2 = madd(x, v128.load(k2 + off), c2);
      c3 = madd(x, v128.load(k3 + off), c3);
    }
    const at = row + (<usize>j << 2);
    store<f32>(at, tailDot(qh, k0, vecD, headDim, hsum(c0)) * scale);
    store<f32>(at, tailDot(qh, k1, vecD, headDim, hsum(c1)) * scale, 4);
    store<f32>(at, tailDot(qh, k2, vecD, headDim, hsum(c2)) * scale, 8);
    store<f32>(at, tailDot(qh, k3, vecD, headDim, hsum(c3)) * scale, 12);
  }
  for (; j < j1; j++) {
    const k0 = <usize>load<u32>(kRows + (<usize>j << 2));
    let c0 = f32x4.splat(0);
    for (let i = 0; i < vecD; i += 4) {
      const off = <usize>i << 2;
      c0 = madd(v128.load(qh + off), v128.load(k0 + off), c0);
    }
    store<f32>(row + (<usize>j << 2), tailDot(qh, k0, vecD, headDim, hsum(c0)) * scale);
  }
}

/** Scores of four query heads (rows headBytes apart from qh) for the tile's keys [j0, j1): two
 * keys at a time, eight sums in registers (each key row and each query row loaded once per
 * step for all of them), then the last key alone. Head i's scores go to its row of `scores`. */
function scoreFourHeads(qh: usize, headBytes: usize, kRows: usize, j0: i32, j1: i32, headDim: i32, scale: f32, scores: usize): void {
  const vecD = headDim & ~3;
  const q1 = qh + headBytes, q2 = q1 + headBytes, q3 = q2 + headBytes;
  const rowBytes = <usize>KEY_TILE << 2;
  let j = j0;
  for (; j + 2 <= j1; j += 2) {
    const k0 = <usize>load<u32>(kRows + (<usize>j << 2)), k1 = <usize>load<u32>(kRows + (<usize>j << 2), 4);
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), b0 = f32x4.splat(0), b1 = f32x4.splat(0);
    let c0 = f32x4.splat(0), c1 = f32x4.splat(0), d0 = f32x4.splat(0), d1 = f32x4.splat(0);
    for (let i = 0; i < vecD; i += 4) {
      const off = <usize>i << 2;
      const x0 = v128.load(k0 + off), x1 = v128.load(k1 + off);
      let y = v128.load(qh + off);
      a0 = madd(y, x0, a0);
      a1 = madd(y, x1, a1);
      y = v128.load(q1 + off);
      b0 = madd(y, x0, b0);
      b1 = madd(y, x1, b1);
      y = v128.load(q2 + off);
      c0 = madd(y, x0, c0);
      c1 = madd(y, x1, c1);
      y = v128.load(q3 + off);
      d0 = madd(y, x0, d0);
      d1 = madd(y, x1, d1);
    }
    const at = scores + (<usize>j << 2);
    store<f32>(at, tailDot(qh, k0, vecD, headDim, hsum(a0)) * scale);
    store<f32>(at, tailDot(qh, k1, vecD, headDim, hsum(a1)) * scale, 4);
    store<f32>(at + rowBytes, tailDot(q1, k0, vecD, headDim, hsum(b0)) * scale);
    store<f32>(at + rowBytes, tailDot(q1, k1, vecD, headDim, hsum(b1)) * scale, 4);
    store<f32>(at + 2 * rowBytes, tailDot(q2, k0, vecD, headDim, hsum(c0)) * scale);
    store<f32>(at + 2 * rowBytes, tailDot(q2, k1, vecD, headDim, hsum(c1)) * scale, 4);
    store<f32>(at + 3 * rowBytes, tailDot(q3, k0, vecD, headDim, hsum(d0)) * scale);
    store<f32>(at + 3 * rowBytes, tailDot(q3, k1, vecD, headDim, hsum(d1)) * scale, 4);
  }
  if (j < j1) {
    const k0 = <usize>load<u32>(kRows + (<usize>j << 2));
    let a0 = f32x4.splat(0), b0 = f32x4.splat(0), c0 = f32x4.splat(0), d0 = f32x4.splat(0);
    for (let i = 0; i < vecD; i += 4) {
      const off = <usize>i << 2;
      const x0 = v128.load(k0 + off);
      a0 = madd(v128.load(qh + off), x0, a0);
      b0 = madd(v128.load(q1 + off), x0, b0);
      c0 = madd(v128.load(q2 + off), x0, c0);
      d0 = madd(v128.load(q3 + off), x0, d0);
    }
    const at = scores + (<usize>j << 2);
    store<f32>(at, tailDot(qh, k0, vecD, headDim, hsum(a0)) * scale);
    store<f32>(at + rowBytes, tailDot(q1, k0, vecD, headDim, hsum(b0)) * scale);
    store<f32>(at + 2 * rowBytes, tailDot(q2, k0, vecD, headDim, hsum(c0)) * scale);
    store<f32>(at + 3 * rowBytes, tailDot(q3, k0, vecD, headDim, hsum(d0)) * scale);
  }
}

/** o += Σ_j w[j] · value row j over the tile's positions [j0, j1), for one head: 32 output
 * elements at a time in registers, then 4, then 1. */
function addValuesOneHead(o: usize, vRows: usize, j0: i32, j1: i32, headDim: i32, w: usize): void {
  const vecD = headDim & ~3, blockD = headDim & ~31;
  for (let e = 0; e < blockD; e += 32) {
    const oe = o + (<usize>e << 2);
    let a0 = v128.load(oe), a1 = v128.load(oe, 16), a2 = v128.load(oe, 32), a3 = v128.load(oe, 48);
    let a4 = v128.load(oe, 64), a5 = v128.load(oe, 80), a6 = v128.load(oe, 96), a7 = v128.load(oe, 112);
    for (let j = j0; j < j1; j++) {
      const p = v128.load32_splat(w + (<usize>j << 2));
      const row = <usize>load<u32>(vRows + (<usize>j << 2)) + (<usize>e << 2);
      a0 = madd(p, v128.load(row), a0);
      a1 = madd(p, v128.load(row, 16), a1);
      a2 = madd(p, v128.load(row, 32), a2);
      a3 = madd(p, v128.load(row, 48), a3);
      a4 = madd(p, v128.load(row, 64), a4);
      a5 = madd(p, v128.load(row, 80), a5);
      a6 = madd(p, v128.load(row, 96), a6);
      a7 = madd(p, v128.load(row, 112), a7);
    }
    v128.store(oe, a0); v128.store(oe, a1, 16); v128.store(oe, a2, 32); v128.store(oe, a3, 48);
    v128.store(oe, a4, 64); v128.store(oe, a5, 80); v128.store(oe, a6, 96); v128.store(oe, a7, 112);
  }
  for (let e = blockD; e < vecD; e += 4) {
    const oe = o + (<usize>e << 2);
    let a0 = v128.load(oe);
    for (let j = j0; j < j1; j++) {
      const row = <usize>load<u32>(vRows + (<usize>j << 2)) + (<usize>e << 2);
      a0 = madd(v128.load32_splat(w + (<usize>j << 2)), v128.load(row), a0);
    }
    v128.store(oe, a0);
  }
  for (let e = vecD; e < headDim; e++) {
    const oe = o + (<usize>e << 2);
    let s = load<f32>(oe);
    for (let j = j0; j < j1; j++) {
      s += load<f32>(w + (<usize>j << 2)) * load<f32>(<usize>load<u32>(vRows + (<usize>j << 2)) + (<usize>e << 2));
    }
    store<f32>(oe, s);
  }
}

/** addValuesOneHead for four heads (output rows headBytes apart, weight rows KEY_TILE apart) in
 * one pass: 8 output elements of each head at a time in registers, each value load shared by the
 * four; then 4 elements, then 1. */
function addValuesFourHeads(o: usize, headBytes: usize, vRows: usize, j0: i32, j1: i32, headDim: i32, w: usize): void {
  const vecD = headDim & ~3, blockD = headDim & ~7;
  const o1 = o + headBytes, o2 = o1 + headBytes, o3 = o2 + headBytes;
  const rowBytes = <usize>KEY_TILE << 2;
  const w1 = w + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
  for (let e = 0; e < blockD; e += 8) {
    const off = <usize>e << 2;
    let a0 = v128.load(o + off), a1 = v128.load(o + off, 16), b0 = v128.load(o1 + off), b1 = v128.load(o1 + off, 16);
    let c0 = v128.load(o2 + off), c1 = v128.load(o2 + off, 16), d0 = v128.load(o3 + off), d1 = v128.load(o3 + off, 16);
    for (let j = j0; j < j1; j++) {
      const at = <usize>j << 2;
      const row = <usize>load<u32>(vRows + at) + off;
      const x0 = v128.load(row), x1 = v128.load(row, 16);
      let p = v128.load32_splat(w + at);
      a0 = madd(p, x0, a0);
      a1 = madd(p, x1, a1);
      p = v128.load32_splat(w1 + at);
      b0 = madd(p, x0, b0);
      b1 = madd(p, x1, b1);
      p = v128.load32_splat(w2 + at);
      c0 = madd(p, x0, c0);
      c1 = madd(p, x1, c1);
      p = v128.load32_splat(w3 + at);
      d0 = madd(p, x0, d0);
      d1 = madd(p, x1, d1);
    }
    v128.store(o + off, a0); v128.store(o + off, a1, 16); v128.store(o1 + off, b0); v128.store(o1 + off, b1, 16);
    v128.store(o2 + off, c0); v128.store(o2 + off, c1, 16); v128.store(o3 + off, d0); v128.store(o3 + off, d1, 16);
  }
  if (blockD < vecD) {
    const off = <usize>blockD << 2;
    let a0 = v128.load(o + off), b0 = v128.load(o1 + off), c0 = v128.load(o2 + off), d0 = v128.load(o3 + off);
    for (let j = j0; j < j1; j++) {
      const at = <usize>j << 2;
      const x0 = v128.load(<usize>load<u32>(vRows + at) + off);
      a0 = madd(v128.load32_splat(w + at), x0, a0);
      b0 = madd(v128.load32_splat(w1 + at), x0, b0);
      c0 = madd(v128.load32_splat(w2 + at), x0, c0);
      d0 = madd(v128.load32_splat(w3 + at), x0, d0);
    }
    v128.store(o + off, a0); v128.store(o1 + off, b0); v128.store(o2 + off, c0); v128.store(o3 + off, d0);
  }
  if (vecD < headDim) {
    for (let i = 0; i < HEAD_SET; i++) {
      const oi = o + <usize>i * headBytes, wi = w + <usize>i * rowBytes;
      for (let e = vecD; e < headDim; e++) {
        const oe = oi + (<usize>e << 2);
        let s = load<f32>(oe);
        for (let j = j0; j < j1; j++) {
          s += load<f32>(wi + (<usize>j << 2)) * load<f32>(<usize>load<u32>(vRows + (<usize>j << 2)) + (<usize>e << 2));
        }
        store<f32>(oe, s);
      }
    }
  }
}

/** o *= factor, elementwise. */
function scaleRow(o: usize, n: i32, factor: f32): void {
  const f = f32x4.splat(factor);
  const vecN = n & ~3;
  for (let i = 0; i < vecN; i += 4) v128.store(o + (<usize>i << 2), f32x4.mul(v128.load(o + (<usize>i << 2)), f));
  for (let i = vecN; i < n; i++) store<f32>(o + (<usize>i << 2), load<f32>(o + (<usize>i << 2)) * factor);
}

/** o /= d, elementwise. */
function divideRow(o: usize, n: i32, d: f32): void {
  const dv = f32x4.splat(d);
  const vecN = n & ~3;
  for (let i = 0; i < vecN; i += 4) v128.store(o + (<usize>i << 2), f32x4.div(v128.load(o + (<usize>i << 2)), dv));
  for (let i = vecN; i < n; i++) store<f32>(o + (<usize>i << 2), load<f32>(o + (<usize>i << 2)) / d);
}

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
