// The per-vector ops between the products: RMSNorm, RoPE, the GeGLU gate, the residual add, the
// greedy token (argmax of the logits), and a streaming read that measures the bandwidth the
// products compete for.

import { hsum } from "./shared";

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
// lose phase; each (token, frequency) pair is computed once (ropeTable) and applied to every head.
// ---------------------------------------------------------------------------------------------

/** The rotation of tokens [t0, t1) (token t at startPos + t): table[t][i] = (cos, sin) of
 * (startPos + t) / factor · base^(-2i/headDim) as f32, for i < headDim / 2. A table depends only
 * on its arguments, so the engine computes it once for q and k and for every layer of one base. */
export function ropeTable(table: usize, t0: i32, t1: i32, headDim: i32, startPos: i32, base: f64, factor: f64): void {
  const half = headDim >> 1;
  for (let i = 0; i < half; i++) {
    const invFreq = Math.pow(base, -(<f64>(2 * i)) / <f64>headDim);
    for (let t = t0; t < t1; t++) {
      const angle = (<f64>(startPos + t) / factor) * invFreq;
      const at = table + ((<usize>t * <usize>half + <usize>i) << 3);
      store<f32>(at, <f32>Math.cos(angle));
      store<f32>(at, <f32>Math.sin(angle), 4);
    }
  }
}

/** Rotates `heads` heads of tokens [t0, t1) in place by a ropeTable of the chunk's tokens. */
export function ropeApply(x: usize, table: usize, t0: i32, t1: i32, heads: i32, headDim: i32): void {
  const half = headDim >> 1;
  const tokenBytes = (<usize>heads * <usize>headDim) << 2;
  const headBytes = <usize>headDim << 2;
  for (let t = t0; t < t1; t++) {
    const xt = x + <usize>t * tokenBytes;
    const row = table + ((<usize>t * <usize>half) << 3);
    for (let i = 0; i < half; i++) {
      const c = load<f32>(row + (<usize>i << 3));
      const s = load<f32>(row + (<usize>i << 3), 4);
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
// The greedy token: where the logits are, so that greedy decoding reads back one id, not the
// logits (262,144 floats for Gemma 3, a megabyte copied and scanned in JS per token).
// ---------------------------------------------------------------------------------------------

/** The index of the largest of n f32 values at p (the lowest index on ties; -0 and +0 tie), or
 * -1 when a value is not finite (NaN or ±infinity: logits of a broken model). Two passes: the
 * maximum (and whether v − v is NaN anywhere, which finite values never give), then the first
 * index holding it. */
export function argmaxF32(p: usize, n: i32): i32 {
  // Four maxima and four non-finite sums, 16 values a step: with one of each, every step waited
  // for the last one's latency (0.67-0.71 ms for the 270M's 262,144 logits in decode, once per
  // session a step: with 4 sessions 6% of a 2-thread step). pmax (one instruction,
  // where max also orders NaN and zeros) is max for the values that get past the NaN check;
  // between -0 and +0 it may keep either, and the first of them is found either way below.
  let b0 = f32x4.splat(-Infinity), b1 = b0, b2 = b0, b3 = b0;
  let z0 = f32x4.splat(0), z1 = z0, z2 = z0, z3 = z0;
  const n16 = n & ~15;
  let i = 0;
  for (; i < n16; i += 16) {
    const q = p + (<usize>i << 2);
    const v0 = v128.load(q), v1 = v128.load(q, 16), v2 = v128.load(q, 32), v3 = v128.load(q, 48);
    b0 = f32x4.pmax(b0, v0);
    b1 = f32x4.pmax(b1, v1);
    b2 = f32x4.pmax(b2, v2);
    b3 = f32x4.pmax(b3, v3);
    z0 = f32x4.add(z0, f32x4.sub(v0, v0)); // NaN where v0 is NaN or infinite
    z1 = f32x4.add(z1, f32x4.sub(v1, v1));
    z2 = f32x4.add(z2, f32x4.sub(v2, v2));
    z3 = f32x4.add(z3, f32x4.sub(v3, v3));
  }
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(p + (<usize>i << 2));
    b0 = f32x4.pmax(b0, v);
    z0 = f32x4.add(z0, f32x4.sub(v, v));
  }
  const best = f32x4.pmax(f32x4.pmax(b0, b1), f32x4.pmax(b2, b3));
  let m = max(max(f32x4.extract_lane(best, 0), f32x4.extract_lane(best, 1)), max(f32x4.extract_lane(best, 2), f32x4.extract_lane(best, 3)));
  let bad = hsum(f32x4.add(f32x4.add(z0, z1), f32x4.add(z2, z3)));
  for (; i < n; i++) {
    const v = load<f32>(p + (<usize>i << 2));
    m = max(m, v);
    bad += v - v;
  }
  if (bad != bad || m != m) return -1;
  // The first 16 values holding the maximum, then the first of them.
  const target = f32x4.splat(m);
  let j = 0;
  for (; j < n16; j += 16) {
    const q = p + (<usize>j << 2);
    const hit01 = v128.or(f32x4.eq(v128.load(q), target), f32x4.eq(v128.load(q, 16), target));
    const hit23 = v128.or(f32x4.eq(v128.load(q, 32), target), f32x4.eq(v128.load(q, 48), target));
    if (v128.any_true(v128.or(hit01, hit23))) break;
  }
  for (; j < n; j++) if (load<f32>(p + (<usize>j << 2)) == m) return j;
  return -1;
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
