// The WGSL kernels of the WebGPU backend (engine/backends/webgpu/backend.ts): the same ops as
// asm/kernels.ts, one compute shader each. Activations are f32; weights are bound as raw 32-bit
// words and decoded in the shader (f32, bf16, and the block formats of engine/formats/quant.ts), so
// a weight keeps its stored size on the GPU. Offsets into activation buffers come as element counts
// in the parameters: storage bindings may only start at 256-byte multiples.
//
// Every kernel reads its parameters from one uniform block of twelve 32-bit values.

import type { DType } from "../../formats/dtypes.ts";

const PARAMS = /* wgsl */ `
struct Params { a: vec4<u32>, b: vec4<u32>, f: vec4<f32> }
@group(0) @binding(0) var<uniform> p: Params;
`;

/** A shader-side decoder: wAt(e) is element e (row-major, from the start of the bound part). */
function weightDecoder(dtype: DType): string {
  const bytes = /* wgsl */ `
fn byteAt(o: u32) -> u32 { return (W[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu; }
fn sbyteAt(o: u32) -> i32 { return (i32(byteAt(o)) << 24u) >> 24u; }
fn halfAt(o: u32) -> f32 { return unpack2x16float(byteAt(o) | (byteAt(o + 1u) << 8u)).x; }
`;
  switch (dtype) {
    case "f32":
      return `fn wAt(e: u32) -> f32 { return bitcast<f32>(W[e]); }`;
    case "bf16":
      return /* wgsl */ `fn wAt(e: u32) -> f32 {
  let word = W[e >> 1u];
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
}`;
    case "q8_0":
      return bytes + /* wgsl */ `fn wAt(e: u32) -> f32 {
  let o = (e / 32u) * 34u;
  return halfAt(o) * f32(sbyteAt(o + 2u + e % 32u));
}`;
    case "q4_0":
    case "q5_0":
      return bytes + /* wgsl */ `fn wAt(e: u32) -> f32 {
  let j = e % 32u;
  let q5 = ${dtype === "q5_0" ? "true" : "false"};
  let o = (e / 32u) * select(18u, 22u, q5);
  let b = byteAt(o + select(2u, 6u, q5) + (j % 16u));
  var q = select(b & 15u, b >> 4u, j >= 16u);
  if (q5) {
    let qh = byteAt(o + 2u) | (byteAt(o + 3u) << 8u) | (byteAt(o + 4u) << 16u) | (byteAt(o + 5u) << 24u);
    q = q | (((qh >> j) & 1u) << 4u);
  }
  return halfAt(o) * f32(i32(q) - select(8, 16, q5));
}`;
    case "q4_k":
      return bytes + /* wgsl */ `fn wAt(e: u32) -> f32 {
  let o = (e / 256u) * 144u;
  let k = e % 256u;
  let s = k / 32u;
  let sc = o + 4u;
  var scale: u32;
  var mn: u32;
  if (s < 4u) {
    scale = byteAt(sc + s) & 63u;
    mn = byteAt(sc + s + 4u) & 63u;
  } else {
    scale = (byteAt(sc + s + 4u) & 15u) | ((byteAt(sc + s - 4u) >> 6u) << 4u);
    mn = (byteAt(sc + s + 4u) >> 4u) | ((byteAt(sc + s) >> 6u) << 4u);
  }
  let b = byteAt(o + 16u + (s / 2u) * 32u + k % 32u);
  let q = select(b & 15u, b >> 4u, (s & 1u) == 1u);
  return halfAt(o) * f32(scale) * f32(q) - halfAt(o + 2u) * f32(mn);
}`;
    case "q6_k":
      return bytes + /* wgsl */ `fn wAt(e: u32) -> f32 {
  let o = (e / 256u) * 210u;
  let k = e % 256u;
  let h = k / 128u;
  let r = k % 128u;
  let g = r / 32u;
  let l = r % 32u;
  let ql = byteAt(o + 64u * h + l + 32u * (g & 1u));
  let qh = byteAt(o + 128u + 32u * h + l);
  let q = select(ql & 15u, ql >> 4u, g >= 2u) | (((qh >> (2u * g)) & 3u) << 4u);
  return halfAt(o + 208u) * f32(sbyteAt(o + 192u + 8u * h + 2u * g + l / 16u)) * f32(i32(q) - 32);
}`;
  }
}

/** y[outOff + t·outRows + rowBase + r] = Σ_c W[r][c] · x[xOff + t·cols + c], one workgroup per
 * row of the bound part. a = (rows, cols, tokens, rowBase), b = (xOff, outOff, outRows). */
export function matmulShader(dtype: DType): string {
  return PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
var<workgroup> red: array<f32, 64>;
${weightDecoder(dtype)}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wg.x + wg.y * nwg.x;
  let cols = p.a.y;
  if (r >= p.a.x) { return; }
  for (var t = 0u; t < p.a.z; t++) {
    var s = 0.0;
    for (var c = lid; c < cols; c += 64u) { s += wAt(r * cols + c) * X[p.b.x + t * cols + c]; }
    red[lid] = s;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k >>= 1u) {
      if (lid < k) { red[lid] += red[lid + k]; }
      workgroupBarrier();
    }
    if (lid == 0u) { Y[p.b.y + t * p.b.z + p.a.w + r] = red[0]; }
    workgroupBarrier();
  }
}`;
}

/** out[outOff + t·n + i] = table[ids[t]][i] · scale. a = (tokens, n, rowBase, rowsInPart),
 * b = (outOff), f = (scale). Rows outside the bound part are left for another dispatch. */
export function embedShader(dtype: DType): string {
  return PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
${weightDecoder(dtype)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.y;
  let i = gid.x;
  if (t >= p.a.x || i >= p.a.y) { return; }
  let row = u32(ids[t]);
  if (row < p.a.z || row >= p.a.z + p.a.w) { return; }
  Y[p.b.x + t * p.a.y + i] = wAt((row - p.a.z) * p.a.y + i) * p.f.x;
}`;
}

/** Gemma's RMSNorm of `rows` rows of n: y = x / rms(x) · (1 + w). a = (rows, n), b = (xOff,
 * outOff), f = (eps). In place when `inPlace` (x is the output buffer). */
export function rmsNormShader(inPlace: boolean): string {
  return PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> Wn: array<f32>;
${inPlace ? "" : "@group(0) @binding(2) var<storage, read> X: array<f32>;"}
@group(0) @binding(${inPlace ? 2 : 3}) var<storage, read_write> Y: array<f32>;
var<workgroup> red: array<f32, 64>;
fn xAt(i: u32) -> f32 { return ${inPlace ? "Y" : "X"}[i]; }
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wg.x;
  let n = p.a.y;
  if (row >= p.a.x) { return; }
  let xo = p.b.x + row * n;
  var s = 0.0;
  for (var i = lid; i < n; i += 64u) { let v = xAt(xo + i); s += v * v; }
  red[lid] = s;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k >>= 1u) {
    if (lid < k) { red[lid] += red[lid + k]; }
    workgroupBarrier();
  }
  let inv = 1.0 / sqrt(red[0] / f32(n) + p.f.x);
  workgroupBarrier();
  for (var i = lid; i < n; i += 64u) { Y[p.b.y + row * n + i] = xAt(xo + i) * inv * (1.0 + Wn[i]); }
}`;
}

/** Rotate-half RoPE in place with a table of (cos, sin) per token and frequency, computed in
 * f64 on the CPU as the WASM kernel does. a = (tokens, heads, headDim, xOff). */
export const ropeShader = PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> cs: array<f32>;
@group(0) @binding(2) var<storage, read_write> X: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let half = p.a.z / 2u;
  let i = gid.x;
  let th = gid.y;
  if (i >= half || th >= p.a.x * p.a.y) { return; }
  let t = th / p.a.y;
  let c = cs[(t * half + i) * 2u];
  let s = cs[(t * half + i) * 2u + 1u];
  let o = p.a.w + th * p.a.z + i;
  let x1 = X[o];
  let x2 = X[o + half];
  X[o] = x1 * c - x2 * s;
  X[o + half] = x2 * c + x1 * s;
}`;

/** Causal attention of one (token, head) per workgroup over the cache and the chunk, as the WASM
 * kernel: keys lo..pos, lo = pos − window + 1 when window > 0. a = (tokens, startPos, heads,
 * kvHeads), b = (headDim, capacity, window, span), f = (scale). Scores go to S. */
export const attentionShader = PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> Kn: array<f32>;
@group(0) @binding(3) var<storage, read> Vn: array<f32>;
@group(0) @binding(4) var<storage, read> Kc: array<f32>;
@group(0) @binding(5) var<storage, read> Vc: array<f32>;
@group(0) @binding(6) var<storage, read_write> S: array<f32>;
@group(0) @binding(7) var<storage, read_write> O: array<f32>;
var<workgroup> red: array<f32, 64>;
fn keyAt(j: u32, d: u32, kvo: u32, kvDim: u32) -> f32 {
  if (j >= p.a.y) { return Kn[(j - p.a.y) * kvDim + kvo + d]; }
  return Kc[(j % p.b.y) * kvDim + kvo + d];
}
fn valueAt(j: u32, d: u32, kvo: u32, kvDim: u32) -> f32 {
  if (j >= p.a.y) { return Vn[(j - p.a.y) * kvDim + kvo + d]; }
  return Vc[(j % p.b.y) * kvDim + kvo + d];
}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let heads = p.a.z;
  let hd = p.b.x;
  let t = wg.x / heads;
  let h = wg.x % heads;
  if (t >= p.a.x) { return; }
  let pos = p.a.y + t;
  var lo = 0u;
  if (p.b.z > 0u && pos + 1u > p.b.z) { lo = pos + 1u - p.b.z; }
  let n = pos - lo + 1u;
  let kvDim = p.a.w * hd;
  let kvo = (h / (heads / p.a.w)) * hd;
  let qo = (t * heads + h) * hd;
  let base = wg.x * p.b.w;
  var m = -3.4e38;
  for (var j = lid; j < n; j += 64u) {
    var s = 0.0;
    for (var d = 0u; d < hd; d++) { s += Q[qo + d] * keyAt(lo + j, d, kvo, kvDim); }
    s = s * p.f.x;
    S[base + j] = s;
    m = max(m, s);
  }
  red[lid] = m;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k >>= 1u) {
    if (lid < k) { red[lid] = max(red[lid], red[lid + k]); }
    workgroupBarrier();
  }
  let mx = red[0];
  workgroupBarrier();
  var l = 0.0;
  for (var j = lid; j < n; j += 64u) { let e = exp(S[base + j] - mx); S[base + j] = e; l += e; }
  red[lid] = l;
  workgroupBarrier();
  for (var k = 32u; k > 0u; k >>= 1u) {
    if (lid < k) { red[lid] += red[lid + k]; }
    workgroupBarrier();
  }
  let total = red[0];
  storageBarrier();
  workgroupBarrier();
  for (var d = lid; d < hd; d += 64u) {
    var acc = 0.0;
    for (var j = 0u; j < n; j++) { acc += S[base + j] * valueAt(lo + j, d, kvo, kvDim); }
    O[qo + d] = acc / total;
  }
}`;

/** Writes the chunk's keys and values into the cache ring (the last `capacity` of them).
 * a = (tokens, startPos, kvDim, capacity). */
export const appendKvShader = PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> Kn: array<f32>;
@group(0) @binding(2) var<storage, read> Vn: array<f32>;
@group(0) @binding(3) var<storage, read_write> Kc: array<f32>;
@group(0) @binding(4) var<storage, read_write> Vc: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  let t = gid.y;
  if (i >= p.a.z || t >= p.a.x || t + p.a.w < p.a.x) { return; }
  let slot = (p.a.y + t) % p.a.w;
  Kc[slot * p.a.z + i] = Kn[t * p.a.z + i];
  Vc[slot * p.a.z + i] = Vn[t * p.a.z + i];
}`;

/** out = geluTanh(gate) · up, in place in gate: gelu(x) = x / (1 + exp(−2z)) as the WASM kernel.
 * a = (n). */
export const gegluShader = PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read_write> G: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.a.x) { return; }
  let x = G[i];
  let z = 0.7978845608028654 * (x + 0.044715 * x * x * x);
  G[i] = x / (1.0 + exp(-2.0 * z)) * U[i];
}`;

/** x += y. a = (n). */
export const addShader = PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> Yb: array<f32>;
@group(0) @binding(2) var<storage, read_write> Xb: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.a.x) { return; }
  Xb[i] = Xb[i] + Yb[i];
}`;

/** The index of the largest of n values (the lowest index on ties), or −1 if one is NaN, from
 * one workgroup: each invocation scans a strided share, then a tree reduction. a = (n, xOff). */
export const argmaxShader = PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> R: array<i32>;
var<workgroup> bestV: array<f32, 256>;
var<workgroup> bestI: array<i32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var v = -3.4e38;
  var idx = -1;
  var nan = false;
  for (var i = lid; i < p.a.x; i += 256u) {
    let x = X[p.a.y + i];
    // WGSL may assume floats are never NaN (x != x can fold away): test the bits.
    if ((bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u) { nan = true; }
    if (idx < 0 || x > v) { v = x; idx = i32(i); }
  }
  bestV[lid] = v;
  bestI[lid] = select(idx, -2, nan);
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (lid < k) {
      let oi = bestI[lid + k];
      let mi = bestI[lid];
      if (oi == -2 || mi == -2) {
        bestI[lid] = -2;
      } else if (oi >= 0 && (mi < 0 || bestV[lid + k] > bestV[lid] || (bestV[lid + k] == bestV[lid] && oi < mi))) {
        bestV[lid] = bestV[lid + k];
        bestI[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { R[0] = select(bestI[0], -1, bestI[0] == -2); }
}`;

/** One step of top-k: the largest remaining value of X (lowest index on ties) goes to R[2·step]
 * (index) and R[2·step + 1] (its bits), and is replaced by −∞ in X (a scratch copy). One
 * workgroup; run k times. a = (n, step). */
export const takeMaxShader = PARAMS + /* wgsl */ `
@group(0) @binding(1) var<storage, read_write> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> R: array<i32>;
var<workgroup> bestV: array<f32, 256>;
var<workgroup> bestI: array<i32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var v = 0.0;
  var idx = -1;
  for (var i = lid; i < p.a.x; i += 256u) {
    let x = X[i];
    if (idx < 0 || x > v) { v = x; idx = i32(i); }
  }
  bestV[lid] = v;
  bestI[lid] = idx;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k >>= 1u) {
    if (lid < k) {
      let oi = bestI[lid + k];
      let mi = bestI[lid];
      if (oi >= 0 && (mi < 0 || bestV[lid + k] > bestV[lid] || (bestV[lid + k] == bestV[lid] && oi < mi))) {
        bestV[lid] = bestV[lid + k];
        bestI[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    R[2u * p.a.y] = bestI[0];
    R[2u * p.a.y + 1u] = bitcast<i32>(bestV[0]);
    X[u32(bestI[0])] = bitcast<f32>(0xff800000u);
  }
}`;
