// Float64 references of the forward pass's element-level ops, shared by the WASM kernel tests
// (tests/kernels/) and the WGSL kernel tests (tests/webgpu_test.ts); each test states its
// own error bound around them.

/** Gemma's RMSNorm of `rows` rows of n: x / rms(x) · (1 + w), eps rounded to f32 as the kernels. */
export function refRmsNorm(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  rows: number,
  n: number,
  eps: number,
): Float64Array {
  const want = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i] ** 2;
    const inv = 1 / Math.sqrt(ss / n + Math.fround(eps));
    for (let i = 0; i < n; i++) want[r * n + i] = x[r * n + i] * inv * (1 + w[i]);
  }
  return want;
}

/** gelu_pytorch_tanh(gate) · up. */
export function refGeglu(gate: ArrayLike<number>, up: ArrayLike<number>): number[] {
  return Array.from(
    gate,
    (x, i) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))) * up[i],
  );
}

/**
 * Rotate-half RoPE of [tokens][heads][headDim] from startPos, and the bound both kernels meet:
 * cos and sin rounded to f32 (u each), two products and a sum rounded, 4u·(|x1| + |x2|).
 */
export function refRope(
  x: ArrayLike<number>,
  tokens: number,
  heads: number,
  headDim: number,
  startPos: number,
  base: number,
  factor: number,
  u: number,
): { want: Float64Array; tol: Float64Array } {
  const half = headDim / 2;
  const want = new Float64Array(x.length), tol = new Float64Array(x.length);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = ((startPos + t) / factor) * base ** (-(2 * i) / headDim);
        const [x1, x2] = [x[o + i], x[o + i + half]];
        want[o + i] = x1 * Math.cos(angle) - x2 * Math.sin(angle);
        want[o + i + half] = x2 * Math.cos(angle) + x1 * Math.sin(angle);
        tol[o + i] = tol[o + i + half] = 4 * u * (Math.abs(x1) + Math.abs(x2));
      }
    }
  }
  return { want, tol };
}

/**
 * Attention of a chunk of T queries at positions pos.. over the whole key/value history (rows of
 * [kvHeads][headDim], no ring buffer), with the sliding window (0: full) and grouped KV heads.
 * Per (token, head), also what an error bound needs: the largest scaled Σ|q·k| of a score, the
 * largest |v| and the number of positions seen.
 */
export function refAttention(
  q: ArrayLike<number>,
  allK: ArrayLike<number>[],
  allV: ArrayLike<number>[],
  pos: number,
  T: number,
  s: { heads: number; kvHeads: number; headDim: number; window: number; scale: number },
): { want: Float64Array; absMax: number[]; vMax: number[]; n: number[] } {
  const { heads, kvHeads, headDim, window, scale } = s;
  const qDim = heads * headDim;
  const want = new Float64Array(T * qDim);
  const absMax: number[] = [], vMax: number[] = [], n: number[] = [];
  for (let t = 0; t < T; t++) {
    const p = pos + t;
    const lo = window > 0 ? Math.max(0, p - window + 1) : 0;
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / (heads / kvHeads));
      const scores: number[] = [];
      let a = 0, vm = 0;
      for (let j = lo; j <= p; j++) {
        let d = 0, da = 0;
        for (let i = 0; i < headDim; i++) {
          d += q[t * qDim + h * headDim + i] * allK[j][g * headDim + i];
          da += Math.abs(q[t * qDim + h * headDim + i] * allK[j][g * headDim + i]);
        }
        scores.push(d * scale);
        a = Math.max(a, da * scale);
      }
      const m = Math.max(...scores);
      const e = scores.map((x) => Math.exp(x - m));
      const z = e.reduce((x, y) => x + y, 0);
      for (let i = 0; i < headDim; i++) {
        let o = 0;
        for (let j = lo; j <= p; j++) {
          o += (e[j - lo] / z) * allV[j][g * headDim + i];
          vm = Math.max(vm, Math.abs(allV[j][g * headDim + i]));
        }
        want[t * qDim + h * headDim + i] = o;
      }
      absMax.push(a);
      vMax.push(vm);
      n.push(p - lo + 1);
    }
  }
  return { want, absMax, vMax, n };
}
