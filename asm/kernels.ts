// The numeric kernels of the Gemma 3 forward pass, compiled to WebAssembly with SIMD.
//
// Every function here is a pure operation over pointers into linear memory (the memory is
// imported: engine/backends/wasm/runtime.ts owns it and lays out weights, KV cache and activations). The
// kernels know nothing about models or tensor names; engine/gemma3/forward.ts decides what to call.
//
// Conventions:
// - Pointers are byte addresses (usize). Activations are f32, row-major: a batch of `tokens`
//   vectors lies one after the other.
// - A weight matrix has `rows` output features, each a row of `cols` inputs (PyTorch's
//   nn.Linear layout), stored as f32 or bf16. Products always accumulate in f32.
// - No kernel allocates. Scratch space, when needed, is passed in.

// ---------------------------------------------------------------------------------------------
// Matrix products: y[t][r] = sum_c W[r][c] * x[t][c]
//
// Decode reads every weight once per token, so these loops are the engine's speed. Four rows are
// processed per pass so each load of x is shared by four weight rows, and the inner loop works
// on 4 (f32) or 8 (bf16) columns per step. Columns that do not fill a SIMD vector and rows that
// do not fill a block of four are handled by scalar/single-row tails, so any shape is valid.
// ---------------------------------------------------------------------------------------------

@inline function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) +
    (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

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

/** acc + a · b, lane-wise. The relaxed-SIMD build uses a fused multiply-add where the engine
 * has one (one instruction instead of two: these loops are instruction-bound, not memory-bound);
 * the plain build multiplies, rounds, and adds. */
@inline function madd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(acc, f32x4.mul(a, b));
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

/** Uses the touched bytes' sum (never negative) so that the loads are not optimised away. */
@inline function keepTouches(touched: i32): void {
  if (touched < 0) unreachable();
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

/** Where row r's first chunk is, in a matrix whose first `grouped` rows are stored as
 * interleaveGroups leaves groups of `groupRows` rows in chunks of `chunkBytes` (the rows after
 * them in order). */
@inline function rowStart(w: usize, r: i32, rowBytes: usize, groupRows: i32, chunkBytes: usize, grouped: i32): usize {
  if (r < grouped) {
    const g = <u32>r / <u32>groupRows, i = <u32>r % <u32>groupRows;
    return w + <usize>g * rowBytes * <usize>groupRows + <usize>i * chunkBytes;
  }
  return w + <usize>r * rowBytes;
}

/** Bytes from one chunk of row r to its next (rowStart's layout). */
@inline function chunkStride(r: i32, groupRows: i32, chunkBytes: usize, grouped: i32): usize {
  return r < grouped ? chunkBytes * <usize>groupRows : chunkBytes;
}

/** Copies n bytes (a 16-byte chunk, or a block's 16–32 bytes of quants), without a call per copy. */
@inline function copySmall(dst: usize, src: usize, n: usize): void {
  let i: usize = 0;
  for (; i + 16 <= n; i += 16) v128.store(dst + i, v128.load(src + i));
  for (; i + 2 <= n; i += 2) store<u16>(dst + i, load<u16>(src + i));
  if (i < n) store<u8>(dst + i, load<u8>(src + i));
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

/** embed for an f32 table. */
export function embedF32(table: usize, rows: i32, ids: usize, tokens: i32, hidden: i32, scale: f32, out: usize, interleaved: i32): void {
  embed<f32>(table, rows, ids, tokens, hidden, scale, out, interleaved);
}

/** embed for a bf16 table. */
export function embedBF16(table: usize, rows: i32, ids: usize, tokens: i32, hidden: i32, scale: f32, out: usize, interleaved: i32): void {
  embed<u16>(table, rows, ids, tokens, hidden, scale, out, interleaved);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm, Gemma flavour: out = x / sqrt(mean(x²) + eps) * (1 + w).
// Gemma stores the norm weight as an offset from 1 (a zero-initialised weight is the identity).
// The sum of squares is accumulated in f64: it costs nothing next to the matrix products and
// keeps the normalisation exact to f32 rounding for any width.
// Applied to `rows` consecutive vectors of length n (all heads of q or k at once, for example).
// out may equal x.
// ---------------------------------------------------------------------------------------------

/** out[r] = x[r] * rsqrt(mean(x[r]²) + eps) * (1 + w) for each of `rows` vectors of length n. */
export function rmsNorm(x: usize, w: usize, out: usize, rows: i32, n: i32, eps: f32): void {
  const rowBytes = <usize>n << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rowBytes;
    const or = out + <usize>r * rowBytes;
    let ss: f64 = 0;
    for (let i = 0; i < n; i++) {
      const v = <f64>load<f32>(xr + (<usize>i << 2));
      ss += v * v;
    }
    const inv = <f32>(1.0 / Math.sqrt(ss / <f64>n + <f64>eps));
    for (let i = 0; i < n; i++) {
      const off = <usize>i << 2;
      store<f32>(or + off, load<f32>(xr + off) * inv * (<f32>1.0 + load<f32>(w + off)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Rotary position embedding, rotate-half form (as in Hugging Face's Gemma): element i of a head
// is paired with element i + headDim/2, and the pair is rotated by pos * base^(-2i/headDim).
// Linear RoPE scaling (larger Gemma 3 models, full-attention layers only) divides the position
// by `factor`. Angles and their sine/cosine are computed in f64 so that long positions do not
// lose phase; each (token, frequency) pair is computed once and applied to every head.
// ---------------------------------------------------------------------------------------------

/** Rotates `heads` heads of tokens [t0, t1) in place; token t sits at startPos + t. */
export function ropeInPlace(x: usize, t0: i32, t1: i32, heads: i32, headDim: i32, startPos: i32, base: f64, factor: f64): void {
  const half = headDim >> 1;
  const tokenBytes = (<usize>heads * <usize>headDim) << 2;
  const headBytes = <usize>headDim << 2;
  for (let t = t0; t < t1; t++) {
    const pos = <f64>(startPos + t) / factor;
    const xt = x + <usize>t * tokenBytes;
    for (let i = 0; i < half; i++) {
      const invFreq = Math.pow(base, -(<f64>(2 * i)) / <f64>headDim);
      const angle = pos * invFreq;
      const c = <f32>Math.cos(angle);
      const s = <f32>Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const p1 = xt + <usize>h * headBytes + (<usize>i << 2);
        const p2 = p1 + (<usize>half << 2);
        const x1 = load<f32>(p1);
        const x2 = load<f32>(p2);
        store<f32>(p1, x1 * c - x2 * s);
        store<f32>(p2, x2 * c + x1 * s);
      }
    }
  }
}

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
// `scores` is scratch of at least (lastPos + 1) floats, bounded by the visible span.
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
      let sum: f32 = 0;
      for (let j = 0; j < n; j++) {
        const p = Mathf.exp(load<f32>(scores + (<usize>j << 2)) - maxScore);
        store<f32>(scores + (<usize>j << 2), p);
        sum += p;
      }
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

// ---------------------------------------------------------------------------------------------
// Feed-forward gate: GeGLU with the tanh approximation of GELU (gelu_pytorch_tanh):
// out = gelu(gate) * up, gelu(x) = 0.5 x (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x³).
// Since 0.5 (1 + tanh(z)) = 1 / (1 + exp(-2z)) exactly, gelu(x) = x / (1 + exp(-2z)): one exp
// and one division instead of tanh, with no cancellation for negative x (exp overflows to
// infinity and the quotient to -0, as the tanh form rounds to).
// ---------------------------------------------------------------------------------------------

/** out[i] = geluTanh(gate[i]) * up[i] for i in [i0, i1); out may equal gate or up. */
export function geglu(gate: usize, up: usize, out: usize, i0: i32, i1: i32): void {
  const k0: f32 = 0.7978845608028654; // sqrt(2 / pi)
  const k1: f32 = 0.044715;
  for (let i = i0; i < i1; i++) {
    const off = <usize>i << 2;
    const x = load<f32>(gate + off);
    const g = x / (<f32>1.0 + Mathf.exp(<f32>-2.0 * k0 * (x + k1 * x * x * x)));
    store<f32>(out + off, g * load<f32>(up + off));
  }
}

// ---------------------------------------------------------------------------------------------
// Residual connection: x += y.
// ---------------------------------------------------------------------------------------------

/** x[i] += y[i] for n floats. */
export function addInPlace(x: usize, y: usize, n: i32): void {
  const vecN = n & ~3;
  for (let i = 0; i < vecN; i += 4) {
    const off = <usize>i << 2;
    v128.store(x + off, f32x4.add(v128.load(x + off), v128.load(y + off)));
  }
  for (let i = vecN; i < n; i++) {
    const off = <usize>i << 2;
    store<f32>(x + off, load<f32>(x + off) + load<f32>(y + off));
  }
}

// ---------------------------------------------------------------------------------------------
// A streaming read, for measuring the memory bandwidth the matrix products compete for.
// ---------------------------------------------------------------------------------------------

/** Sums bytes [start, end) of a buffer as f32x4 lanes (the sum only keeps the loads alive). */
export function streamRead(p: usize, start: usize, end: usize): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  for (let i = start; i + 64 <= end; i += 64) {
    a0 = f32x4.add(a0, v128.load(p + i));
    a1 = f32x4.add(a1, v128.load(p + i, 16));
    a2 = f32x4.add(a2, v128.load(p + i, 32));
    a3 = f32x4.add(a3, v128.load(p + i, 48));
  }
  return hsum(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)));
}

// ---------------------------------------------------------------------------------------------
// Block-quantized weights (ggml's layouts; engine/formats/quant.ts spells out every byte). A product with
// quantized weights first quantizes the activations per 32-block to int8 with an f32 scale, as
// llama.cpp does, so each block's dot product is exact integer arithmetic, scaled once:
//   y += (Σ qw·qx) · dw · dx
// Formats (FMT_*): Q8_0 (d·q), Q4_0 (d·(q−8)), Q5_0 (d·(q−16)), Q4_K (d·sc·q − dmin·m per 32),
// Q6_K (d·sc·(q−32) per 16). Q8_0 weights are loaded straight into int16 lanes and multiplied with
// i32x4.dot_i16x8_s (q8WidenedDot). For the 4- to 6-bit formats the plain build widens the same
// way; the relaxed build multiplies them with int8 activations directly
// (i16x8.relaxed_dot_i8x16_i7x16_s, exact because the weights fit in 7 bits).
// ---------------------------------------------------------------------------------------------

const FMT_Q8_0: i32 = 0;
const FMT_Q4_0: i32 = 1;
const FMT_Q5_0: i32 = 2;
const FMT_Q4_K: i32 = 3;
const FMT_Q6_K: i32 = 4;

const QX_BLOCK: i32 = 32;

/** IEEE half → f32, exact for every finite half: the half's bits moved into an f32's place are
 * the same number times 2^-112 (subnormals included), so one multiply by 2^112 fixes the scale.
 * (Infinities and NaNs come out as large finite values; scales are never either.) */
@inline function halfToF32(h: u32): f32 {
  return reinterpret<f32>(((h & 0x7fff) << 13) | ((h & 0x8000) << 16)) * <f32>5.192296858534828e33;
}

/** Quantizes `tokens` rows of `cols` f32 (cols a multiple of 32) to int8 qx, with per 32-block an
 * f32 scale in sx (d = max|x| / 127, q = round(x / d)) and the i32 sum of its q in sx + 4·blocks
 * (the K-quants' minimums and the relaxed Q4_0 offset need it). */
export function quantizeRowsQ8(x: usize, tokens: i32, cols: i32, qx: usize, sx: usize): void {
  const blocks = tokens * (cols / QX_BLOCK);
  quantizeBlocksQ8(x, qx, sx, sx + (<usize>blocks << 2), 0, blocks);
}

/** Blocks [b0, b1) of quantizeRowsQ8 (the blocks of all rows, in order): scales to sx, sums to
 * sums. Threads split the blocks. */
export function quantizeBlocksQ8(x: usize, qx: usize, sx: usize, sums: usize, b0: i32, b1: i32): void {
  for (let b = b0; b < b1; b++) {
    const src = x + (<usize>b << 7);
    let amax: f32 = 0;
    for (let i = 0; i < QX_BLOCK; i++) {
      const v = Mathf.abs(load<f32>(src + (<usize>i << 2)));
      if (v > amax) amax = v;
    }
    const d: f32 = amax / <f32>127.0;
    const id: f32 = d != 0 ? <f32>1.0 / d : 0;
    store<f32>(sx + (<usize>b << 2), d);
    let sum: i32 = 0;
    for (let i = 0; i < QX_BLOCK; i++) {
      const q = <i32>nearest<f32>(load<f32>(src + (<usize>i << 2)) * id);
      store<i8>(qx + (<usize>b << 5) + <usize>i, <i8>q);
      sum += q;
    }
    store<i32>(sums + (<usize>b << 2), sum);
  }
}

/** i8x16.splat(v) that the engine cannot see as a constant (`zero` is 0 at run time: callers
 * pass a shifted argument such as tokens >>> 31). V8 rebuilds a v128 constant at every use in a
 * loop (a 64-bit immediate moved in and duplicated: three instructions); a value computed before
 * the loop stays in a register, or is reloaded from the stack inside the instruction using it. */
@inline function keptSplat8(v: i32, zero: i32): v128 {
  return i8x16.splat(<i8>(v | zero));
}

/** Bytes 1, 2, 4, … 128 twice: one bit per lane for Q5_0's fifth bits (kept out of loops like
 * keptSplat8; `zero` is 0 at run time). */
@inline function q5BitMasks(zero: i32): v128 {
  return i64x2.splat(0x8040201008040201 | <i64>zero);
}

/** Swizzle lanes that repeat byte 0 eight times, then byte 1 (kept out of loops). */
@inline function q5ByteSpread(zero: i32): v128 {
  return i64x2.replace_lane(i64x2.splat(<i64>zero), 1, 0x0101010101010101 | <i64>zero);
}

/** In Q5_0's engine bit order (permuteQ5_0Bits), the bit that lane j of `half` tests in the
 * byte j mod 4 of qh: 1 << (j / 4 + 4 · half), lanes 0–3 first (kept out of loops). */
@inline function q5LaneBits(half: i32, zero: i32): v128 {
  const lanes0to7: i64 = 0x0202020201010101, lanes8to15: i64 = 0x0808080804040404;
  return i64x2.replace_lane(i64x2.splat((lanes0to7 << (half << 2)) | <i64>zero), 1, (lanes8to15 << (half << 2)) | <i64>zero);
}

/** Q5_0's two constants for block32Weights (kept out of loops): for qh in ggml's order
 * (`permuted` false) q5BitMasks and q5ByteSpread, in the engine's order the two halves'
 * q5LaneBits. */
@inline function q5Constant(which: i32, permuted: bool, zero: i32): v128 {
  if (permuted) return q5LaneBits(which, zero);
  return which == 0 ? q5BitMasks(zero) : q5ByteSpread(zero);
}

/** The high nibbles of 16 bytes as 16 values 0..15. x86 has no byte shift (i8x16.shr_u costs a
 * word shift, a mask and more), so shift 16-bit lanes and mask. */
@inline function highNibbles(v: v128, low4: v128): v128 {
  return v128.and(i16x8.shr_u(v, 4), low4);
}

/** Σ of 32 products of int8 weights (two i8x16 vectors: elements 0–15, 16–31) with an activation
 * block given as four i16x8 vectors, as i32x4 lanes. */
@inline function i8BlockDot(w0: v128, w1: v128, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  let s = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w0), x0);
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w0), x1));
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w1), x2));
  return i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w1), x3));
}

/** Σ over 16 elements of int8 weights w and an activation half-block given as two i16x8. */
@inline function i8HalfDot(w: v128, x0: v128, x1: v128): v128 {
  return i32x4.add(i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w), x0), i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w), x1));
}


/** Σ of 32 products of weights 0..31 (lo: elements 0–15, hi: 16–31) with int8 activations
 * (xa, xb), as i32x4 lanes, in the relaxed build. Each 16-bit lane of a relaxed dot is a pair of
 * products of at most 31·127, so the two halves' pair sums add without overflow in 16 bits and
 * widen to 32 once. */
@inline function nibbleBlockDot(lo: v128, hi: v128, xa: v128, xb: v128): v128 {
  return i32x4.extadd_pairwise_i16x8_s(nibblePairSums(lo, hi, xa, xb));
}

/** nibbleBlockDot before its widening: eight 16-bit lanes, each the sum of four products. */
@inline function nibblePairSums(lo: v128, hi: v128, xa: v128, xb: v128): v128 {
  return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(xa, lo), i16x8.relaxed_dot_i8x16_i7x16_s(xb, hi));
}

/** Bytes per block of each 32-block format. */
@inline function blockBytes32(fmt: i32): i32 {
  return fmt == FMT_Q8_0 ? 34 : fmt == FMT_Q4_0 ? 18 : 22;
}

/** The weights of elements 0–15 (`half` 0) or 16–31 (`half` 1) of one 32-block of a Q4_0 or
 * Q5_0 row at wb, as int8 lanes without their offset; `permuted`: Q5_0's qh in the engine's bit
 * order (permuteQ5_0Bits), else ggml's. low4, offset (8 for Q4_0, 16 for Q5_0), q5a and q5b are
 * constants its callers keep out of their loops (keptSplat8, q5Constant). */
@inline function block32Weights(fmt: i32, wb: usize, half: i32, permuted: bool, low4: v128, offset: v128, q5a: v128, q5b: v128): v128 {
  if (fmt == FMT_Q8_0) return low4; // unused: q8WidenedDot reads Q8_0 weights itself
  const nib = fmt == FMT_Q4_0 ? v128.load(wb, 2) : v128.load(wb, 6);
  const q = half == 0 ? v128.and(nib, low4) : highNibbles(nib, low4);
  if (fmt != FMT_Q5_0) return q;
  if (permuted) {
    // The engine's order: qh repeated in every 32-bit lane puts byte j mod 4 in lane j, which
    // holds weight j's fifth bit at bit j / 4 (+ 4 for the second half). Test it in place.
    const laneBits = half == 0 ? q5a : q5b;
    return v128.or(q, v128.and(i8x16.eq(v128.and(v128.load32_splat(wb, 2), laneBits), laneBits), offset));
  }
  // ggml's order: bit j of the u32 qh is bit 4 of weight j. Spread its bytes over the lanes
  // (byte 0 to lanes 0–7, byte 1 to lanes 8–15 for the first half; bytes 2 and 3 for the second)
  // and test one bit per lane (q5a: q5BitMasks, q5b: q5ByteSpread).
  const qh = load<u32>(wb, 2);
  const bytes = v128.swizzle(i32x4.splat(half == 0 ? qh : qh >>> 16), q5b);
  return v128.or(q, v128.and(i8x16.eq(v128.and(bytes, q5a), q5a), offset));
}

/** Σ of the 32 products of the Q8_0 block at wb with an activation block given as four i16x8
 * (x0–x3), as i32x4 lanes: each 8 weights loaded straight into i16 lanes (one instruction on
 * x86), so every int8 weight, −128 included, is exact in both builds. It replaced the relaxed
 * build's sign trick (|w| times ±x through relaxed_dot, 9 instructions per 16 weights against 6
 * here): measured +3–5% for decode there, and +20–29% (decode) and +40–50% (prompt pairs, which
 * read each block twice, the second time from cache) in the plain build. */
@inline function q8WidenedDot(wb: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const s01 = i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(wb, 2), x0), i32x4.dot_i16x8_s(v128.load8x8_s(wb, 10), x1));
  const s23 = i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(wb, 18), x2), i32x4.dot_i16x8_s(v128.load8x8_s(wb, 26), x3));
  return i32x4.add(s01, s23);
}

/** (Σ qw·qx) of the 32-block at wb, from its weights lo, hi (block32Weights; Q8_0 reads its own)
 * and the block's int8 activations xa, xb (x0–x3: the same widened to i16), as i32x4 lanes (i16x8
 * where sumsIn16Bits) whose sum is the block's dot product; the relaxed build leaves the offset
 * correction (8 or 16 · Σ qx) out. */
@inline function block32DotOf(fmt: i32, wb: usize, lo: v128, hi: v128, xa: v128, xb: v128, x0: v128, x1: v128, x2: v128, x3: v128, offset: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    if (fmt == FMT_Q4_0) return nibblePairSums(lo, hi, xa, xb); // sumsIn16Bits
  }
  if (fmt == FMT_Q8_0) return q8WidenedDot(wb, x0, x1, x2, x3);
  if (ASC_FEATURE_RELAXED_SIMD) return nibbleBlockDot(lo, hi, xa, xb);
  return i8BlockDot(i8x16.sub(lo, offset), i8x16.sub(hi, offset), x0, x1, x2, x3);
}

/** Whether block32DotOf leaves its sums in 16-bit lanes (nibblePairSums) for fourRowSums to widen
 * once for four rows: the relaxed build's Q4_0, whose 32 products of weights 0..15 with int8
 * activations sum to at most 32·15·127 = 60,960 but any 16 of them to 30,480, within an i16.
 * Measured against widening each row's sums, same bits: decode +3–7%, 64-token products +2–3%. */
@inline function sumsIn16Bits(fmt: i32): bool {
  return ASC_FEATURE_RELAXED_SIMD && fmt == FMT_Q4_0;
}

/** Lane r = the block sum of row r, from four rows' block32DotOf results. */
@inline function fourRowSums(fmt: i32, v0: v128, v1: v128, v2: v128, v3: v128): v128 {
  return sumsIn16Bits(fmt) ? transposeSum16(v0, v1, v2, v3) : transposeSum(v0, v1, v2, v3);
}

/** transposeSum of four i16x8 vectors, whose lane sums come out as i32 lanes: its steps on 16-bit
 * lanes (after them each lane holds a quarter of a vector's lanes), then one widening. For sums
 * of 32 products of weights 0..15 with int8 activations (sumsIn16Bits). */
@inline function transposeSum16(v0: v128, v1: v128, v2: v128, v3: v128): v128 {
  const t01 = i16x8.add(v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), v128.shuffle<i32>(v0, v1, 2, 6, 3, 7));
  const t23 = i16x8.add(v128.shuffle<i32>(v2, v3, 0, 4, 1, 5), v128.shuffle<i32>(v2, v3, 2, 6, 3, 7));
  return i32x4.extadd_pairwise_i16x8_s(i16x8.add(v128.shuffle<i32>(t01, t23, 0, 1, 4, 5), v128.shuffle<i32>(t01, t23, 2, 3, 6, 7)));
}

/** block32DotOf of the block at wb. */
@inline function block32Dot(fmt: i32, wb: usize, permuted: bool, xa: v128, xb: v128, x0: v128, x1: v128, x2: v128, x3: v128, low4: v128, offset: v128, q5a: v128, q5b: v128): v128 {
  const lo = block32Weights(fmt, wb, 0, permuted, low4, offset, q5a, q5b);
  const hi = block32Weights(fmt, wb, 1, permuted, low4, offset, q5a, q5b);
  return block32DotOf(fmt, wb, lo, hi, xa, xb, x0, x1, x2, x3, offset);
}

/** Whether block32Dot leaves an offset correction out: the relaxed build's Q4_0 and Q5_0. */
@inline function block32HasOffset(fmt: i32): bool {
  return ASC_FEATURE_RELAXED_SIMD && fmt != FMT_Q8_0;
}

/** The block's offset correction where block32HasOffset (Σ (q − o)·x = Σ q·x − o·Σ x), else 0. */
@inline function block32Offset(fmt: i32, total: i32): i32 {
  if (!block32HasOffset(fmt)) return 0;
  return fmt == FMT_Q4_0 ? total << 3 : total << 4;
}

/** Lane r of the result = the sum of the four lanes of v_r: four rows' block sums in one vector. */
@inline function transposeSum(v0: v128, v1: v128, v2: v128, v3: v128): v128 {
  const t01 = i32x4.add(v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), v128.shuffle<i32>(v0, v1, 2, 6, 3, 7));
  const t23 = i32x4.add(v128.shuffle<i32>(v2, v3, 0, 4, 1, 5), v128.shuffle<i32>(v2, v3, 2, 6, 3, 7));
  return i32x4.add(v128.shuffle<i32>(t01, t23, 0, 1, 4, 5), v128.shuffle<i32>(t01, t23, 2, 3, 6, 7));
}

/** IEEE halves (in the low 16 bits of each i32 lane) → f32 lanes, as halfToF32: shifted up
 * and arithmetically back down, the sign lands in bit 31 (its copies in bits 30–28 are masked
 * off) and exponent and mantissa in their f32 places. `mask` and `scale` are the constants
 * 0x8fffe000 and 2^112, passed in to keep them out of loops (see keptSplat8). */
@inline function halvesToF32(h: v128, mask: v128, scale: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shr_s(i32x4.shl(h, 16), 3), mask), scale);
}

/** The f16 scales of four rows' blocks (the first at wb, the next rowStep bytes on) as f32
 * lanes; mask and scale as for halvesToF32. */
@inline function fourScales(wb: usize, rowStep: usize, mask: v128, scale: v128): v128 {
  let h = i32x4.splat(<i32>load<u16>(wb));
  h = i32x4.replace_lane(h, 1, <i32>load<u16>(wb + rowStep));
  h = i32x4.replace_lane(h, 2, <i32>load<u16>(wb + 2 * rowStep));
  h = i32x4.replace_lane(h, 3, <i32>load<u16>(wb + 3 * rowStep));
  return halvesToF32(h, mask, scale);
}

/** The four rows' scales of the block whose row-0 weights fourRowsBlock32 reads at wb, as f32
 * lanes: in an interleaved group the four halves are stored together, 6 bytes before (see
 * interleaveBlockRows); rows in order have theirs at each row's block (fourScales). */
@inline function groupScales(interleaved: bool, wb: usize, rowStep: usize, mask: v128, scale: v128): v128 {
  if (interleaved) return halvesToF32(v128.load16x4_u(wb - 6), mask, scale);
  return fourScales(wb, rowStep, mask, scale);
}

/** Four rows from r of y = x · Wᵀ for a 32-block format, every token: each block's four integer
 * sums are gathered into one vector, scaled by the four rows' scales at once and accumulated
 * lane = row. `interleaved` (a constant at each call): the four rows are a group stored block by
 * block (see interleaveBlockRows), else rows in order. */
@inline function fourRowsBlock32(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r: i32, interleaved: bool): void {
  const low4 = keptSplat8(15, tokens >>> 31);
  const offset = keptSplat8(fmt == FMT_Q4_0 ? 8 : 16, tokens >>> 31);
  const q5a = q5Constant(0, interleaved, tokens >>> 31), q5b = q5Constant(1, interleaved, tokens >>> 31);
  const halfMask = i32x4.splat(0x8fffe000 | (tokens >>> 31));
  const halfScale = i32x4.splat(0x77800000 | (tokens >>> 31)); // 2^112
  const blocks = cols / QX_BLOCK;
  const bytes = blockBytes32(fmt);
  const rowBytes = <usize>blocks * bytes;
  const sums = sx + (<usize>(tokens * blocks) << 2);
  const w0 = w + <usize>r * rowBytes;
  // Where row 0's weights of block 0 are read (its quants 2 bytes on, as in a block in order),
  // from one row's block to the next row's, and from one block of a row to its next.
  const q0 = interleaved ? w0 + 6 : w0;
  const rowStep: usize = interleaved ? <usize>(bytes - 2) : rowBytes;
  const blockStep: usize = interleaved ? <usize>(bytes << 2) : <usize>bytes;
  let t = 0;
  // A prompt's tokens in pairs: each block's weights are loaded, unpacked and scaled once for
  // both. Every lane is the same number as the one-token loop below gives it.
  for (; t + 2 <= tokens; t += 2) {
    const xq0 = qx + <usize>t * <usize>cols, xq1 = xq0 + <usize>cols;
    const xs0 = sx + ((<usize>t * <usize>blocks) << 2), xs1 = xs0 + (<usize>blocks << 2);
    const xsum0 = sums + ((<usize>t * <usize>blocks) << 2), xsum1 = xsum0 + (<usize>blocks << 2);
    let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
    for (let b = 0; b < blocks; b++) {
      const boff = <usize>b << 5;
      const xa0 = v128.load(xq0 + boff), xb0 = v128.load(xq0 + boff, 16);
      const xa1 = v128.load(xq1 + boff), xb1 = v128.load(xq1 + boff, 16);
      const x00 = i16x8.extend_low_i8x16_s(xa0), x01 = i16x8.extend_high_i8x16_s(xa0);
      const x02 = i16x8.extend_low_i8x16_s(xb0), x03 = i16x8.extend_high_i8x16_s(xb0);
      const x10 = i16x8.extend_low_i8x16_s(xa1), x11 = i16x8.extend_high_i8x16_s(xa1);
      const x12 = i16x8.extend_low_i8x16_s(xb1), x13 = i16x8.extend_high_i8x16_s(xb1);
      const wb = q0 + <usize>b * blockStep;
      let lo = block32Weights(fmt, wb, 0, interleaved, low4, offset, q5a, q5b);
      let hi = block32Weights(fmt, wb, 1, interleaved, low4, offset, q5a, q5b);
      const d00 = block32DotOf(fmt, wb, lo, hi, xa0, xb0, x00, x01, x02, x03, offset);
      const d10 = block32DotOf(fmt, wb, lo, hi, xa1, xb1, x10, x11, x12, x13, offset);
      lo = block32Weights(fmt, wb + rowStep, 0, interleaved, low4, offset, q5a, q5b);
      hi = block32Weights(fmt, wb + rowStep, 1, interleaved, low4, offset, q5a, q5b);
      const d01 = block32DotOf(fmt, wb + rowStep, lo, hi, xa0, xb0, x00, x01, x02, x03, offset);
      const d11 = block32DotOf(fmt, wb + rowStep, lo, hi, xa1, xb1, x10, x11, x12, x13, offset);
      lo = block32Weights(fmt, wb + 2 * rowStep, 0, interleaved, low4, offset, q5a, q5b);
      hi = block32Weights(fmt, wb + 2 * rowStep, 1, interleaved, low4, offset, q5a, q5b);
      const d02 = block32DotOf(fmt, wb + 2 * rowStep, lo, hi, xa0, xb0, x00, x01, x02, x03, offset);
      const d12 = block32DotOf(fmt, wb + 2 * rowStep, lo, hi, xa1, xb1, x10, x11, x12, x13, offset);
      lo = block32Weights(fmt, wb + 3 * rowStep, 0, interleaved, low4, offset, q5a, q5b);
      hi = block32Weights(fmt, wb + 3 * rowStep, 1, interleaved, low4, offset, q5a, q5b);
      const d03 = block32DotOf(fmt, wb + 3 * rowStep, lo, hi, xa0, xb0, x00, x01, x02, x03, offset);
      const d13 = block32DotOf(fmt, wb + 3 * rowStep, lo, hi, xa1, xb1, x10, x11, x12, x13, offset);
      let dots0 = fourRowSums(fmt, d00, d01, d02, d03);
      let dots1 = fourRowSums(fmt, d10, d11, d12, d13);
      if (block32HasOffset(fmt)) {
        dots0 = i32x4.sub(dots0, i32x4.splat(block32Offset(fmt, load<i32>(xsum0 + (<usize>b << 2)))));
        dots1 = i32x4.sub(dots1, i32x4.splat(block32Offset(fmt, load<i32>(xsum1 + (<usize>b << 2)))));
      }
      const dw = groupScales(interleaved, wb, rowStep, halfMask, halfScale);
      acc0 = madd(f32x4.convert_i32x4_s(dots0), f32x4.mul(dw, v128.load32_splat(xs0 + (<usize>b << 2))), acc0);
      acc1 = madd(f32x4.convert_i32x4_s(dots1), f32x4.mul(dw, v128.load32_splat(xs1 + (<usize>b << 2))), acc1);
    }
    v128.store(y + ((<usize>t * <usize>rows + <usize>r) << 2), acc0);
    v128.store(y + ((<usize>(t + 1) * <usize>rows + <usize>r) << 2), acc1);
  }
  for (; t < tokens; t++) {
    const xq = qx + <usize>t * <usize>cols;
    const xs = sx + ((<usize>t * <usize>blocks) << 2);
    const xsum = sums + ((<usize>t * <usize>blocks) << 2);
    let acc = f32x4.splat(0);
    for (let b = 0; b < blocks; b++) {
      const xbp = xq + (<usize>b << 5);
      const xa = v128.load(xbp), xb = v128.load(xbp, 16);
      const x0 = i16x8.extend_low_i8x16_s(xa), x1 = i16x8.extend_high_i8x16_s(xa);
      const x2 = i16x8.extend_low_i8x16_s(xb), x3 = i16x8.extend_high_i8x16_s(xb);
      const wb = q0 + <usize>b * blockStep;
      let dots = fourRowSums(
        fmt,
        block32Dot(fmt, wb, interleaved, xa, xb, x0, x1, x2, x3, low4, offset, q5a, q5b),
        block32Dot(fmt, wb + rowStep, interleaved, xa, xb, x0, x1, x2, x3, low4, offset, q5a, q5b),
        block32Dot(fmt, wb + 2 * rowStep, interleaved, xa, xb, x0, x1, x2, x3, low4, offset, q5a, q5b),
        block32Dot(fmt, wb + 3 * rowStep, interleaved, xa, xb, x0, x1, x2, x3, low4, offset, q5a, q5b),
      );
      if (block32HasOffset(fmt)) {
        dots = i32x4.sub(dots, i32x4.splat(block32Offset(fmt, load<i32>(xsum + (<usize>b << 2)))));
      }
      const scale = f32x4.mul(groupScales(interleaved, wb, rowStep, halfMask, halfScale), v128.load32_splat(xs + (<usize>b << 2)));
      acc = madd(f32x4.convert_i32x4_s(dots), scale, acc);
    }
    v128.store(y + ((<usize>t * <usize>rows + <usize>r) << 2), acc);
  }
}

/** One row of y = x · Wᵀ for a 32-block format, every token (rows outside whole groups of four
 * in the range): its blocks' weights are read from `wr` (blockRowWeights), their scales from
 * `sr` (blockRowScales), `blockStep` bytes apart. */
@inline function oneRowBlock32(fmt: i32, wr: usize, sr: usize, blockStep: usize, permuted: bool, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r: i32): void {
  const low4 = keptSplat8(15, tokens >>> 31);
  const offset = keptSplat8(fmt == FMT_Q4_0 ? 8 : 16, tokens >>> 31);
  const q5a = q5Constant(0, permuted, tokens >>> 31), q5b = q5Constant(1, permuted, tokens >>> 31);
  const blocks = cols / QX_BLOCK;
  const sums = sx + (<usize>(tokens * blocks) << 2);
  for (let t = 0; t < tokens; t++) {
    const xq = qx + <usize>t * <usize>cols;
    const xs = sx + ((<usize>t * <usize>blocks) << 2);
    const xsum = sums + ((<usize>t * <usize>blocks) << 2);
    let acc: f32 = 0;
    for (let b = 0; b < blocks; b++) {
      const xbp = xq + (<usize>b << 5);
      const xa = v128.load(xbp), xb = v128.load(xbp, 16);
      const wb = wr + <usize>b * blockStep;
      const d = block32Dot(fmt, wb, permuted, xa, xb, i16x8.extend_low_i8x16_s(xa), i16x8.extend_high_i8x16_s(xa), i16x8.extend_low_i8x16_s(xb), i16x8.extend_high_i8x16_s(xb), low4, offset, q5a, q5b);
      const v = sumsIn16Bits(fmt) ? i32x4.extadd_pairwise_i16x8_s(d) : d;
      const dot = i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) + i32x4.extract_lane(v, 3) -
        block32Offset(fmt, load<i32>(xsum + (<usize>b << 2)));
      acc += <f32>dot * (halfToF32(load<u16>(sr + <usize>b * blockStep)) * load<f32>(xs + (<usize>b << 2)));
    }
    store<f32>(y + ((<usize>t * <usize>rows + <usize>r) << 2), acc);
  }
}

// Interleaved blocks. As for f32 and bf16 rows (interleaveRows), the four rows that decode reads
// side by side are, stored in order, short streams (a Q8_0 row of the 270M is 680 bytes). The
// engine stores Q8_0, Q4_0 and Q5_0 matrices in groups of four rows, block by block: for block b
// of a group, at the group's start + 4b · block bytes, the four rows' f16 scales, then the four
// rows' quants (the rest of each block) one after the other. A group is one stream, and the four
// scales are one load. Measured single-threaded on a 262,144 × 640 matrix against rows in order
// with touching ahead (same weights, the same bits out): Q8_0 +14–19%, Q4_0 +14–16%; rows of 2048
// columns +1–6%. The scales together, against each at its own block: decode Q8_0 +3–6%, Q4_0
// +4–9%, Q5_0 +7%; 64-token products +12–17%. The rows after the last whole group stay in order.

/** Rewrites a `rows` × `cols` matrix of a 32-block format at w, stored row after row, with its
 * groups of four rows interleaved block by block, in place; `scratch` holds four rows. Q5_0's
 * fifth bits also move to the engine's order (permuteQ5_0Bits), in every block. */
export function interleaveBlockRows(fmt: i32, w: usize, rows: i32, cols: i32, scratch: usize): void {
  const bytes = <usize>blockBytes32(fmt), quantBytes = bytes - 2;
  const blocks = <usize>(cols / QX_BLOCK), rowBytes = blocks * bytes;
  for (let g = 0; g < rows >> 2; g++) {
    const base = w + <usize>g * 4 * rowBytes;
    memory.copy(scratch, base, 4 * rowBytes);
    for (let b: usize = 0; b < blocks; b++) {
      const dst = base + b * 4 * bytes;
      for (let i: usize = 0; i < 4; i++) {
        const src = scratch + i * rowBytes + b * bytes;
        store<u16>(dst + 2 * i, load<u16>(src));
        copySmall(dst + 8 + i * quantBytes, src + 2, quantBytes);
      }
    }
  }
  if (fmt != FMT_Q5_0) return;
  // qh: the first 4 bytes of a block's quants (in a group, of each row's).
  const groupsEnd = w + <usize>(rows & ~3) * rowBytes, end = w + <usize>rows * rowBytes;
  for (let gb = w; gb < groupsEnd; gb += 4 * bytes) {
    for (let q = gb + 8; q < gb + 4 * bytes; q += quantBytes) store<u32>(q, permuteQ5_0Bits(load<u32>(q)));
  }
  for (let b = groupsEnd; b < end; b += bytes) store<u32>(b, permuteQ5_0Bits(load<u32>(b, 2)), 2);
}

/** Where row r's weights of its first block are read (as from a block in order: its quants 2
 * bytes on), in a 32-block matrix of `bytes`-byte blocks whose first `grouped` rows are
 * interleaved (interleaveBlockRows); its next blocks follow every chunkStride(r, 4, bytes,
 * grouped) bytes. */
@inline function blockRowWeights(w: usize, r: i32, rowBytes: usize, bytes: usize, grouped: i32): usize {
  if (r >= grouped) return w + <usize>r * rowBytes;
  return w + <usize>(r & ~3) * rowBytes + 6 + <usize>(r & 3) * (bytes - 2);
}

/** Where row r's scale of its first block is (blockRowWeights' layout). */
@inline function blockRowScales(w: usize, r: i32, rowBytes: usize, grouped: i32): usize {
  if (r >= grouped) return w + <usize>r * rowBytes;
  return w + <usize>(r & ~3) * rowBytes + (<usize>(r & 3) << 1);
}

// Q5_0's fifth bits. ggml stores them as a u32 qh whose bit j belongs to weight j. Getting one
// bit per lane out of that takes a byte shuffle per 16 weights (and in wasm a saturating add that
// keeps its indices in range). The engine rearranges qh once, at load (with the interleaving,
// so the WebGPU path keeps ggml's order), so that the bit of weight j = 16h + 4a + b (h: the half,
// a, b: 0..3) sits in byte b at bit a + 4h: qh repeated in the four 32-bit lanes of a vector then
// puts each weight's bit into its own lane, tested with one mask per half (q5LaneBits). Measured
// against ggml's order, one thread, same bits: decode +20–33%, 64-token products +17% (plain
// build +15%, +11%).

/** Weight j's (0..31) bit position in a Q5_0 qh in the engine's order. */
@inline function q5BitPosition(j: i32): i32 {
  return ((j & 3) << 3) | ((j & 15) >> 2) | ((j >> 4) << 2);
}

/** A Q5_0 qh in ggml's order rearranged to the engine's: nibble k of qh (weights 4k..4k+3) goes
 * to bit k of bytes 0–3. A multiply by 2^0 + 2^7 + 2^14 + 2^21 places copies of the nibble
 * that put its bit b at bit 8b (the copies do not overlap, so nothing carries). */
function permuteQ5_0Bits(qh: u32): u32 {
  let out: u32 = 0;
  for (let k: u32 = 0; k < 8; k++) out |= ((((qh >> (k << 2)) & 15) * 0x204081) & 0x01010101) << k;
  return out;
}

/** Rows [r0, r1) of y = x · Wᵀ for a 32-block format (Q8_0, Q4_0, Q5_0), stored in order or
 * (`interleaved` 1) as interleaveBlockRows leaves it. Rows go in groups of four (thread splits
 * are multiples of four, so a row's group, and with it every bit of its result, does not depend
 * on the thread count): from r0 for rows in order, on the stored groups for interleaved rows;
 * the rest one by one. */
@inline function matmulBlock32(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, interleaved: i32): void {
  const bytes = <usize>blockBytes32(fmt);
  const rowBytes = <usize>(cols / QX_BLOCK) * bytes;
  const grouped = interleaved != 0 ? rows & ~3 : 0;
  let r = r0;
  for (; r < r1 && r < grouped && (r & 3) != 0; r++) {
    oneRowBlock32(fmt, blockRowWeights(w, r, rowBytes, bytes, grouped), blockRowScales(w, r, rowBytes, grouped), chunkStride(r, 4, bytes, grouped), true, qx, sx, y, rows, cols, tokens, r);
  }
  // A group of interleaved rows starts where its first row would in order. (Two loops, not one
  // with an if: wasm-opt folds the two arms' identical code into one loop that tests the layout
  // at every block.)
  for (; r + 4 <= r1 && r < grouped; r += 4) fourRowsBlock32(fmt, w, qx, sx, y, rows, cols, tokens, r, true);
  for (; r + 4 <= r1; r += 4) fourRowsBlock32(fmt, w, qx, sx, y, rows, cols, tokens, r, false);
  for (; r < r1; r++) {
    const wr = blockRowWeights(w, r, rowBytes, bytes, grouped), sr = blockRowScales(w, r, rowBytes, grouped);
    const step = chunkStride(r, 4, bytes, grouped);
    if (interleaved != 0) oneRowBlock32(fmt, wr, sr, step, true, qx, sx, y, rows, cols, tokens, r);
    else oneRowBlock32(fmt, wr, sr, step, false, qx, sx, y, rows, cols, tokens, r);
  }
}

/** The four i16x8 widenings of the activation block at p. */
@inline function widenX(p: usize, i: i32): v128 {
  const v = v128.load(p + (<usize>(i >> 1) << 4));
  return (i & 1) == 0 ? i16x8.extend_low_i8x16_s(v) : i16x8.extend_high_i8x16_s(v);
}

/** Four bytes (the low byte first) as four i32 lanes. */
@inline function bytesToLanes(u: u32): v128 {
  return i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(i32x4.splat(u)));
}

/** Four of Q4_K's 6-bit values, a byte each, from its 12 packed bytes read as the words p0, p1,
 * p2 (bytes 0–3, 4–7, 8–11): `part` 0 = the scales of sub-blocks 0–3, 1 = scales 4–7, 2 = mins
 * 0–3, 3 = mins 4–7. Scales and mins 0–3 are the low 6 bits of bytes 0–3 and 4–7; scales and
 * mins 4–7 take their low 4 bits from bytes 8–11 (low and high nibbles) and their top 2 bits
 * from the top of bytes 0–3 and 4–7. */
@inline function q4kPacked(p0: u32, p1: u32, p2: u32, part: i32): u32 {
  if (part == 0) return p0 & 0x3f3f3f3f;
  if (part == 2) return p1 & 0x3f3f3f3f;
  if (part == 1) return (p2 & 0x0f0f0f0f) | ((p0 >> 2) & 0x30303030);
  return ((p2 >> 4) & 0x0f0f0f0f) | ((p1 >> 2) & 0x30303030);
}

/** (Σ q·qx) of Q4_K sub-block 2c + half: its weights are the low (half 0) or high (half 1)
 * nibbles of the 32 bytes v0, v1 of chunk c; xp is its activation block. As i32x4 lanes, or in
 * the relaxed build i16x8 lanes (nibblePairSums) that q4kFourSums widens, as for Q4_0. */
@inline function q4kSubDot(v0: v128, v1: v128, half: i32, xp: usize, low4: v128): v128 {
  const lo = half == 0 ? v128.and(v0, low4) : highNibbles(v0, low4);
  const hi = half == 0 ? v128.and(v1, low4) : highNibbles(v1, low4);
  return ASC_FEATURE_RELAXED_SIMD
    ? nibblePairSums(lo, hi, v128.load(xp), v128.load(xp, 16))
    : i8BlockDot(lo, hi, widenX(xp, 0), widenX(xp, 1), widenX(xp, 2), widenX(xp, 3));
}

/** Lane i = the sum of q4kSubDot result v_i. */
@inline function q4kFourSums(v0: v128, v1: v128, v2: v128, v3: v128): v128 {
  return ASC_FEATURE_RELAXED_SIMD ? transposeSum16(v0, v1, v2, v3) : transposeSum(v0, v1, v2, v3);
}

/** One Q4_K super-block row (256 weights at wb) · the eight activation blocks from block b.
 * The eight sub-blocks' integer sums are gathered into two vectors (lane = sub-block) and scaled
 * there, beside the scales and mins unpacked four at a time (q4kPacked). */
@inline function q4kDot(wb: usize, xq: usize, xs: usize, xsum: usize, b: i32, acc: v128, low4: v128): v128 {
  const d = f32x4.splat(halfToF32(load<u16>(wb))), dmin = f32x4.splat(halfToF32(load<u16>(wb, 2)));
  const p0 = load<u32>(wb, 4), p1 = load<u32>(wb, 8), p2 = load<u32>(wb, 12);
  const scalesLo = q4kPacked(p0, p1, p2, 0), scalesHi = q4kPacked(p0, p1, p2, 1);
  const minsLo = q4kPacked(p0, p1, p2, 2), minsHi = q4kPacked(p0, p1, p2, 3);
  const q = wb + 16, xp = xq + (<usize>b << 5);
  const c0a = v128.load(q), c0b = v128.load(q, 16), c1a = v128.load(q, 32), c1b = v128.load(q, 48);
  const c2a = v128.load(q, 64), c2b = v128.load(q, 80), c3a = v128.load(q, 96), c3b = v128.load(q, 112);
  const dotsLo = q4kFourSums(
    q4kSubDot(c0a, c0b, 0, xp, low4),
    q4kSubDot(c0a, c0b, 1, xp + 32, low4),
    q4kSubDot(c1a, c1b, 0, xp + 64, low4),
    q4kSubDot(c1a, c1b, 1, xp + 96, low4),
  );
  const dotsHi = q4kFourSums(
    q4kSubDot(c2a, c2b, 0, xp + 128, low4),
    q4kSubDot(c2a, c2b, 1, xp + 160, low4),
    q4kSubDot(c3a, c3b, 0, xp + 192, low4),
    q4kSubDot(c3a, c3b, 1, xp + 224, low4),
  );
  const xsp = xs + (<usize>b << 2), sump = xsum + (<usize>b << 2);
  const dxLo = v128.load(xsp), dxHi = v128.load(xsp, 16);
  // d · scale · dx per sub-block, and dmin · min · dx · Σqx (the minimums' share).
  const wLo = f32x4.mul(f32x4.mul(d, f32x4.convert_i32x4_u(bytesToLanes(scalesLo))), dxLo);
  const wHi = f32x4.mul(f32x4.mul(d, f32x4.convert_i32x4_u(bytesToLanes(scalesHi))), dxHi);
  const mLo = f32x4.mul(f32x4.mul(f32x4.mul(dmin, f32x4.convert_i32x4_u(bytesToLanes(minsLo))), dxLo), f32x4.convert_i32x4_s(v128.load(sump)));
  const mHi = f32x4.mul(f32x4.mul(f32x4.mul(dmin, f32x4.convert_i32x4_u(bytesToLanes(minsHi))), dxHi), f32x4.convert_i32x4_s(v128.load(sump, 16)));
  acc = madd(f32x4.convert_i32x4_s(dotsLo), wLo, acc);
  acc = madd(f32x4.convert_i32x4_s(dotsHi), wHi, acc);
  return f32x4.sub(acc, f32x4.add(mLo, mHi));
}

/** Lane i = the sum of lanes 2i, 2i + 1 of the pair (a, b), a's lanes first. */
@inline function pairTotals(a: v128, b: v128): v128 {
  return i32x4.add(v128.shuffle<i32>(a, b, 0, 2, 4, 6), v128.shuffle<i32>(a, b, 1, 3, 5, 7));
}

/** (Σ (q − 32)·qx) of Q6_K's 32 weights of group g (0..3) in half h of a super-block, as two
 * i32x4 whose lane sums are the two 16-weight sub-blocks' sums, packed side by side: lanes 0–1
 * hold the first sub-block's pair sums, lanes 2–3 the second's. */
@inline function q6kGroupDot(
  la0: v128, la1: v128, lb0: v128, lb1: v128, h0: v128, h1: v128, g: i32, xp: usize,
  low4: v128, off: v128, hmask: v128,
): v128 {
  // Weight l of group g: low 4 bits from ql (first or second 32 bytes, low or high nibble),
  // top 2 bits from qh at bit 2g.
  const l0 = g & 1 ? lb0 : la0, l1 = g & 1 ? lb1 : la1;
  const n0 = g < 2 ? v128.and(l0, low4) : highNibbles(l0, low4);
  const n1 = g < 2 ? v128.and(l1, low4) : highNibbles(l1, low4);
  // Bits 2g, 2g+1 of qh moved to bits 4, 5: shift 16-bit lanes (no byte shifts on x86), mask.
  const sh0 = 2 * g >= 4 ? i16x8.shr_u(h0, 2 * g - 4) : i16x8.shl(h0, 4 - 2 * g);
  const sh1 = 2 * g >= 4 ? i16x8.shr_u(h1, 2 * g - 4) : i16x8.shl(h1, 4 - 2 * g);
  const q0 = i8x16.sub(v128.or(n0, v128.and(sh0, hmask)), off);
  const q1 = i8x16.sub(v128.or(n1, v128.and(sh1, hmask)), off);
  const sA = i8HalfDot(q0, widenX(xp, 0), widenX(xp, 1));
  const sB = i8HalfDot(q1, widenX(xp, 2), widenX(xp, 3));
  return pairTotals(sA, sB);
}

/** One Q6_K super-block row (256 weights at wb) · the eight activation blocks from block b. The
 * sixteen sub-blocks' integer sums are gathered four to a vector and scaled there: the 16 int8
 * scales widened in one go, each activation scale repeated for its two sub-blocks. */
@inline function q6kDot(wb: usize, xq: usize, xs: usize, b: i32, acc: v128, low4: v128, off: v128, hmask: v128): v128 {
  const d = f32x4.splat(halfToF32(load<u16>(wb, 208)));
  const sc = v128.load(wb, 192);
  const sc16lo = i16x8.extend_low_i8x16_s(sc), sc16hi = i16x8.extend_high_i8x16_s(sc);
  const dxv0 = v128.load(xs + (<usize>b << 2)), dxv1 = v128.load(xs + (<usize>b << 2), 16);
  for (let h = 0; h < 2; h++) {
    const ql = wb + (<usize>h << 6), qh = wb + 128 + (<usize>h << 5);
    const la0 = v128.load(ql), la1 = v128.load(ql, 16), lb0 = v128.load(ql, 32), lb1 = v128.load(ql, 48);
    const h0 = v128.load(qh), h1 = v128.load(qh, 16);
    const xp = xq + (<usize>(b + (h << 2)) << 5);
    const g0 = q6kGroupDot(la0, la1, lb0, lb1, h0, h1, 0, xp, low4, off, hmask);
    const g1 = q6kGroupDot(la0, la1, lb0, lb1, h0, h1, 1, xp + 32, low4, off, hmask);
    const g2 = q6kGroupDot(la0, la1, lb0, lb1, h0, h1, 2, xp + 64, low4, off, hmask);
    const g3 = q6kGroupDot(la0, la1, lb0, lb1, h0, h1, 3, xp + 96, low4, off, hmask);
    // Sub-blocks 8h + 0..3 and 8h + 4..7 (pairTotals of two groups' pair sums), their scales
    // and their activation scales.
    const dots0 = pairTotals(g0, g1), dots1 = pairTotals(g2, g3);
    const sc16 = h == 0 ? sc16lo : sc16hi;
    const s0 = f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(sc16));
    const s1 = f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(sc16));
    const dxv = h == 0 ? dxv0 : dxv1;
    const dx0 = v128.shuffle<f32>(dxv, dxv, 0, 0, 1, 1), dx1 = v128.shuffle<f32>(dxv, dxv, 2, 2, 3, 3);
    acc = madd(f32x4.convert_i32x4_s(dots0), f32x4.mul(f32x4.mul(d, dx0), s0), acc);
    acc = madd(f32x4.convert_i32x4_s(dots1), f32x4.mul(f32x4.mul(d, dx1), s1), acc);
  }
  return acc;
}

/** Rows [r0, r1) of y = x · Wᵀ for a 256-block format (Q4_K, Q6_K), one row at a time. */
@inline function matmulBlock256(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32): void {
  const low4 = keptSplat8(15, tokens >>> 31);
  const off32 = keptSplat8(32, tokens >>> 31), high2 = keptSplat8(0x30, tokens >>> 31); // Q6_K's offset, top-bit mask
  const superBlocks = cols >> 8;
  const bytes: usize = fmt == FMT_Q4_K ? 144 : 210;
  const rowBytes = <usize>superBlocks * bytes;
  const blocks = cols / QX_BLOCK;
  const sums = sx + (<usize>(tokens * blocks) << 2);
  for (let r = r0; r < r1; r++) {
    const wr = w + <usize>r * rowBytes;
    for (let t = 0; t < tokens; t++) {
      const xq = qx + <usize>t * <usize>cols;
      const xs = sx + ((<usize>t * <usize>blocks) << 2);
      const xsum = sums + ((<usize>t * <usize>blocks) << 2);
      let acc = f32x4.splat(0);
      for (let sb = 0; sb < superBlocks; sb++) {
        const wb = wr + <usize>sb * bytes;
        if (fmt == FMT_Q4_K) acc = q4kDot(wb, xq, xs, xsum, sb << 3, acc, low4);
        else acc = q6kDot(wb, xq, xs, sb << 3, acc, low4, off32, high2);
      }
      store<f32>(y + ((<usize>t * <usize>rows + <usize>r) << 2), hsum(acc));
    }
  }
}

/** Rows [r0, r1) of y = x · Wᵀ for block-quantized weights of format `fmt`, x given quantized
 * (quantizeRowsQ8); `interleaved` 1: a 32-block format stored as interleaveBlockRows leaves it
 * (K-quants are always in order). */
export function matmulQuant(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, interleaved: i32): void {
  if (fmt == FMT_Q8_0) matmulBlock32(FMT_Q8_0, w, qx, sx, y, rows, cols, tokens, r0, r1, interleaved);
  else if (fmt == FMT_Q4_0) matmulBlock32(FMT_Q4_0, w, qx, sx, y, rows, cols, tokens, r0, r1, interleaved);
  else if (fmt == FMT_Q5_0) matmulBlock32(FMT_Q5_0, w, qx, sx, y, rows, cols, tokens, r0, r1, interleaved);
  else if (fmt == FMT_Q4_K) matmulBlock256(FMT_Q4_K, w, qx, sx, y, rows, cols, tokens, r0, r1);
  else matmulBlock256(FMT_Q6_K, w, qx, sx, y, rows, cols, tokens, r0, r1);
}

/** Weight i of the block-quantized row at `row`, as f32 (ggml's dequantize_row_*); a 32-block
 * row's blocks are `blockStep` bytes apart, read as blockRowWeights and blockRowScales give
 * them (`row`, `scales`); `permuted`: Q5_0's qh in the engine's order. */
function quantWeight(fmt: i32, row: usize, scales: usize, blockStep: usize, i: i32, permuted: bool): f32 {
  if (fmt == FMT_Q8_0 || fmt == FMT_Q4_0 || fmt == FMT_Q5_0) {
    const blk = row + <usize>(i >> 5) * blockStep;
    const j = i & 31;
    const d = halfToF32(load<u16>(scales + <usize>(i >> 5) * blockStep));
    if (fmt == FMT_Q8_0) return d * <f32>load<i8>(blk + 2 + <usize>j);
    const qs = blk + (fmt == FMT_Q4_0 ? 2 : 6);
    const byte = <i32>load<u8>(qs + <usize>(j & 15));
    let q = j < 16 ? byte & 15 : byte >> 4;
    if (fmt == FMT_Q4_0) return d * <f32>(q - 8);
    q |= ((load<u32>(blk + 2) >> <u32>(permuted ? q5BitPosition(j) : j)) & 1) << 4;
    return d * <f32>(q - 16);
  }
  if (fmt == FMT_Q4_K) {
    const blk = row + <usize>(i >> 8) * 144;
    const k = i & 255, s = k >> 5, l = k & 31;
    const p0 = load<u32>(blk, 4), p1 = load<u32>(blk, 8), p2 = load<u32>(blk, 12);
    const shift = <u32>(8 * (s & 3));
    const scale = <i32>((q4kPacked(p0, p1, p2, s >> 2) >> shift) & 0xff);
    const min = <i32>((q4kPacked(p0, p1, p2, 2 + (s >> 2)) >> shift) & 0xff);
    const byte = <i32>load<u8>(blk + 16 + <usize>((s >> 1) << 5) + <usize>l);
    const q = s & 1 ? byte >> 4 : byte & 15;
    return halfToF32(load<u16>(blk)) * <f32>scale * <f32>q - halfToF32(load<u16>(blk, 2)) * <f32>min;
  }
  const blk = row + <usize>(i >> 8) * 210;
  const k = i & 255, h = k >> 7, rr = k & 127, g = rr >> 5, l = rr & 31;
  const ql = <i32>load<u8>(blk + <usize>(64 * h + l + 32 * (g & 1)));
  const qh = <i32>load<u8>(blk + 128 + <usize>(32 * h + l));
  const q = (g >= 2 ? ql >> 4 : ql & 15) | (((qh >> (2 * g)) & 3) << 4);
  return halfToF32(load<u16>(blk, 208)) * <f32>load<i8>(blk + 192 + <usize>(8 * h + 2 * g + (l >> 4))) * <f32>(q - 32);
}

/** Gathers rows of a `rows`-row block-quantized table (ids are i32; `interleaved` as for
 * matmulQuant), dequantizes them and scales them. */
export function embedQuant(fmt: i32, table: usize, rows: i32, ids: usize, tokens: i32, hidden: i32, scale: f32, out: usize, interleaved: i32): void {
  const block32 = fmt != FMT_Q4_K && fmt != FMT_Q6_K;
  const bytes: usize = block32 ? <usize>blockBytes32(fmt) : 0;
  const rowBytes: usize = fmt == FMT_Q4_K ? <usize>(hidden >> 8) * 144
    : fmt == FMT_Q6_K ? <usize>(hidden >> 8) * 210
    : <usize>(hidden >> 5) * bytes;
  const grouped = block32 && interleaved != 0 ? rows & ~3 : 0;
  for (let t = 0; t < tokens; t++) {
    const id = load<i32>(ids + (<usize>t << 2));
    const src = block32 ? blockRowWeights(table, id, rowBytes, bytes, grouped) : table + <usize>id * rowBytes;
    const scales = block32 ? blockRowScales(table, id, rowBytes, grouped) : 0;
    const step = chunkStride(id, 4, bytes, grouped);
    const dst = out + ((<usize>t * <usize>hidden) << 2);
    for (let i = 0; i < hidden; i++) {
      store<f32>(dst + (<usize>i << 2), quantWeight(fmt, src, scales, step, i, interleaved != 0) * scale);
    }
  }
}
