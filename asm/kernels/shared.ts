// Helpers more than one kernel family inlines: horizontal sums, multiply-add (fused in the relaxed
// build), splatted constants kept out of loops, the addressing of interleaved row groups, e^x,
// touching ahead, and the layout of quantized activations (also used by asm/threads.ts).

@inline export function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) +
    (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** acc + a · b, lane-wise. The relaxed-SIMD build uses a fused multiply-add where the engine
 * has one (one instruction instead of two: these loops are instruction-bound, not memory-bound);
 * the plain build multiplies, rounds, and adds. */
@inline export function madd(a: v128, b: v128, acc: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, acc);
  return f32x4.add(acc, f32x4.mul(a, b));
}

/** Where row r's first chunk is, in a matrix whose first `grouped` rows are stored as
 * interleaveGroups leaves groups of `groupRows` rows in chunks of `chunkBytes` (the rows after
 * them in order). */
@inline export function rowStart(w: usize, r: i32, rowBytes: usize, groupRows: i32, chunkBytes: usize, grouped: i32): usize {
  if (r < grouped) {
    const g = <u32>r / <u32>groupRows, i = <u32>r % <u32>groupRows;
    return w + <usize>g * rowBytes * <usize>groupRows + <usize>i * chunkBytes;
  }
  return w + <usize>r * rowBytes;
}

/** Bytes from one chunk of row r to its next (rowStart's layout). */
@inline export function chunkStride(r: i32, groupRows: i32, chunkBytes: usize, grouped: i32): usize {
  return r < grouped ? chunkBytes * <usize>groupRows : chunkBytes;
}

/** Copies n bytes (a 16-byte chunk, or a block's 16–32 bytes of quants), without a call per copy. */
@inline export function copySmall(dst: usize, src: usize, n: usize): void {
  let i: usize = 0;
  for (; i + 16 <= n; i += 16) v128.store(dst + i, v128.load(src + i));
  for (; i + 2 <= n; i += 2) store<u16>(dst + i, load<u16>(src + i));
  if (i < n) store<u8>(dst + i, load<u8>(src + i));
}

/** i8x16.splat(v) that the engine cannot see as a constant (`zero` is 0 at run time: callers
 * pass a shifted argument such as tokens >>> 31). V8 rebuilds a v128 constant at every use in a
 * loop (a 64-bit immediate moved in and duplicated: three instructions); a value computed before
 * the loop stays in a register, or is reloaded from the stack inside the instruction using it. */
@inline export function keptSplat8(v: i32, zero: i32): v128 {
  return i8x16.splat(<i8>(v | zero));
}

/** f32x4.splat(v) that the engine cannot see as a constant (keptSplat8's trick; `zero` is 0 at
 * run time). */
@inline export function keptSplatF32(v: f32, zero: i32): v128 {
  return f32x4.splat(reinterpret<f32>(reinterpret<i32>(v) | zero));
}

/** e^x for x ≤ 0, four lanes: x = n·ln 2 + r with |r| ≤ ln 2 / 2 (ln 2 in two parts, so r is
 * exact), e^r by Cephes' degree-7 polynomial for expf (relative error below 2^-23 on that
 * interval), times 2^n built in the exponent field. Where e^x would be subnormal (x below
 * ln 2^-126 ≈ −87.34) the result is 0: a subnormal weight would add under 2^-126 of a value to a
 * sum whose largest weight is 1, and every multiply by it takes x86's ~100-cycle assist.
 * `zero` is 0 at run time (keptSplatF32). */
@inline export function expNonPositive(x: v128, zero: i32): v128 {
  const magic = keptSplatF32(12582912.0, zero); // 1.5 · 2^23: adding it rounds to an integer
  const t = f32x4.add(f32x4.mul(x, keptSplatF32(1.44269504088896341, zero)), magic);
  const n = f32x4.sub(t, magic);
  const r = f32x4.sub(f32x4.sub(x, f32x4.mul(n, keptSplatF32(0.693359375, zero))), f32x4.mul(n, keptSplatF32(-2.12194440e-4, zero)));
  let p = keptSplatF32(1.9875691500e-4, zero);
  p = madd(p, r, keptSplatF32(1.3981999507e-3, zero));
  p = madd(p, r, keptSplatF32(8.3334519073e-3, zero));
  p = madd(p, r, keptSplatF32(4.1665795894e-2, zero));
  p = madd(p, r, keptSplatF32(1.6666665459e-1, zero));
  p = madd(p, r, keptSplatF32(5.0000001201e-1, zero));
  const er = f32x4.add(madd(f32x4.mul(p, r), r, r), keptSplatF32(1.0, zero));
  const pow2n = i32x4.shl(i32x4.add(i32x4.sub(t, magic), i32x4.splat(127 | zero)), 23);
  return v128.and(f32x4.mul(er, pow2n), f32x4.ge(x, keptSplatF32(-87.3365447505531, zero)));
}

/** Uses touched bytes (a sum or an OR of them: never negative), so that loads made only to start
 * cache misses early are not optimised away. */
@inline export function keepTouches(touched: i32): void {
  if (touched < 0) unreachable();
}

/** Where quantizeRowsQ8 (matmul_quant.ts) puts the sums of `blocks` activation blocks: after
 * their scales at sx. Its callers and asm/threads.ts share this layout. */
@inline export function activationSums(sx: usize, blocks: i32): usize {
  return sx + (<usize>blocks << 2);
}

/** Where quantizeRowsQ8 puts the blocks' half sums: after their sums. */
@inline export function activationHalfSums(sx: usize, blocks: i32): usize {
  return sx + (<usize>blocks << 3);
}

/** Chunks of WIDE_TOKENS to WIDE_MAX_TOKENS - 1 tokens (a decode batch) also get their first
 * WIDE_TOKENS tokens' int8 activations widened to int16 (the Q8_0 four-token products use them). */
export const WIDE_TOKENS: i32 = 4;
export const WIDE_MAX_TOKENS: i32 = 8;

/** The 32-blocks quantizeRowsQ8 widens to int16 for a chunk of `tokens` rows of `cols`: the first
 * WIDE_TOKENS tokens' of a decode batch, none for other chunks. */
@inline export function activationWideBlocks(tokens: i32, cols: i32): i32 {
  return tokens >= WIDE_TOKENS && tokens < WIDE_MAX_TOKENS ? WIDE_TOKENS * (cols >> 5) : 0;
}

/** Where quantizeRowsQ8 puts the widened activations (activationWideBlocks; 64 bytes a block),
 * after the half sums of the chunk's `blocks`; 0 where the chunk has none. */
@inline export function activationWide(sx: usize, tokens: i32, cols: i32, blocks: i32): usize {
  return activationWideBlocks(tokens, cols) != 0 ? sx + (<usize>blocks << 4) : 0;
}
