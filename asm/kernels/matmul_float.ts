// Products with f32 and bf16 weight matrices, the row layout decode reads them in fastest, and
// the embedding gather from an f32 or bf16 table. (asm/kernels.ts states the conventions.)

import { hsum, madd, rowStart, chunkStride, copySmall, keepTouches } from "./shared";

// ---------------------------------------------------------------------------------------------
// Matrix products: y[t][r] = sum_c W[r][c] * x[t][c]
//
// Decode reads every weight once per token, so these loops are the engine's speed. Four rows are
// processed per pass so each load of x is shared by four weight rows, and the inner loop works
// on 4 (f32) or 8 (bf16) columns per step. Columns that do not fill a SIMD vector and rows that
// do not fill a block of four are handled by scalar/single-row tails, so any shape is valid.
// ---------------------------------------------------------------------------------------------


// bf16 is the top half of an f32. A v128 of eight bf16 values read as four i32 lanes holds
// (even element in the low half, odd element in the high half) per lane, so `lane << 16` gives
// the even elements as f32 and `lane & 0xffff0000` the odd ones: widening costs one op per
// four weights. x is shuffled once per 8 columns into matching even/odd vectors, shared by the
// four rows of the block.
//
// One generic body serves both formats; W is the storage type (f32, or u16 for bf16) and every
// branch on it is resolved at compile time.

@inline function bf16ToF32(bits: u16): f32 {
  return reinterpret<f32>(<u32>bits << 16);
}

/** Columns per SIMD step: 4 f32 weights or 8 bf16 weights. */
@inline function colsPerStep<W>(): i32 {
  return sizeof<W>() == 2 ? 8 : 4;
}

/** The x operand(s) of one step at column c: x[c..c+4] (f32), or x's even/odd lanes (bf16). */
@inline function xFirst<W>(xt: usize, c: i32): v128 {
  const p = xt + (<usize>c << 2);
  if (sizeof<W>() == 2) return v128.shuffle<f32>(v128.load(p), v128.load(p, 16), 0, 2, 4, 6);
  return v128.load(p);
}
@inline function xSecond<W>(xt: usize, c: i32): v128 {
  const p = xt + (<usize>c << 2);
  if (sizeof<W>() == 2) return v128.shuffle<f32>(v128.load(p), v128.load(p, 16), 1, 3, 5, 7);
  return f32x4.splat(0);
}

/** A loaded weight vector as f32 lanes: itself (f32), or its even elements (bf16). */
@inline function widenFirst<W>(wv: v128): v128 {
  if (sizeof<W>() == 2) return i32x4.shl(wv, 16);
  return wv;
}
/** The odd elements of a loaded bf16 vector (unused for f32); `oddMask` is oddLanesMask(). */
@inline function widenSecond<W>(wv: v128, oddMask: v128): v128 {
  if (sizeof<W>() == 2) return v128.and(wv, oddMask);
  return wv;
}

/** i32x4.splat(0xffff0000), computed from `zero` (0 at run time) so that the engine keeps it
 * out of loops: V8 rebuilds a v128 constant at every use in a loop (three instructions; see
 * keptSplat8). */
@inline function oddLanesMask(zero: i32): v128 {
  return i32x4.splat(0xffff0000 | zero);
}


/** acc += w · x over one step, lane-wise; the bf16 odd half is added second. */
@inline function accumulate<W>(acc: v128, wa: v128, wb: v128, xa: v128, xb: v128): v128 {
  acc = madd(wa, xa, acc);
  if (sizeof<W>() == 2) acc = madd(wb, xb, acc);
  return acc;
}

/** acc += the weights of one step at p (one chunk) · x's step, lane-wise. */
@inline function stepDot<W>(acc: v128, p: usize, xa: v128, xb: v128, oddMask: v128): v128 {
  const wv = v128.load(p);
  return accumulate<W>(acc, widenFirst<W>(wv), widenSecond<W>(wv, oddMask), xa, xb);
}

/** W[row][c] as f32. */
@inline function weightAt<W>(row: usize, c: i32): f32 {
  if (sizeof<W>() == 2) return bf16ToF32(load<u16>(row + (<usize>c << 1)));
  return load<f32>(row + (<usize>c << 2));
}

/** The four sums of a 4-row block for one token, finished with the scalar column tail. */
@inline function storeBlock<W>(
  y: usize, rows: i32, r: i32, t: i32, xt: usize, vecCols: i32, cols: i32,
  w0: usize, w1: usize, w2: usize, w3: usize, a0: v128, a1: v128, a2: v128, a3: v128,
): void {
  let s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
  for (let c = vecCols; c < cols; c++) {
    const xs = load<f32>(xt + (<usize>c << 2));
    s0 += weightAt<W>(w0, c) * xs;
    s1 += weightAt<W>(w1, c) * xs;
    s2 += weightAt<W>(w2, c) * xs;
    s3 += weightAt<W>(w3, c) * xs;
  }
  const yt = y + ((<usize>t * <usize>rows + <usize>r) << 2);
  store<f32>(yt, s0);
  store<f32>(yt, s1, 4);
  store<f32>(yt, s2, 8);
  store<f32>(yt, s3, 12);
}

// Touching ahead. Decode streams every weight from DRAM once, and a kernel that reads a few
// rows side by side presents short streams (one row of the 270M is 0.7–2.6 KB) that end before
// the hardware prefetcher has learned them; with real work between loads, one core then reaches
// a third to a half of its streaming bandwidth. WASM has no prefetch instruction, so the kernels
// load one byte of every cache line of the next group of rows while they compute this one (one
// group ahead covers DRAM latency many times over). Measured single-threaded over 42M distinct
// weights: Q8_0 +70%, bf16 +27–33%; f32 (half the work per byte) already streams at the
// bandwidth and does not touch. Interleaved rows (below) are one stream and do not touch
// either. The engine interleaves every Q8_0, Q4_0 and Q5_0 matrix, so their kernels no longer
// touch ahead at all; rows in order (matrices given to the kernels as loaded) do without.

/** Where the touches of a group of `groupBytes` at w0 go: the next group, if `hasNext`, else
 * the group itself (already in cache; never past the matrix). */
@inline function touchAhead(w0: usize, groupBytes: usize, hasNext: bool): usize {
  return hasNext ? w0 + groupBytes : w0;
}

// Interleaved rows. Decode reads eight rows side by side, and stored row after row those are
// eight streams that restart at every group when rows are short (touching ahead, above, recovers
// part of the loss). The engine therefore stores bf16 matrices, and f32 matrices with rows of at
// most 4 KB, interleaved: each group of eight rows as its 16-byte chunks in turn (chunk 0 of
// rows 0–7, then chunk 1 of rows 0–7, ...), so that a group is read as one sequential stream.
// Measured single-threaded against rows in order: bf16 +23–41% (rows of 1.3–8 KB); f32 +20–23%
// with rows of 2.5 KB (the 270M's head and most of its matrices), ±1% at 4 KB, but 7–10% slower
// at 8 KB and 20% at 16 KB: f32 has half the work per byte, and eight long streams in order read
// faster than one. Only whole groups are interleaved, and only rows of whole chunks; the rows
// after the last whole group stay in order. A row of a group starts 16 bytes after the previous
// one and its chunks are 128 bytes apart; a row in order has its chunks 16 bytes apart. Each
// row's sum is formed in the same order whatever the layout, so the results are the same bits.

/** How many rows (from the first) are stored interleaved: the whole groups of eight of an
 * `interleaved` matrix with `elemBytes`-byte elements whose rows qualify (above), else none. */
@inline function groupedRows(rows: i32, rowBytes: usize, elemBytes: i32, interleaved: i32): i32 {
  const qualifies = (rowBytes & 15) == 0 && (elemBytes == 2 || rowBytes <= 4096);
  return interleaved != 0 && qualifies ? rows & ~7 : 0;
}




/** Rewrites `groups` groups of `groupRows` rows of `rowBytes` at w, each row stored after the
 * previous one, as the groups' chunks of `chunkBytes` in turn (chunk 0 of every row of the
 * group, then chunk 1, ...), in place; `scratch` holds one group. */
@inline function interleaveGroups(w: usize, groups: i32, groupRows: i32, rowBytes: usize, chunkBytes: usize, scratch: usize): void {
  const chunks = rowBytes / chunkBytes;
  const groupBytes = rowBytes * <usize>groupRows;
  for (let g = 0; g < groups; g++) {
    const base = w + <usize>g * groupBytes;
    memory.copy(scratch, base, groupBytes);
    for (let i = 0; i < groupRows; i++) {
      const src = scratch + <usize>i * rowBytes;
      const dst = base + <usize>i * chunkBytes;
      for (let c: usize = 0; c < chunks; c++) {
        copySmall(dst + c * chunkBytes * <usize>groupRows, src + c * chunkBytes, chunkBytes);
      }
    }
  }
}

/** Rewrites rows × cols elements of `elemBytes` (4: f32, 2: bf16) at w, stored row after row, in
 * the interleaved layout, in place (rows that do not qualify stay as they are); `scratch` holds
 * 8 rows. */
export function interleaveRows(w: usize, rows: i32, cols: i32, elemBytes: i32, scratch: usize): void {
  const rowBytes = <usize>cols * <usize>elemBytes;
  interleaveGroups(w, groupedRows(rows, rowBytes, elemBytes, 1) >> 3, 8, rowBytes, 16, scratch);
}

/** y[0..8) = W[8 rows] · x for one token, summing each row step by step exactly as the 4-row
 * loop does (so results do not depend on which loop a row falls in). The rows start at w0,
 * `rowOffset` bytes apart; `grouped` (a constant at each call): they are an interleaved group
 * (rowOffset 16, chunks 128 bytes apart, no touching ahead), else rows in order. */
@inline function matvec8<W>(w0: usize, rowOffset: usize, x: usize, y: usize, cols: i32, vecCols: i32, ahead: usize, grouped: bool): void {
  const step = colsPerStep<W>();
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let a4 = f32x4.splat(0), a5 = f32x4.splat(0), a6 = f32x4.splat(0), a7 = f32x4.splat(0);
  const oddMask = oddLanesMask(cols >>> 31);
  let p = w0;
  let px = x;
  let next = ahead;
  let touched: i32 = 0;
  for (let c = 0; c < vecCols; c += step) {
    // The 128 bytes this step reads, ahead in the next group of rows (see touchAhead). Not for
    // f32: with half the work per byte it streams at the bandwidth as it is, and the touches
    // measured 7–12% slower. Not for interleaved rows, which are one stream.
    if (sizeof<W>() == 2 && !grouped) {
      touched += <i32>load<u8>(next) + <i32>load<u8>(next, 64);
      next += 128;
    }
    let xa = v128.load(px), xb = xa;
    if (sizeof<W>() == 2) {
      const hi = v128.load(px, 16);
      xb = v128.shuffle<f32>(xa, hi, 1, 3, 5, 7);
      xa = v128.shuffle<f32>(xa, hi, 0, 2, 4, 6);
    }
    let v = v128.load(p);
    a0 = accumulate<W>(a0, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    v = v128.load(p + rowOffset);
    a1 = accumulate<W>(a1, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    v = v128.load(p + 2 * rowOffset);
    a2 = accumulate<W>(a2, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    v = v128.load(p + 3 * rowOffset);
    a3 = accumulate<W>(a3, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    v = v128.load(p + 4 * rowOffset);
    a4 = accumulate<W>(a4, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    v = v128.load(p + 5 * rowOffset);
    a5 = accumulate<W>(a5, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    v = v128.load(p + 6 * rowOffset);
    a6 = accumulate<W>(a6, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    v = v128.load(p + 7 * rowOffset);
    a7 = accumulate<W>(a7, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
    p += grouped ? 128 : 16;
    px += <usize>step << 2;
  }
  // Interleaved rows are whole chunks: storeBlock's column tail is empty for them.
  storeBlock<W>(y, 0, 0, 0, x, vecCols, cols, w0, w0 + rowOffset, w0 + 2 * rowOffset, w0 + 3 * rowOffset, a0, a1, a2, a3);
  const w4 = w0 + 4 * rowOffset;
  storeBlock<W>(y + 16, 0, 0, 0, x, vecCols, cols, w4, w4 + rowOffset, w4 + 2 * rowOffset, w4 + 3 * rowOffset, a4, a5, a6, a7);
  keepTouches(touched);
}

/** Rows [r0, r1) of y = x · Wᵀ. A row's result does not depend on the range it is computed in,
 * nor on how tokens are grouped, so threads that split the rows and prompts evaluated in any
 * chunks produce bit-identical output.
 *
 * Within a block of four rows, tokens go in pairs: each weight vector is loaded (and, for bf16,
 * widened) once for two tokens, which cuts the work per multiply-add when a prompt is evaluated
 * (decode has one token and streams the weights once either way). */
@inline function matmul<W>(w: usize, x: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, interleaved: i32): void {
  const grouped = groupedRows(rows, <usize>cols * sizeof<W>(), sizeof<W>(), interleaved);
  // The interleaved rows and the rows in order, each a run of its own (a block of four rows
  // then never mixes the two layouts).
  const mid = min(max(r0, grouped), r1);
  matmulRows<W>(w, x, y, rows, cols, tokens, r0, mid, grouped);
  matmulRows<W>(w, x, y, rows, cols, tokens, mid, r1, grouped);
}

/** matmul over rows [r0, r1), all of them interleaved (below `grouped`) or all in order. */
function matmulRows<W>(w: usize, x: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, grouped: i32): void {
  const wRowBytes = <usize>cols * sizeof<W>();
  const xRowBytes = <usize>cols << 2;
  const step = colsPerStep<W>();
  const vecCols = cols - cols % step;
  const oddMask = oddLanesMask(cols >>> 31);
  const stride = chunkStride(r0, 8, 16, grouped);
  let r = r0;
  // Decode (one token): eight rows per pass share each load and split of x.
  // (Two loops, not one with an if: wasm-opt folds the two arms' identical code into one loop
  // that tests the layout at every step.) A range that starts inside a group of eight goes to
  // the 4-row loop below.
  if (tokens == 1 && (r >= grouped || (r & 7) == 0)) {
    for (; r + 8 <= r1 && r < grouped; r += 8) {
      matvec8<W>(rowStart(w, r, wRowBytes, 8, 16, grouped), 16, x, y + (<usize>r << 2), cols, vecCols, 0, true);
    }
    for (; r + 8 <= r1 && r >= grouped; r += 8) {
      const w0 = w + <usize>r * wRowBytes;
      matvec8<W>(w0, wRowBytes, x, y + (<usize>r << 2), cols, vecCols, touchAhead(w0, 8 * wRowBytes, r + 16 <= rows), false);
    }
  }
  for (; r + 4 <= r1; r += 4) {
    const w0 = rowStart(w, r, wRowBytes, 8, 16, grouped);
    const w1 = rowStart(w, r + 1, wRowBytes, 8, 16, grouped);
    const w2 = rowStart(w, r + 2, wRowBytes, 8, 16, grouped);
    const w3 = rowStart(w, r + 3, wRowBytes, 8, 16, grouped);
    let t = 0;
    for (; t + 2 <= tokens; t += 2) {
      const xt0 = x + <usize>t * xRowBytes;
      const xt1 = xt0 + xRowBytes;
      let a00 = f32x4.splat(0), a10 = f32x4.splat(0), a20 = f32x4.splat(0), a30 = f32x4.splat(0);
      let a01 = f32x4.splat(0), a11 = f32x4.splat(0), a21 = f32x4.splat(0), a31 = f32x4.splat(0);
      let off: usize = 0;
      for (let c = 0; c < vecCols; c += step) {
        // x of both tokens, each loaded once (for bf16: split into even and odd lanes).
        const p0 = xt0 + (<usize>c << 2), p1 = xt1 + (<usize>c << 2);
        let xa0 = v128.load(p0), xb0 = xa0, xa1 = v128.load(p1), xb1 = xa1;
        if (sizeof<W>() == 2) {
          const hi0 = v128.load(p0, 16), hi1 = v128.load(p1, 16);
          xb0 = v128.shuffle<f32>(xa0, hi0, 1, 3, 5, 7);
          xa0 = v128.shuffle<f32>(xa0, hi0, 0, 2, 4, 6);
          xb1 = v128.shuffle<f32>(xa1, hi1, 1, 3, 5, 7);
          xa1 = v128.shuffle<f32>(xa1, hi1, 0, 2, 4, 6);
        }
        let v = v128.load(w0 + off);
        let wa = widenFirst<W>(v), wb = widenSecond<W>(v, oddMask);
        a00 = accumulate<W>(a00, wa, wb, xa0, xb0);
        a01 = accumulate<W>(a01, wa, wb, xa1, xb1);
        v = v128.load(w1 + off);
        wa = widenFirst<W>(v);
        wb = widenSecond<W>(v, oddMask);
        a10 = accumulate<W>(a10, wa, wb, xa0, xb0);
        a11 = accumulate<W>(a11, wa, wb, xa1, xb1);
        v = v128.load(w2 + off);
        wa = widenFirst<W>(v);
        wb = widenSecond<W>(v, oddMask);
        a20 = accumulate<W>(a20, wa, wb, xa0, xb0);
        a21 = accumulate<W>(a21, wa, wb, xa1, xb1);
        v = v128.load(w3 + off);
        wa = widenFirst<W>(v);
        wb = widenSecond<W>(v, oddMask);
        a30 = accumulate<W>(a30, wa, wb, xa0, xb0);
        a31 = accumulate<W>(a31, wa, wb, xa1, xb1);
        off += stride;
      }
      storeBlock<W>(y, rows, r, t, xt0, vecCols, cols, w0, w1, w2, w3, a00, a10, a20, a30);
      storeBlock<W>(y, rows, r, t + 1, xt1, vecCols, cols, w0, w1, w2, w3, a01, a11, a21, a31);
    }
    for (; t < tokens; t++) {
      const xt = x + <usize>t * xRowBytes;
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      // One token: the weights stream from memory once, so the loop is written for few
      // instructions per byte, two steps per iteration. The sums are formed in the same order
      // as above, step by step, so results do not depend on the path taken.
      let p0 = w0, p1 = w1, p2 = w2, p3 = w3, px = xt;
      const xStepBytes = <usize>step << 2;
      let c = 0;
      for (; c + 2 * step <= vecCols; c += 2 * step) {
        let xa = v128.load(px), xb = xa;
        if (sizeof<W>() == 2) {
          const hi = v128.load(px, 16);
          xb = v128.shuffle<f32>(xa, hi, 1, 3, 5, 7);
          xa = v128.shuffle<f32>(xa, hi, 0, 2, 4, 6);
        }
        let v = v128.load(p0);
        a0 = accumulate<W>(a0, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        v = v128.load(p1);
        a1 = accumulate<W>(a1, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        v = v128.load(p2);
        a2 = accumulate<W>(a2, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        v = v128.load(p3);
        a3 = accumulate<W>(a3, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        xa = v128.load(px + xStepBytes);
        xb = xa;
        if (sizeof<W>() == 2) {
          const hi = v128.load(px + xStepBytes, 16);
          xb = v128.shuffle<f32>(xa, hi, 1, 3, 5, 7);
          xa = v128.shuffle<f32>(xa, hi, 0, 2, 4, 6);
        }
        v = v128.load(p0 + stride);
        a0 = accumulate<W>(a0, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        v = v128.load(p1 + stride);
        a1 = accumulate<W>(a1, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        v = v128.load(p2 + stride);
        a2 = accumulate<W>(a2, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        v = v128.load(p3 + stride);
        a3 = accumulate<W>(a3, widenFirst<W>(v), widenSecond<W>(v, oddMask), xa, xb);
        p0 += stride << 1;
        p1 += stride << 1;
        p2 += stride << 1;
        p3 += stride << 1;
        px += xStepBytes << 1;
      }
      if (c < vecCols) {
        const xa = xFirst<W>(xt, c);
        const xb = xSecond<W>(xt, c);
        a0 = stepDot<W>(a0, p0, xa, xb, oddMask);
        a1 = stepDot<W>(a1, p1, xa, xb, oddMask);
        a2 = stepDot<W>(a2, p2, xa, xb, oddMask);
        a3 = stepDot<W>(a3, p3, xa, xb, oddMask);
      }
      storeBlock<W>(y, rows, r, t, xt, vecCols, cols, w0, w1, w2, w3, a0, a1, a2, a3);
    }
  }
  for (; r < r1; r++) {
    const w0 = rowStart(w, r, wRowBytes, 8, 16, grouped);
    for (let t = 0; t < tokens; t++) {
      const xt = x + <usize>t * xRowBytes;
      let a0 = f32x4.splat(0);
      let p = w0;
      for (let c = 0; c < vecCols; c += step) {
        a0 = stepDot<W>(a0, p, xFirst<W>(xt, c), xSecond<W>(xt, c), oddMask);
        p += stride;
      }
      let s0 = hsum(a0);
      for (let c = vecCols; c < cols; c++) s0 += weightAt<W>(w0, c) * load<f32>(xt + (<usize>c << 2));
      store<f32>(y + ((<usize>t * <usize>rows + <usize>r) << 2), s0);
    }
  }
}

/** f32 weights: rows [r0, r1) of y[tokens][rows] = x[tokens][cols] · W[rows][cols]ᵀ; W is
 * stored row after row, or (`interleaved` 1) as interleaveRows leaves it. */
export function matmulF32(w: usize, x: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, interleaved: i32): void {
  matmul<f32>(w, x, y, rows, cols, tokens, r0, r1, interleaved);
}

/** bf16 weights: rows [r0, r1) of y = x · Wᵀ, accumulated in f32. */
export function matmulBF16(w: usize, x: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, interleaved: i32): void {
  matmul<u16>(w, x, y, rows, cols, tokens, r0, r1, interleaved);
}

// ---------------------------------------------------------------------------------------------
// Embedding gather: out[t] = table[ids[t]] * scale. Gemma multiplies the embedding by
// sqrt(hidden_size) in the activation dtype (f32 here); the caller passes that f32 value.
// ---------------------------------------------------------------------------------------------

/** Gathers rows of a `rows`-row f32 or bf16 table (ids are i32), stored row after row or
 * (`interleaved` 1) as interleaveRows leaves it, widens them to f32 and scales them. */
@inline function embed<W>(table: usize, rows: i32, ids: usize, tokens: i32, hidden: i32, scale: f32, out: usize, interleaved: i32): void {
  const rowBytes = <usize>hidden * sizeof<W>();
  const perChunk = 16 / sizeof<W>();
  const grouped = groupedRows(rows, rowBytes, sizeof<W>(), interleaved);
  for (let t = 0; t < tokens; t++) {
    const id = load<i32>(ids + (<usize>t << 2));
    const src = rowStart(table, id, rowBytes, 8, 16, grouped);
    const stride = chunkStride(id, 8, 16, grouped);
    const dst = out + ((<usize>t * <usize>hidden) << 2);
    for (let i = 0; i < hidden; i++) {
      const at = src + <usize>(i / perChunk) * stride + <usize>(i % perChunk) * sizeof<W>();
      const v: f32 = sizeof<W>() == 2 ? bf16ToF32(load<u16>(at)) : load<f32>(at);
      store<f32>(dst + (<usize>i << 2), v * scale);
    }
  }
}

/** out[t] = table[ids[t]] · scale for an f32 table of `rows` rows of `hidden` (ids are i32;
 * `interleaved` as for matmulF32). */
export function embedF32(table: usize, rows: i32, ids: usize, tokens: i32, hidden: i32, scale: f32, out: usize, interleaved: i32): void {
  embed<f32>(table, rows, ids, tokens, hidden, scale, out, interleaved);
}

/** out[t] = table[ids[t]] · scale for a bf16 table, widened to f32 (as embedF32). */
export function embedBF16(table: usize, rows: i32, ids: usize, tokens: i32, hidden: i32, scale: f32, out: usize, interleaved: i32): void {
  embed<u16>(table, rows, ids, tokens, hidden, scale, out, interleaved);
}
