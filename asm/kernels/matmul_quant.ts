// Products with block-quantized weight matrices (ggml's Q8_0, Q4_0, Q5_0, Q4_K, Q6_K), their
// interleaved layout, quantizing activations to int8 blocks, and the embedding gather from a
// block-quantized table.

import { activationHalfSums, activationSums, activationWide, activationWideBlocks, hsum, WIDE_MAX_TOKENS, madd, chunkStride, copySmall, keepTouches, keptSplat8 } from "./shared";

// ---------------------------------------------------------------------------------------------
// Block-quantized weights (ggml's layouts; engine/formats/quant.ts spells out every byte). A
// product with quantized weights first quantizes the activations per 32-block to int8 with an f32
// scale, as llama.cpp does, so each block's dot product is exact integer arithmetic, scaled once:
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

/** IEEE half → f32, exact for every finite half, in integer steps: a normal half's bits move
 * into an f32's place with the exponent rebased (+112); a subnormal one is its mantissa (an
 * integer below 1024) times 2^-24. (Infinities and NaNs come out as large finite values; scales
 * are never either.) The earlier conversion moved the bits and multiplied by 2^112, which for a
 * subnormal half multiplies a subnormal f32: x86 takes a microcode assist of ~100 cycles for it
 * (WebAssembly keeps subnormals). In the real Gemma 3 270M Q4_K_M file 99.9% of the Q6_K
 * super-blocks' scales are subnormal halves: its Q6_K products ran 2.4× slower than on random
 * scales. */
@inline function halfToF32(h: u32): f32 {
  const sign = (h & 0x8000) << 16;
  const normal = reinterpret<f32>((((h & 0x7fff) << 13) + 0x38000000) | sign);
  const subnormal = reinterpret<f32>(reinterpret<u32>(<f32>(h & 0x3ff) * <f32>5.9604644775390625e-8) | sign);
  return select<f32>(normal, subnormal, (h & 0x7c00) != 0);
}

/** Quantizes `tokens` rows of `cols` f32 (cols a multiple of 32) to int8 qx, with per 32-block an
 * f32 scale in sx (d = max|x| / 127, q = round(x / d)), the i32 sum of its q in sx + 4·blocks (the
 * K-quants' minimums and the relaxed Q4_0 offset need it) and the i32 sums of its two halves in
 * sx + 8·blocks (the relaxed Q6_K's offset, per 16-weight sub-block); for a decode batch of 4-7
 * tokens, the first four tokens' q as int16 after them (activationWide). sx holds
 * activationScalesBytes(tokens, cols). */
export function quantizeRowsQ8(x: usize, tokens: i32, cols: i32, qx: usize, sx: usize): void {
  const blocks = tokens * (cols / QX_BLOCK);
  const wide = activationWide(sx, tokens, cols, blocks);
  quantizeBlocksQ8(x, qx, sx, activationSums(sx, blocks), activationHalfSums(sx, blocks), wide, activationWideBlocks(tokens, cols), 0, blocks);
}

/** Bytes quantizeRowsQ8 writes at sx. */
export function activationScalesBytes(tokens: i32, cols: i32): i32 {
  const blocks = tokens * (cols / QX_BLOCK);
  return (blocks << 4) + (activationWideBlocks(tokens, cols) << 6);
}

/** Blocks [b0, b1) of quantizeRowsQ8 (the blocks of all rows, in order): scales to sx, sums to
 * sums, half sums to sums16, and blocks under wideBlocks widened to int16 at wide. Threads split
 * the blocks. */
export function quantizeBlocksQ8(x: usize, qx: usize, sx: usize, sums: usize, sums16: usize, wide: usize, wideBlocks: i32, b0: i32, b1: i32): void {
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
    let sum: i32 = 0, firstHalf: i32 = 0;
    for (let i = 0; i < QX_BLOCK; i++) {
      const q = <i32>nearest<f32>(load<f32>(src + (<usize>i << 2)) * id);
      store<i8>(qx + (<usize>b << 5) + <usize>i, <i8>q);
      sum += q;
      if (i == 15) firstHalf = sum;
    }
    store<i32>(sums + (<usize>b << 2), sum);
    store<i32>(sums16 + (<usize>b << 3), firstHalf);
    store<i32>(sums16 + (<usize>b << 3), sum - firstHalf, 4);
    if (b < wideBlocks) {
      const q = qx + (<usize>b << 5), to = wide + (<usize>b << 6);
      const lo = v128.load(q), hi = v128.load(q, 16);
      v128.store(to, i16x8.extend_low_i8x16_s(lo));
      v128.store(to, i16x8.extend_high_i8x16_s(lo), 16);
      v128.store(to, i16x8.extend_low_i8x16_s(hi), 32);
      v128.store(to, i16x8.extend_high_i8x16_s(hi), 48);
    }
  }
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
  return transposeJoin(transposeHalf(v0, v1), transposeHalf(v2, v3));
}

/** transposeSum's first step for two of its vectors: lanes (v0: 0+2, 1+3; v1: 0+2, 1+3). */
@inline function transposeHalf(v0: v128, v1: v128): v128 {
  return i32x4.add(v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), v128.shuffle<i32>(v0, v1, 2, 6, 3, 7));
}

/** transposeSum's last step, from transposeHalf of rows 0, 1 (t01) and of rows 2, 3 (t23). */
@inline function transposeJoin(t01: v128, t23: v128): v128 {
  return i32x4.add(v128.shuffle<i32>(t01, t23, 0, 1, 4, 5), v128.shuffle<i32>(t01, t23, 2, 3, 6, 7));
}

/** IEEE halves (in the low 16 bits of each i32 lane) → f32 lanes, exact as halfToF32: shifted
 * up and arithmetically back down, the sign lands in bit 31 (its copies in bits 30–28 are masked
 * off) and exponent and mantissa in their f32 places, then one multiply by 2^112. `mask` and
 * `scale` are the constants 0x8fffe000 and 2^112, passed in to keep them out of loops (see
 * keptSplat8). A subnormal half makes that multiply slow (see halfToF32); the 32-block formats'
 * scales (max |w| / 127, / 16, / 8) are not subnormal in the real files seen (none of 2.3 M in
 * the Gemma 3 270M Q4_K_M), and this runs per block in decode, where four ops more would cost. */
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
 * block (see interleaveBlockRows), else rows in order. A token outside pairs (decode's) touches
 * the interleaved matrix TOUCH_AHEAD bytes ahead of what it reads. */
@inline function fourRowsBlock32(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r: i32, interleaved: bool, wide: usize): void {
  const low4 = keptSplat8(15, tokens >>> 31);
  const offset = keptSplat8(fmt == FMT_Q4_0 ? 8 : 16, tokens >>> 31);
  const q5a = q5Constant(0, interleaved, tokens >>> 31), q5b = q5Constant(1, interleaved, tokens >>> 31);
  const halfMask = i32x4.splat(0x8fffe000 | (tokens >>> 31));
  const halfScale = i32x4.splat(0x77800000 | (tokens >>> 31)); // 2^112
  const blocks = cols / QX_BLOCK;
  const bytes = blockBytes32(fmt);
  const rowBytes = <usize>blocks * bytes;
  const sums = activationSums(sx, tokens * blocks);
  const w0 = w + <usize>r * rowBytes;
  // Where row 0's weights of block 0 are read (its quants 2 bytes on, as in a block in order),
  // from one row's block to the next row's, and from one block of a row to its next.
  const q0 = interleaved ? w0 + 6 : w0;
  const rowStep: usize = interleaved ? <usize>(bytes - 2) : rowBytes;
  const blockStep: usize = interleaved ? <usize>(bytes << 2) : <usize>bytes;
  const lastByte = w + <usize>rows * rowBytes - 1;
  let touched: i32 = 0;
  let t = 0;
  // A few tokens (a decode batch of several sequences) four at a time, as the one-token loop
  // below does each, but in one pass over the group: its blocks come from memory while all four
  // tokens compute (pairs read a group from memory in the first pair's pass and compute the
  // second's from cache with the memory idle: a batch of 4 took 1.7x one token's time on the
  // 262,144 x 640 head, not 1.2x).
  if (fmt == FMT_Q8_0 && wide != 0) {
    touched |= q8FourTokens(q0, rowStep, blockStep, interleaved, wide, sx, y, rows, cols, r, halfMask, halfScale, lastByte);
    t = 4;
  }
  if (tokens < FEW_TOKENS) {
    for (; t + 4 <= tokens; t += 4) {
      const xq0 = qx + <usize>t * <usize>cols, xs0 = sx + ((<usize>t * <usize>blocks) << 2);
      const xsum0 = sums + ((<usize>t * <usize>blocks) << 2);
      const xqStep = <usize>cols, xsStep = <usize>blocks << 2;
      let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0), acc2 = f32x4.splat(0), acc3 = f32x4.splat(0);
      for (let b = 0; b < blocks; b++) {
        const wb = q0 + <usize>b * blockStep;
        const dw = groupScales(interleaved, wb, rowStep, halfMask, halfScale);
        acc0 = groupBlockStep(fmt, wb, rowStep, interleaved, xq0, xs0, xsum0, b, dw, acc0, low4, offset, q5a, q5b);
        acc1 = groupBlockStep(fmt, wb, rowStep, interleaved, xq0 + xqStep, xs0 + xsStep, xsum0 + xsStep, b, dw, acc1, low4, offset, q5a, q5b);
        acc2 = groupBlockStep(fmt, wb, rowStep, interleaved, xq0 + 2 * xqStep, xs0 + 2 * xsStep, xsum0 + 2 * xsStep, b, dw, acc2, low4, offset, q5a, q5b);
        acc3 = groupBlockStep(fmt, wb, rowStep, interleaved, xq0 + 3 * xqStep, xs0 + 3 * xsStep, xsum0 + 3 * xsStep, b, dw, acc3, low4, offset, q5a, q5b);
        if (interleaved && t == 0) touched |= touchAhead2(wb, blockStep, lastByte);
      }
      const yt = y + ((<usize>t * <usize>rows + <usize>r) << 2), yStep = <usize>rows << 2;
      v128.store(yt, acc0);
      v128.store(yt + yStep, acc1);
      v128.store(yt + 2 * yStep, acc2);
      v128.store(yt + 3 * yStep, acc3);
    }
  }
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
      // The first pair reads the group from memory (later pairs find it in cache): it touches
      // ahead as a lone token does (a decode batch of a few sequences is a short chunk).
      if (interleaved && t == 0) touched |= touchAhead2(wb, blockStep, lastByte);
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
      const wb = q0 + <usize>b * blockStep;
      const dw = groupScales(interleaved, wb, rowStep, halfMask, halfScale);
      acc = groupBlockStep(fmt, wb, rowStep, interleaved, xq, xs, xsum, b, dw, acc, low4, offset, q5a, q5b);
      if (interleaved) touched |= touchAhead2(wb, blockStep, lastByte);
    }
    v128.store(y + ((<usize>t * <usize>rows + <usize>r) << 2), acc);
  }
  keepTouches(touched);
}

/** acc + one token's share of block b of a group of four rows: the rows' integer sums of the
 * block at wb (the rows rowStep bytes apart) with the token's activations (xq; its scales xs and
 * sums xsum), scaled by the rows' scales dw and the token's scale. */
@inline function groupBlockStep(fmt: i32, wb: usize, rowStep: usize, interleaved: bool, xq: usize, xs: usize, xsum: usize, b: i32, dw: v128, acc: v128, low4: v128, offset: v128, q5a: v128, q5b: v128): v128 {
  const xbp = xq + (<usize>b << 5);
  const xa = v128.load(xbp), xb = v128.load(xbp, 16);
  const x0 = i16x8.extend_low_i8x16_s(xa), x1 = i16x8.extend_high_i8x16_s(xa);
  const x2 = i16x8.extend_low_i8x16_s(xb), x3 = i16x8.extend_high_i8x16_s(xb);
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
  return madd(f32x4.convert_i32x4_s(dots), f32x4.mul(dw, v128.load32_splat(xs + (<usize>b << 2))), acc);
}

/** Chunks of fewer tokens than this (decode batches) go four tokens at a time through
 * fourRowsBlock32 (so at most one quad: see q8FourTokens); longer ones (prompts) in pairs. The
 * quantizer widens the activations of exactly these chunks (activationWide). */
const FEW_TOKENS: i32 = WIDE_MAX_TOKENS;

/** Tokens 0–3 of a short chunk times a Q8_0 group (fourRowsBlock32's first quad), from the
 * tokens' activations widened to i16 once per product by the quantizer (activationWide; token j's
 * at wide + 2·cols·j): each row's weights are widened once per block for the four tokens instead of
 * once per token. Widening (pmovsx) runs on one x86 port, and with 16 of them per token and
 * block the quads ran at 18 GMAC/s in cache. The integer sums are exact and the float steps are
 * groupBlockStep's, so the bits are a lone token's. Returns the touched bytes (touchAhead2). */
@inline function q8FourTokens(q0: usize, rowStep: usize, blockStep: usize, interleaved: bool, wide: usize, sx: usize, y: usize, rows: i32, cols: i32, r: i32, halfMask: v128, halfScale: v128, lastByte: usize): i32 {
  const blocks = cols / QX_BLOCK;
  const xsStep = <usize>blocks << 2, wStep = <usize>cols << 1;
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0), acc2 = f32x4.splat(0), acc3 = f32x4.splat(0);
  let touched: i32 = 0;
  for (let b = 0; b < blocks; b++) {
    const wb = q0 + <usize>b * blockStep;
    const dw = groupScales(interleaved, wb, rowStep, halfMask, halfScale);
    const xw = wide + (<usize>b << 6); // 32 i16 per block
    // Rows 0 and 1, each token's first transpose step; then rows 2 and 3, and the last step.
    let a0 = v128.load8x8_s(wb, 2), a1 = v128.load8x8_s(wb, 10), a2 = v128.load8x8_s(wb, 18), a3 = v128.load8x8_s(wb, 26);
    let b0 = v128.load8x8_s(wb + rowStep, 2), b1 = v128.load8x8_s(wb + rowStep, 10), b2 = v128.load8x8_s(wb + rowStep, 18), b3 = v128.load8x8_s(wb + rowStep, 26);
    const h0 = transposeHalf(wideDot(a0, a1, a2, a3, xw), wideDot(b0, b1, b2, b3, xw));
    const h1 = transposeHalf(wideDot(a0, a1, a2, a3, xw + wStep), wideDot(b0, b1, b2, b3, xw + wStep));
    const h2 = transposeHalf(wideDot(a0, a1, a2, a3, xw + 2 * wStep), wideDot(b0, b1, b2, b3, xw + 2 * wStep));
    const h3 = transposeHalf(wideDot(a0, a1, a2, a3, xw + 3 * wStep), wideDot(b0, b1, b2, b3, xw + 3 * wStep));
    const r2 = wb + 2 * rowStep, r3 = wb + 3 * rowStep;
    a0 = v128.load8x8_s(r2, 2); a1 = v128.load8x8_s(r2, 10); a2 = v128.load8x8_s(r2, 18); a3 = v128.load8x8_s(r2, 26);
    b0 = v128.load8x8_s(r3, 2); b1 = v128.load8x8_s(r3, 10); b2 = v128.load8x8_s(r3, 18); b3 = v128.load8x8_s(r3, 26);
    const xs = sx + (<usize>b << 2);
    const d0 = transposeJoin(h0, transposeHalf(wideDot(a0, a1, a2, a3, xw), wideDot(b0, b1, b2, b3, xw)));
    acc0 = madd(f32x4.convert_i32x4_s(d0), f32x4.mul(dw, v128.load32_splat(xs)), acc0);
    const d1 = transposeJoin(h1, transposeHalf(wideDot(a0, a1, a2, a3, xw + wStep), wideDot(b0, b1, b2, b3, xw + wStep)));
    acc1 = madd(f32x4.convert_i32x4_s(d1), f32x4.mul(dw, v128.load32_splat(xs + xsStep)), acc1);
    const d2 = transposeJoin(h2, transposeHalf(wideDot(a0, a1, a2, a3, xw + 2 * wStep), wideDot(b0, b1, b2, b3, xw + 2 * wStep)));
    acc2 = madd(f32x4.convert_i32x4_s(d2), f32x4.mul(dw, v128.load32_splat(xs + 2 * xsStep)), acc2);
    const d3 = transposeJoin(h3, transposeHalf(wideDot(a0, a1, a2, a3, xw + 3 * wStep), wideDot(b0, b1, b2, b3, xw + 3 * wStep)));
    acc3 = madd(f32x4.convert_i32x4_s(d3), f32x4.mul(dw, v128.load32_splat(xs + 3 * xsStep)), acc3);
    if (interleaved) touched |= touchAhead2(wb, blockStep, lastByte);
  }
  const yt = y + (<usize>r << 2), yStep = <usize>rows << 2;
  v128.store(yt, acc0);
  v128.store(yt + yStep, acc1);
  v128.store(yt + 2 * yStep, acc2);
  v128.store(yt + 3 * yStep, acc3);
  return touched;
}

/** Σ of a block's 32 products of int16 weights w0–w3 (elements 0–7, ..., 24–31) with the
 * block's activations as int16 at xp, as i32x4 lanes. */
@inline function wideDot(w0: v128, w1: v128, w2: v128, w3: v128, xp: usize): v128 {
  const s01 = i32x4.add(i32x4.dot_i16x8_s(w0, v128.load(xp)), i32x4.dot_i16x8_s(w1, v128.load(xp, 16)));
  return i32x4.add(s01, i32x4.add(i32x4.dot_i16x8_s(w2, v128.load(xp, 32)), i32x4.dot_i16x8_s(w3, v128.load(xp, 48))));
}

/** Touches the interleaved group's one or two cache lines TOUCH_AHEAD bytes past the block at wb
 * (blockStep bytes: four rows' blocks), no further than lastByte. */
@inline function touchAhead2(wb: usize, blockStep: usize, lastByte: usize): i32 {
  const ahead = wb + TOUCH_AHEAD, ahead2 = ahead + 64;
  let touched = <i32>load<u8>(ahead < lastByte ? ahead : lastByte);
  if (blockStep > 64) touched |= <i32>load<u8>(ahead2 < lastByte ? ahead2 : lastByte);
  return touched;
}

/** How far ahead of the block it reads decode touches an interleaved matrix (fourRowsBlock32).
 * WebAssembly has no prefetch instruction, and a product's arithmetic between its loads keeps
 * too few cache misses in flight for the memory's latency: the 262,144 × 640 Q8_0 output head
 * streamed at 4.6-4.8 GB/s where a read-only loop reaches 15. One byte loaded 4 KB ahead per
 * 64 bytes read starts those misses early: the head 37 -> 28.6 ms (Q8_0; Q4_0 28 -> 18.8) on one
 * thread; 2 KB ahead was too close (32 ms), 8 and 16 KB the same as 4. K-quant rows (in order,
 * one stream too) touch the same way: 65,536 × 2048 Q4_K 15.5-18.3 -> 13.3-13.8 ms, Q6_K
 * 20.4-21.2 -> 18.3-19.3. (Interleaved f32 and bf16 rows, tried the same way, did not gain.) */
const TOUCH_AHEAD: usize = 4096;

/** One row of y = x · Wᵀ for a 32-block format, every token (rows outside whole groups of four
 * in the range): its blocks' weights are read from `wr` (blockRowWeights), their scales from
 * `sr` (blockRowScales), `blockStep` bytes apart. */
@inline function oneRowBlock32(fmt: i32, wr: usize, sr: usize, blockStep: usize, permuted: bool, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r: i32): void {
  const low4 = keptSplat8(15, tokens >>> 31);
  const offset = keptSplat8(fmt == FMT_Q4_0 ? 8 : 16, tokens >>> 31);
  const q5a = q5Constant(0, permuted, tokens >>> 31), q5b = q5Constant(1, permuted, tokens >>> 31);
  const blocks = cols / QX_BLOCK;
  const sums = activationSums(sx, tokens * blocks);
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

// Prompt chunks of Q5_0 (and of Q4_0 in the plain build): the four rows of a group are unpacked
// once into `packed` (a thread's scratch of packedBytes, in L1) and then multiplied with every
// token of the chunk, instead of unpacking each block again for every pair of tokens (the
// nibbles and fifth bits cost more than the products). A packed block is the four rows' scales
// as f32, then their weights:
// - relaxed build: 7-bit weights (0..15 or 0..31), four consecutive weights of each of the four
//   rows per vector (k-quads). One i32x4.relaxed_dot_i8x16_i7x16_add_s with four activations
//   broadcast adds 16 products into lanes that are the four rows: no horizontal sums. The offset
//   (8 or 16 · Σx) comes off with the activation sums, as in block32Dot.
// - plain build: int16 weights (the operands of dot_i16x8_s, widened once), each row's 32 in
//   order, four rows' sums gathered by transposeSum as fourRowsBlock32 does.
// Per token the integer sums are exact and the float steps are fourRowsBlock32's, so the bits are
// the same as a token alone gets. Measured on 2048 × 640 weights and 64 tokens, one thread:
// relaxed Q5_0 22 → 30 GMAC/s, Q4_0 unchanged (31); plain Q5_0 10 → 20, Q4_0 11 → 20 (which
// formats are packed: `packs`). Q8_0 is not packed: its weights need no unpacking, and packed (as
// int16, or as two 7-bit nibble planes in the relaxed build) it ran 5–15% slower than its pairs.

/** Whether prompt chunks of format `fmt` are packed: Q5_0, and Q4_0 in the plain build. Measured
 * in the 270M's prefill (512 tokens, chunks of 64), the relaxed build's Q4_0 ran 8-15% slower
 * packed (its token pairs unpack nibbles with one and or shift each), though a lone 2048 × 640
 * product ran the same. */
@inline function packs(fmt: i32): bool {
  return fmt == FMT_Q5_0 || (fmt == FMT_Q4_0 && !ASC_FEATURE_RELAXED_SIMD);
}

/** Fewest tokens for which a group is packed: shorter chunks (decode batches) go in quads (see
 * fourRowsBlock32), where packing a group for four tokens cost more than it saved (the real
 * file's Q5_0 2048 x 640, 4 tokens, 2 threads: 0.31 ms packed, 0.13 in quads). */
const PACK_MIN_TOKENS: i32 = FEW_TOKENS;

/** Bytes of one packed block (four scales, four rows' weights). */
@inline function packedBlockBytes(): usize {
  return ASC_FEATURE_RELAXED_SIMD ? 16 + 4 * 32 : 16 + 4 * 64;
}

/** Scratch bytes a thread needs for packing a group of `cols` columns, and 16 more (see
 * fourRowsPacked). */
export function packedBytes(cols: i32): i32 {
  return (cols / QX_BLOCK) * <i32>packedBlockBytes() + 16;
}

/** Stores the 32 weights lo (elements 0–15), hi (16–31) of row i as k-quads: quad j (elements
 * 4j..4j+3) at dst + 16j + 4i. */
@inline function storeQuads(dst: usize, i: i32, lo: v128, hi: v128): void {
  const d = dst + (<usize>i << 2);
  store<u32>(d, i32x4.extract_lane(lo, 0));
  store<u32>(d, i32x4.extract_lane(lo, 1), 16);
  store<u32>(d, i32x4.extract_lane(lo, 2), 32);
  store<u32>(d, i32x4.extract_lane(lo, 3), 48);
  store<u32>(d, i32x4.extract_lane(hi, 0), 64);
  store<u32>(d, i32x4.extract_lane(hi, 1), 80);
  store<u32>(d, i32x4.extract_lane(hi, 2), 96);
  store<u32>(d, i32x4.extract_lane(hi, 3), 112);
}

/** Unpacks the group of four rows from r (Q4_0 or Q5_0, stored as fourRowsBlock32 reads it)
 * into `packed`. */
@inline function packFourRows(fmt: i32, w: usize, cols: i32, r: i32, interleaved: bool, packed: usize): void {
  const low4 = keptSplat8(15, r >>> 31);
  const offset = keptSplat8(fmt == FMT_Q4_0 ? 8 : 16, r >>> 31);
  const q5a = q5Constant(0, interleaved, r >>> 31), q5b = q5Constant(1, interleaved, r >>> 31);
  const halfMask = i32x4.splat(0x8fffe000 | (r >>> 31));
  const halfScale = i32x4.splat(0x77800000 | (r >>> 31)); // 2^112
  const blocks = cols / QX_BLOCK;
  const bytes = blockBytes32(fmt);
  const rowBytes = <usize>blocks * bytes;
  const w0 = w + <usize>r * rowBytes;
  const q0 = interleaved ? w0 + 6 : w0;
  const rowStep: usize = interleaved ? <usize>(bytes - 2) : rowBytes;
  const blockStep: usize = interleaved ? <usize>(bytes << 2) : <usize>bytes;
  const pb = packedBlockBytes();
  for (let b = 0; b < blocks; b++) {
    const wb = q0 + <usize>b * blockStep;
    const dst = packed + <usize>b * pb;
    v128.store(dst, groupScales(interleaved, wb, rowStep, halfMask, halfScale));
    for (let i = 0; i < 4; i++) {
      const wi = wb + <usize>i * rowStep;
      const lo = block32Weights(fmt, wi, 0, interleaved, low4, offset, q5a, q5b);
      const hi = block32Weights(fmt, wi, 1, interleaved, low4, offset, q5a, q5b);
      if (ASC_FEATURE_RELAXED_SIMD) {
        storeQuads(dst + 16, i, lo, hi);
        continue;
      }
      const d = dst + 16 + (<usize>i << 6);
      const sl = i8x16.sub(lo, offset), sh = i8x16.sub(hi, offset);
      v128.store(d, i16x8.extend_low_i8x16_s(sl));
      v128.store(d, i16x8.extend_high_i8x16_s(sl), 16);
      v128.store(d, i16x8.extend_low_i8x16_s(sh), 32);
      v128.store(d, i16x8.extend_high_i8x16_s(sh), 48);
    }
  }
}

/** Σ of one packed row's 32 int16 weights at p with an activation block as four i16x8. */
@inline function packedWideDot(p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const s01 = i32x4.add(i32x4.dot_i16x8_s(v128.load(p), x0), i32x4.dot_i16x8_s(v128.load(p, 16), x1));
  const s23 = i32x4.add(i32x4.dot_i16x8_s(v128.load(p, 32), x2), i32x4.dot_i16x8_s(v128.load(p, 48), x3));
  return i32x4.add(s01, s23);
}

/** Lane i = Σ of row i's 32 packed 7-bit weights (the eight k-quads w0..w7) with the activation
 * block at xp, in two chains of four (each add waits on the last). Relaxed build only. */
@inline function quadDots(w0: v128, w1: v128, w2: v128, w3: v128, w4: v128, w5: v128, w6: v128, w7: v128, xp: usize, zero: v128): v128 {
  if (!ASC_FEATURE_RELAXED_SIMD) return zero;
  const a = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp, 4), w1, i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp), w0, zero));
  const c = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp, 12), w3, i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp, 8), w2, zero));
  const e = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp, 20), w5, i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp, 16), w4, zero));
  const g = i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp, 28), w7, i32x4.relaxed_dot_i8x16_i7x16_add_s(v128.load32_splat(xp, 24), w6, zero));
  return i32x4.add(i32x4.add(a, c), i32x4.add(e, g));
}

/** The integer sums (lanes: the four rows) of packed block p with the activations at xp, whose
 * sum is `sum` (splat), in the relaxed build; where `two`, also the second token's (xp1, sum1)
 * into pairOut, the block's k-quads loaded once for both. */
@inline function packedQuadSums(fmt: i32, p: usize, xp: usize, sum: v128, xp1: usize, sum1: v128, zero: v128, two: bool, pairOut: usize): v128 {
  const w0 = v128.load(p, 16), w1 = v128.load(p, 32), w2 = v128.load(p, 48), w3 = v128.load(p, 64);
  const w4 = v128.load(p, 80), w5 = v128.load(p, 96), w6 = v128.load(p, 112), w7 = v128.load(p, 128);
  const shift = fmt == FMT_Q4_0 ? 3 : 4; // the offset, 8 or 16
  if (two) v128.store(pairOut, i32x4.sub(quadDots(w0, w1, w2, w3, w4, w5, w6, w7, xp1, zero), i32x4.shl(sum1, shift)));
  return i32x4.sub(quadDots(w0, w1, w2, w3, w4, w5, w6, w7, xp, zero), i32x4.shl(sum, shift));
}

/** Four rows from r of y = x · Wᵀ, every token, from the group packed by packFourRows; in the
 * relaxed build two tokens at a time (each k-quad loaded once for both). `pairOut`: 16 bytes of
 * scratch (the second token's sums: a function here returns one value). */
@inline function fourRowsPacked(fmt: i32, packed: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r: i32, pairOut: usize): void {
  const zero = i32x4.splat(tokens >>> 31);
  const blocks = cols / QX_BLOCK;
  const sums = activationSums(sx, tokens * blocks);
  const pb = packedBlockBytes();
  let t = 0;
  if (ASC_FEATURE_RELAXED_SIMD) {
    for (; t + 2 <= tokens; t += 2) {
      const xq = qx + <usize>t * <usize>cols, xq1 = xq + <usize>cols;
      const xs = sx + ((<usize>t * <usize>blocks) << 2), xs1 = xs + (<usize>blocks << 2);
      const xsum = sums + ((<usize>t * <usize>blocks) << 2), xsum1 = xsum + (<usize>blocks << 2);
      let acc = f32x4.splat(0), acc1 = f32x4.splat(0);
      for (let b = 0; b < blocks; b++) {
        const p = packed + <usize>b * pb, boff = <usize>b << 2;
        const dots = packedQuadSums(fmt, p, xq + (<usize>b << 5), v128.load32_splat(xsum + boff), xq1 + (<usize>b << 5), v128.load32_splat(xsum1 + boff), zero, true, pairOut);
        const dw = v128.load(p);
        acc = madd(f32x4.convert_i32x4_s(dots), f32x4.mul(dw, v128.load32_splat(xs + boff)), acc);
        acc1 = madd(f32x4.convert_i32x4_s(v128.load(pairOut)), f32x4.mul(dw, v128.load32_splat(xs1 + boff)), acc1);
      }
      v128.store(y + ((<usize>t * <usize>rows + <usize>r) << 2), acc);
      v128.store(y + ((<usize>(t + 1) * <usize>rows + <usize>r) << 2), acc1);
    }
  }
  for (; t < tokens; t++) {
    const xq = qx + <usize>t * <usize>cols;
    const xs = sx + ((<usize>t * <usize>blocks) << 2);
    const xsum = sums + ((<usize>t * <usize>blocks) << 2);
    let acc = f32x4.splat(0);
    for (let b = 0; b < blocks; b++) {
      const p = packed + <usize>b * pb;
      const xp = xq + (<usize>b << 5);
      let dots: v128;
      if (ASC_FEATURE_RELAXED_SIMD) {
        dots = packedQuadSums(fmt, p, xp, v128.load32_splat(xsum + (<usize>b << 2)), xp, zero, zero, false, pairOut);
      } else {
        const xa = v128.load(xp), xb = v128.load(xp, 16);
        const x0 = i16x8.extend_low_i8x16_s(xa), x1 = i16x8.extend_high_i8x16_s(xa);
        const x2 = i16x8.extend_low_i8x16_s(xb), x3 = i16x8.extend_high_i8x16_s(xb);
        dots = transposeSum(packedWideDot(p + 16, x0, x1, x2, x3), packedWideDot(p + 80, x0, x1, x2, x3), packedWideDot(p + 144, x0, x1, x2, x3), packedWideDot(p + 208, x0, x1, x2, x3));
      }
      acc = madd(f32x4.convert_i32x4_s(dots), f32x4.mul(v128.load(p), v128.load32_splat(xs + (<usize>b << 2))), acc);
    }
    v128.store(y + ((<usize>t * <usize>rows + <usize>r) << 2), acc);
  }
}

/** Rows [r0, r1) of y = x · Wᵀ for a 32-block format (Q8_0, Q4_0, Q5_0), stored in order or
 * (`interleaved` 1) as interleaveBlockRows leaves it. Rows go in groups of four (thread splits
 * are multiples of four, so a row's group, and with it every bit of its result, does not depend
 * on the thread count): from r0 for rows in order, on the stored groups for interleaved rows;
 * the rest one by one. With scratch at `packed` (packedBytes(cols); 0: none) and a prompt chunk
 * of PACK_MIN_TOKENS or more, each Q4_0 or Q5_0 group is packed first (fourRowsPacked). */
@inline function matmulBlock32(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, interleaved: i32, packed: usize): void {
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
  const pack = packed != 0 && tokens >= PACK_MIN_TOKENS && packs(fmt);
  // A short Q8_0 chunk's first four tokens as int16 (widened by the quantizer, once a product).
  const wide = fmt == FMT_Q8_0 ? activationWide(sx, tokens, cols, tokens * (cols / QX_BLOCK)) : 0;
  for (; r + 4 <= r1 && r < grouped; r += 4) {
    if (pack) {
      packFourRows(fmt, w, cols, r, true, packed);
      fourRowsPacked(fmt, packed, qx, sx, y, rows, cols, tokens, r, packed + <usize>(packedBytes(cols) - 16));
    } else fourRowsBlock32(fmt, w, qx, sx, y, rows, cols, tokens, r, true, wide);
  }
  for (; r + 4 <= r1; r += 4) {
    if (pack) {
      packFourRows(fmt, w, cols, r, false, packed);
      fourRowsPacked(fmt, packed, qx, sx, y, rows, cols, tokens, r, packed + <usize>(packedBytes(cols) - 16));
    } else fourRowsBlock32(fmt, w, qx, sx, y, rows, cols, tokens, r, false, wide);
  }
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

// K-quants (Q4_K, Q6_K: 256-weight super-blocks) go one row at a time, a prompt's tokens in
// pairs: a super-block's weights, scales and minimums are unpacked once for both tokens. Each
// token's integer sums are exact and its float operations are those of a token alone, in the
// same order, so every output has the same bits in a pair or alone.

/** (Σ q·qx) of a 32-weight sub-block of 4-bit weights lo (elements 0–15), hi (16–31) with the
 * activation block at xp: i32x4 lanes, or in the relaxed build i16x8 lanes (nibblePairSums) that
 * q4kFourSums widens, as for Q4_0. */
@inline function nibbleSubDot(lo: v128, hi: v128, xp: usize): v128 {
  return ASC_FEATURE_RELAXED_SIMD
    ? nibblePairSums(lo, hi, v128.load(xp), v128.load(xp, 16))
    : i8BlockDot(lo, hi, widenX(xp, 0), widenX(xp, 1), widenX(xp, 2), widenX(xp, 3));
}

/** Lane i = the sum of nibbleSubDot result v_i. */
@inline function q4kFourSums(v0: v128, v1: v128, v2: v128, v3: v128): v128 {
  return ASC_FEATURE_RELAXED_SIMD ? transposeSum16(v0, v1, v2, v3) : transposeSum(v0, v1, v2, v3);
}

/** One token's share of a Q4_K super-block: acc + the eight sub-blocks' integer sums (dotsLo:
 * 0–3, dotsHi: 4–7) times d·scale·dx, less the minimums' share dmin·min·dx·Σqx. dSc and dMin are
 * d·scale and dmin·min per sub-block; xsp and sump the super-block's activation scales and sums. */
@inline function q4kAccumulate(acc: v128, dotsLo: v128, dotsHi: v128, dScLo: v128, dScHi: v128, dMinLo: v128, dMinHi: v128, xsp: usize, sump: usize): v128 {
  const dxLo = v128.load(xsp), dxHi = v128.load(xsp, 16);
  const mLo = f32x4.mul(f32x4.mul(dMinLo, dxLo), f32x4.convert_i32x4_s(v128.load(sump)));
  const mHi = f32x4.mul(f32x4.mul(dMinHi, dxHi), f32x4.convert_i32x4_s(v128.load(sump, 16)));
  acc = madd(f32x4.convert_i32x4_s(dotsLo), f32x4.mul(dScLo, dxLo), acc);
  acc = madd(f32x4.convert_i32x4_s(dotsHi), f32x4.mul(dScHi, dxHi), acc);
  return f32x4.sub(acc, f32x4.add(mLo, mHi));
}

/** A Q4_K row (superBlocks super-blocks from wr) · one token (activations xq, scales xs, sums
 * xsum; result to y0) or, with `two`, · two tokens (the second's to y1). Chunk c of a super-block
 * holds sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles); the eight sub-blocks' sums are
 * gathered four to a vector and scaled there, beside the scales and minimums unpacked four at a
 * time (q4kPacked). `touch`: the row's first tokens, which read it from memory, touch ahead. */
@inline function q4kRow(wr: usize, superBlocks: i32, xq0: usize, xq1: usize, xs0: usize, xs1: usize, xsum0: usize, xsum1: usize, y0: usize, y1: usize, low4: v128, two: bool, touch: bool, lastByte: usize): void {
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let touched: i32 = 0;
  for (let sb = 0; sb < superBlocks; sb++) {
    const wb = wr + <usize>sb * 144;
    if (touch) touched |= touchAhead3(wb, lastByte);
    const d = f32x4.splat(halfToF32(load<u16>(wb))), dmin = f32x4.splat(halfToF32(load<u16>(wb, 2)));
    const p0 = load<u32>(wb, 4), p1 = load<u32>(wb, 8), p2 = load<u32>(wb, 12);
    const dScLo = f32x4.mul(d, f32x4.convert_i32x4_u(bytesToLanes(q4kPacked(p0, p1, p2, 0))));
    const dScHi = f32x4.mul(d, f32x4.convert_i32x4_u(bytesToLanes(q4kPacked(p0, p1, p2, 1))));
    const dMinLo = f32x4.mul(dmin, f32x4.convert_i32x4_u(bytesToLanes(q4kPacked(p0, p1, p2, 2))));
    const dMinHi = f32x4.mul(dmin, f32x4.convert_i32x4_u(bytesToLanes(q4kPacked(p0, p1, p2, 3))));
    const q = wb + 16;
    const xoff = <usize>sb << 8, soff = <usize>sb << 5; // 8 blocks of 32 int8; 8 f32 or i32
    const xp0 = xq0 + xoff, xp1 = xq1 + xoff;
    // Sub-blocks 0–3 (chunks 0 and 1), then 4–7 (chunks 2 and 3).
    let ca = v128.load(q), cb = v128.load(q, 16), cc = v128.load(q, 32), cd = v128.load(q, 48);
    let n0a = v128.and(ca, low4), n0b = v128.and(cb, low4), n1a = highNibbles(ca, low4), n1b = highNibbles(cb, low4);
    let n2a = v128.and(cc, low4), n2b = v128.and(cd, low4), n3a = highNibbles(cc, low4), n3b = highNibbles(cd, low4);
    const lo0 = q4kFourSums(nibbleSubDot(n0a, n0b, xp0), nibbleSubDot(n1a, n1b, xp0 + 32), nibbleSubDot(n2a, n2b, xp0 + 64), nibbleSubDot(n3a, n3b, xp0 + 96));
    let lo1 = lo0;
    if (two) lo1 = q4kFourSums(nibbleSubDot(n0a, n0b, xp1), nibbleSubDot(n1a, n1b, xp1 + 32), nibbleSubDot(n2a, n2b, xp1 + 64), nibbleSubDot(n3a, n3b, xp1 + 96));
    ca = v128.load(q, 64); cb = v128.load(q, 80); cc = v128.load(q, 96); cd = v128.load(q, 112);
    n0a = v128.and(ca, low4); n0b = v128.and(cb, low4); n1a = highNibbles(ca, low4); n1b = highNibbles(cb, low4);
    n2a = v128.and(cc, low4); n2b = v128.and(cd, low4); n3a = highNibbles(cc, low4); n3b = highNibbles(cd, low4);
    const hi0 = q4kFourSums(nibbleSubDot(n0a, n0b, xp0 + 128), nibbleSubDot(n1a, n1b, xp0 + 160), nibbleSubDot(n2a, n2b, xp0 + 192), nibbleSubDot(n3a, n3b, xp0 + 224));
    acc0 = q4kAccumulate(acc0, lo0, hi0, dScLo, dScHi, dMinLo, dMinHi, xs0 + soff, xsum0 + soff);
    if (two) {
      const hi1 = q4kFourSums(nibbleSubDot(n0a, n0b, xp1 + 128), nibbleSubDot(n1a, n1b, xp1 + 160), nibbleSubDot(n2a, n2b, xp1 + 192), nibbleSubDot(n3a, n3b, xp1 + 224));
      acc1 = q4kAccumulate(acc1, lo1, hi1, dScLo, dScHi, dMinLo, dMinHi, xs1 + soff, xsum1 + soff);
    }
  }
  store<f32>(y0, hsum(acc0));
  if (two) store<f32>(y1, hsum(acc1));
  keepTouches(touched);
}

/** Touches the three cache lines TOUCH_AHEAD bytes past a super-block at wb (no further than
 * lastByte): decode's K-quant rows are one stream too (see TOUCH_AHEAD). */
@inline function touchAhead3(wb: usize, lastByte: usize): i32 {
  const a = wb + TOUCH_AHEAD;
  const a0 = a < lastByte ? a : lastByte, a1 = a + 64 < lastByte ? a + 64 : lastByte;
  const a2 = a + 128 < lastByte ? a + 128 : lastByte;
  return <i32>load<u8>(a0) | <i32>load<u8>(a1) | <i32>load<u8>(a2);
}

/** Lane i = the sum of lanes 2i, 2i + 1 of the pair (a, b), a's lanes first. */
@inline function pairTotals(a: v128, b: v128): v128 {
  return i32x4.add(v128.shuffle<i32>(a, b, 0, 2, 4, 6), v128.shuffle<i32>(a, b, 1, 3, 5, 7));
}

/** The 16 weights of Q6_K sub-block 2g + s (g: group 0..3, s: 0 or 1) of a super-block half whose
 * 64 ql bytes are la0, la1, lb0, lb1 and 32 qh bytes h0, h1: the low 4 bits from ql (the first or
 * second 32 bytes, low or high nibbles), the top 2 bits from qh at bit 2g. As q − 32 (int8) in the
 * plain build; as q (0..63, 7-bit for the relaxed dot) in the relaxed one, whose q6kFourSums takes
 * 32·Σqx off. */
@inline function q6kWeights(la0: v128, la1: v128, lb0: v128, lb1: v128, h0: v128, h1: v128, g: i32, s: i32, low4: v128, off: v128, hmask: v128): v128 {
  const l = g & 1 ? (s == 0 ? lb0 : lb1) : (s == 0 ? la0 : la1);
  const h = s == 0 ? h0 : h1;
  const n = g < 2 ? v128.and(l, low4) : highNibbles(l, low4);
  // Bits 2g, 2g+1 of qh moved to bits 4, 5: shift 16-bit lanes (no byte shifts on x86), mask.
  const sh = 2 * g >= 4 ? i16x8.shr_u(h, 2 * g - 4) : i16x8.shl(h, 4 - 2 * g);
  const q = v128.or(n, v128.and(sh, hmask));
  return ASC_FEATURE_RELAXED_SIMD ? q : i8x16.sub(q, off);
}

/** Σ q·qx of one 16-weight Q6_K sub-block (q6kWeights) with the 16 activations at xp: i32x4
 * lanes of pair sums (plain build), or i16x8 lanes of pair sums, at most 2·63·127 (relaxed). */
@inline function q6kSubDot(q: v128, xp: usize): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(xp), q);
  return i8HalfDot(q, widenX(xp, 0), widenX(xp, 1));
}

/** Lane i = Σ (q − 32)·qx of sub-block i, from four q6kSubDot results; s16p: the four
 * sub-blocks' activation sums (quantizeRowsQ8's half sums), for the relaxed build's offset. Its
 * 16-bit pair sums are added once more in 16 bits (at most 4·63·127 = 32,004) and then widened. */
@inline function q6kFourSums(v0: v128, v1: v128, v2: v128, v3: v128, s16p: usize): v128 {
  if (!ASC_FEATURE_RELAXED_SIMD) return pairTotals(pairTotals(v0, v1), pairTotals(v2, v3));
  const e01 = i32x4.extadd_pairwise_i16x8_s(i16x8.add(v128.shuffle<i32>(v0, v1, 0, 4, 1, 5), v128.shuffle<i32>(v0, v1, 2, 6, 3, 7)));
  const e23 = i32x4.extadd_pairwise_i16x8_s(i16x8.add(v128.shuffle<i32>(v2, v3, 0, 4, 1, 5), v128.shuffle<i32>(v2, v3, 2, 6, 3, 7)));
  const dots = i32x4.add(v128.shuffle<i32>(e01, e23, 0, 1, 4, 5), v128.shuffle<i32>(e01, e23, 2, 3, 6, 7));
  return i32x4.sub(dots, i32x4.shl(v128.load(s16p), 5));
}

/** A Q6_K row (superBlocks super-blocks from wr) · one token (activations xq, scales xs, half
 * sums xs16; result to y0) or, with `two`, · two tokens. The sixteen sub-blocks' integer sums are
 * gathered four to a vector and scaled there: the 16 int8 scales widened in one go, each
 * activation scale repeated for its two sub-blocks. `touch` as for q4kRow. */
@inline function q6kRow(wr: usize, superBlocks: i32, xq0: usize, xq1: usize, xs0: usize, xs1: usize, xh0: usize, xh1: usize, y0: usize, y1: usize, low4: v128, off: v128, hmask: v128, two: bool, touch: bool, lastByte: usize): void {
  let acc0 = f32x4.splat(0), acc1 = f32x4.splat(0);
  let touched: i32 = 0;
  for (let sb = 0; sb < superBlocks; sb++) {
    const wb = wr + <usize>sb * 210;
    if (touch) touched |= touchAhead3(wb, lastByte);
    const d = f32x4.splat(halfToF32(load<u16>(wb, 208)));
    const sc = v128.load(wb, 192);
    const sc16lo = i16x8.extend_low_i8x16_s(sc), sc16hi = i16x8.extend_high_i8x16_s(sc);
    for (let h = 0; h < 2; h++) {
      const ql = wb + (<usize>h << 6), qh = wb + 128 + (<usize>h << 5);
      const la0 = v128.load(ql), la1 = v128.load(ql, 16), lb0 = v128.load(ql, 32), lb1 = v128.load(ql, 48);
      const h0 = v128.load(qh), h1 = v128.load(qh, 16);
      // Sub-blocks 8h + 0..3 (groups 0, 1) and 8h + 4..7 (groups 2, 3): 16 activations each,
      // their half sums, and their scales (an activation scale serves two sub-blocks).
      const xoff = (<usize>sb << 8) + (<usize>h << 7), hoff = (<usize>sb << 6) + (<usize>h << 5);
      const sc16 = h == 0 ? sc16lo : sc16hi;
      const s0 = f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(sc16));
      const s1 = f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(sc16));
      const soff = (<usize>sb << 5) + (<usize>h << 4);
      let q0 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 0, 0, low4, off, hmask);
      let q1 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 0, 1, low4, off, hmask);
      let q2 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 1, 0, low4, off, hmask);
      let q3 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 1, 1, low4, off, hmask);
      const xa0 = xq0 + xoff, xa1 = xq1 + xoff;
      const dotsA0 = q6kFourSums(q6kSubDot(q0, xa0), q6kSubDot(q1, xa0 + 16), q6kSubDot(q2, xa0 + 32), q6kSubDot(q3, xa0 + 48), xh0 + hoff);
      let dotsA1 = dotsA0;
      if (two) dotsA1 = q6kFourSums(q6kSubDot(q0, xa1), q6kSubDot(q1, xa1 + 16), q6kSubDot(q2, xa1 + 32), q6kSubDot(q3, xa1 + 48), xh1 + hoff);
      q0 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 2, 0, low4, off, hmask);
      q1 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 2, 1, low4, off, hmask);
      q2 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 3, 0, low4, off, hmask);
      q3 = q6kWeights(la0, la1, lb0, lb1, h0, h1, 3, 1, low4, off, hmask);
      const dotsB0 = q6kFourSums(q6kSubDot(q0, xa0 + 64), q6kSubDot(q1, xa0 + 80), q6kSubDot(q2, xa0 + 96), q6kSubDot(q3, xa0 + 112), xh0 + hoff + 16);
      const dxv0 = v128.load(xs0 + soff);
      acc0 = madd(f32x4.convert_i32x4_s(dotsA0), f32x4.mul(f32x4.mul(d, v128.shuffle<f32>(dxv0, dxv0, 0, 0, 1, 1)), s0), acc0);
      acc0 = madd(f32x4.convert_i32x4_s(dotsB0), f32x4.mul(f32x4.mul(d, v128.shuffle<f32>(dxv0, dxv0, 2, 2, 3, 3)), s1), acc0);
      if (two) {
        const dotsB1 = q6kFourSums(q6kSubDot(q0, xa1 + 64), q6kSubDot(q1, xa1 + 80), q6kSubDot(q2, xa1 + 96), q6kSubDot(q3, xa1 + 112), xh1 + hoff + 16);
        const dxv1 = v128.load(xs1 + soff);
        acc1 = madd(f32x4.convert_i32x4_s(dotsA1), f32x4.mul(f32x4.mul(d, v128.shuffle<f32>(dxv1, dxv1, 0, 0, 1, 1)), s0), acc1);
        acc1 = madd(f32x4.convert_i32x4_s(dotsB1), f32x4.mul(f32x4.mul(d, v128.shuffle<f32>(dxv1, dxv1, 2, 2, 3, 3)), s1), acc1);
      }
    }
  }
  store<f32>(y0, hsum(acc0));
  if (two) store<f32>(y1, hsum(acc1));
  keepTouches(touched);
}

/** Rows [r0, r1) of y = x · Wᵀ for a 256-block format (Q4_K, Q6_K), one row at a time, the
 * tokens in pairs (the last one alone). */
@inline function matmulBlock256(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32): void {
  const low4 = keptSplat8(15, tokens >>> 31);
  const off32 = keptSplat8(32, tokens >>> 31), high2 = keptSplat8(0x30, tokens >>> 31); // Q6_K's offset, top-bit mask
  const superBlocks = cols >> 8;
  const bytes: usize = fmt == FMT_Q4_K ? 144 : 210;
  const rowBytes = <usize>superBlocks * bytes;
  const blocks = cols / QX_BLOCK;
  const sums = activationSums(sx, tokens * blocks), halfSums = activationHalfSums(sx, tokens * blocks);
  const xStep = <usize>cols, sStep = <usize>blocks << 2, hStep = <usize>blocks << 3;
  const lastByte = w + <usize>rows * rowBytes - 1;
  for (let r = r0; r < r1; r++) {
    const wr = w + <usize>r * rowBytes;
    let t = 0;
    for (; t + 2 <= tokens; t += 2) {
      const xq = qx + <usize>t * xStep, xs = sx + <usize>t * sStep, yt = y + ((<usize>t * <usize>rows + <usize>r) << 2);
      if (fmt == FMT_Q4_K) {
        const xsum = sums + <usize>t * sStep;
        q4kRow(wr, superBlocks, xq, xq + xStep, xs, xs + sStep, xsum, xsum + sStep, yt, yt + (<usize>rows << 2), low4, true, t == 0, lastByte);
      } else {
        const xh = halfSums + <usize>t * hStep;
        q6kRow(wr, superBlocks, xq, xq + xStep, xs, xs + sStep, xh, xh + hStep, yt, yt + (<usize>rows << 2), low4, off32, high2, true, t == 0, lastByte);
      }
    }
    for (; t < tokens; t++) {
      const xq = qx + <usize>t * xStep, xs = sx + <usize>t * sStep, yt = y + ((<usize>t * <usize>rows + <usize>r) << 2);
      if (fmt == FMT_Q4_K) {
        const xsum = sums + <usize>t * sStep;
        q4kRow(wr, superBlocks, xq, xq, xs, xs, xsum, xsum, yt, yt, low4, false, t == 0, lastByte);
      } else {
        const xh = halfSums + <usize>t * hStep;
        q6kRow(wr, superBlocks, xq, xq, xs, xs, xh, xh, yt, yt, low4, off32, high2, false, t == 0, lastByte);
      }
    }
  }
}

/** Rows [r0, r1) of y = x · Wᵀ for block-quantized weights of format `fmt`, x given quantized
 * (quantizeRowsQ8); `interleaved` 1: a 32-block format stored as interleaveBlockRows leaves it
 * (K-quants are always in order); `packed`: a thread's scratch of packedBytes(cols) for prompt
 * chunks of 32-block formats, or 0. */
export function matmulQuant(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, r0: i32, r1: i32, interleaved: i32, packed: usize): void {
  if (fmt == FMT_Q8_0) matmulBlock32(FMT_Q8_0, w, qx, sx, y, rows, cols, tokens, r0, r1, interleaved, packed);
  else if (fmt == FMT_Q4_0) matmulBlock32(FMT_Q4_0, w, qx, sx, y, rows, cols, tokens, r0, r1, interleaved, packed);
  else if (fmt == FMT_Q5_0) matmulBlock32(FMT_Q5_0, w, qx, sx, y, rows, cols, tokens, r0, r1, interleaved, packed);
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
