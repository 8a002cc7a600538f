// The WebGPU backend: every WGSL kernel against float64, the tiny-a golden, and the GPU against
// the WASM kernels on the same weights for every stored format. On a machine without a GPU these
// run on Mesa's lavapipe (a software Vulkan driver): slow, so the cases are small.
//
// Tolerances: products and sums are bounded by (n + 8)·u·Σ|terms| (any summation order, u =
// 2^-24); WGSL lets exp err by up to 3 + 2|x| ulp and division and sqrt by 2.5 ulp, which the
// element-wise bounds below include.

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { f32ToBF16 } from "../engine/formats/dtypes.ts";
import { QUANT } from "../engine/formats/quant.ts";
import type { QuantType } from "../engine/formats/dtypes.ts";
import { type GpuBuf, webGpuAdapter, WebGpuBackend } from "../engine/backends/webgpu/backend.ts";
import { NonFiniteLogitsError } from "../engine/gemma3/backend.ts";
import { exportGguf, loadModel } from "../mod.ts";
import { ggmlDecode } from "./support/ggml_blocks.ts";
import { refAttention, refGeglu, refRmsNorm, refRope } from "./support/ops_reference.ts";
import { assertWithin, FIXTURES, maxAbsDiff, randn, rng, U32 } from "./support/helpers.ts";
import { kQuantConfig, randomWeights, writeCheckpoint } from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";

const found = await webGpuAdapter();
if ("reason" in found) {
  throw new Error(`WebGPU tests need an adapter (install mesa-vulkan-drivers): ${found.reason}`);
}
// Small storage bindings (64 KiB), so that weights split into parts as the 262k-row head does on
// real adapters.
const gpu = await WebGpuBackend.create(found.adapter, { maxBinding: 1 << 16 });

function upload(data: Float32Array | Int32Array): GpuBuf {
  const b = gpu.alloc(data.length);
  gpu.device.queue.writeBuffer(b.buf, 0, data as Float32Array<ArrayBuffer>);
  return b;
}
async function download(b: GpuBuf, n: number): Promise<Float32Array> {
  const out = new Float32Array(n);
  await gpu.read(b, out);
  return out;
}

/** Random stored weights of a format and their exact values (as ggml decodes them). */
function storedWeights(
  format: "f32" | "bf16" | QuantType,
  rows: number,
  cols: number,
  seed: number,
) {
  const values = randn(rng(seed), rows * cols, 0.3);
  if (format === "f32") {
    return { bytes: new Uint8Array(values.buffer), exact: Float64Array.from(values) };
  }
  if (format === "bf16") {
    const bits = new Uint16Array(values.length);
    f32ToBF16(values, bits);
    return {
      bytes: new Uint8Array(bits.buffer),
      exact: Float64Array.from(bits, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]),
    };
  }
  const f = QUANT[format];
  const bytes = new Uint8Array((rows * cols / f.blockElems) * f.blockBytes);
  f.quantize(values, bytes);
  return { bytes, exact: ggmlDecode(format, bytes, rows * cols).w };
}

const FORMATS = ["f32", "bf16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k"] as const;

Deno.test("WGSL matmul and embed, every weight format, split across bindings, against float64", async () => {
  for (const format of FORMATS) {
    const cols = format === "q4_k" || format === "q6_k" ? 256 : 96;
    const rows = 300, tokens = 3; // 300 rows of ≥ 96 columns do not fit one 64 KiB binding
    const { bytes, exact } = storedWeights(format, rows, cols, cols + rows);
    const w = gpu.uploadWeight(format, rows, cols, bytes);
    ok(w.parts.length > 1 || bytes.length <= 1 << 16, `${format}: ${w.parts.length} parts`);
    const x = randn(rng(5), tokens * cols, 1);
    const xb = upload(x), yb = gpu.alloc(tokens * rows);
    gpu.matmul(w, xb, yb, tokens);
    const want = new Float64Array(tokens * rows), tol = new Float64Array(tokens * rows);
    for (let t = 0; t < tokens; t++) {
      for (let r = 0; r < rows; r++) {
        let s = 0, a = 0;
        for (let c = 0; c < cols; c++) {
          s += exact[r * cols + c] * x[t * cols + c];
          a += Math.abs(exact[r * cols + c] * x[t * cols + c]);
        }
        want[t * rows + r] = s;
        // The decoded weight is exact in f32 (a product of a few rounded factors for Q4_K, whose
        // decode takes three roundings: 3u·|w|), then the sum.
        tol[t * rows + r] = (cols + 12) * U32 * a + 1e-30;
      }
    }
    assertWithin(await download(yb, tokens * rows), want, tol, `matmul ${format}`);
    // Embedding: rows from different parts, scaled.
    const ids = new Int32Array([rows - 1, 0, 150]);
    const idb = upload(ids), eb = gpu.alloc(ids.length * cols);
    gpu.embed(w, idb, ids.length, 8, eb);
    const wantE = Float64Array.from(
      { length: ids.length * cols },
      (_, i) => exact[ids[Math.floor(i / cols)] * cols + (i % cols)] * 8,
    );
    assertWithin(
      await download(eb, ids.length * cols),
      wantE,
      Array.from(wantE, (v) => 4 * U32 * Math.abs(v) + 1e-30),
      `embed ${format}`,
    );
    for (const b of [xb, yb, idb, eb]) gpu.free(b);
    gpu.freeWeight(w);
  }
});

Deno.test("WGSL rmsNorm (in place and not), geglu and add against float64", async () => {
  const rows = 5, n = 67;
  const x = randn(rng(1), rows * n, 3), wv = randn(rng(2), n, 0.5);
  const w = gpu.uploadWeight("f32", 1, n, new Uint8Array(wv.buffer));
  const want = refRmsNorm(x, wv, rows, n, 1e-6);
  // The f32 sum of squares (n + 8)u, WGSL's sqrt and division (2.5 ulp each), four products.
  const tol = Array.from(want, (v) => ((n + 8) / 2 + 10) * U32 * Math.abs(v) + 1e-30);
  const xb = upload(x), out = gpu.alloc(rows * n);
  gpu.rmsNorm(xb, w, out, rows, 1e-6);
  assertWithin(await download(out, rows * n), want, tol, "rmsNorm");
  gpu.rmsNorm(xb, w, xb, rows, 1e-6);
  assertWithin(await download(xb, rows * n), want, tol, "rmsNorm in place");

  const g = randn(rng(3), 1000, 3), u = randn(rng(4), 1000, 1);
  const gb = upload(g), ub = upload(u);
  gpu.geglu(gb, ub, gb, 1000);
  const wantG = refGeglu(g, u);
  // exp of up to |2z| ≈ 30 may err by 3 + 2·30 ulp; the logistic factor's relative error is at
  // most that times its slope (≤ 1), plus a few roundings.
  assertWithin(
    await download(gb, 1000),
    wantG,
    wantG.map((_v, i) => 80 * U32 * Math.abs(g[i] * u[i]) + 1e-30),
    "geglu",
  );
  const a = randn(rng(5), 1000), bvals = randn(rng(6), 1000);
  const ab = upload(a), bb = upload(bvals);
  gpu.add(ab, bb, 1000);
  assertWithin(
    await download(ab, 1000),
    Array.from(a, (v, i) => v + bvals[i]),
    Array.from(a, (v, i) => U32 * Math.abs(v + bvals[i]) + 1e-30),
    "add",
  );
  for (const b of [xb, out, gb, ub, ab, bb]) gpu.free(b);
  gpu.freeWeight(w);
});

Deno.test("WGSL rope against float64, at large positions too", async () => {
  for (
    const [tokens, heads, headDim, startPos, base, factor] of [[3, 4, 32, 5, 10000, 1], [
      2,
      2,
      256,
      4090,
      1e6,
      8,
    ]]
  ) {
    const x = randn(rng(headDim + startPos), tokens * heads * headDim);
    const { want, tol } = refRope(x, tokens, heads, headDim, startPos, base, factor, U32);
    const xb = upload(x);
    gpu.rope(xb, tokens, heads, headDim, startPos, base, factor);
    assertWithin(await download(xb, x.length), want, tol, `rope from ${startPos}`);
    gpu.free(xb);
  }
});

Deno.test("WGSL attention: sliding window, grouped KV heads, a ring that wraps, against float64", async () => {
  const [heads, kvHeads, headDim, window, capacity, scale] = [4, 2, 16, 5, 5, 20 ** -0.5];
  const kvDim = kvHeads * headDim, qDim = heads * headDim;
  const cache = {
    keys: gpu.alloc(capacity * kvDim),
    values: gpu.alloc(capacity * kvDim),
    capacity,
  };
  const allK: Float32Array[] = [], allV: Float32Array[] = [];
  let pos = 0;
  for (const T of [4, 1, 9, 2]) {
    const rand = rng(T * 7 + pos);
    const q = randn(rand, T * qDim, 1.5),
      k = randn(rand, T * kvDim, 1.5),
      v = randn(rand, T * kvDim);
    for (let t = 0; t < T; t++) {
      allK.push(k.slice(t * kvDim, (t + 1) * kvDim));
      allV.push(v.slice(t * kvDim, (t + 1) * kvDim));
    }
    const ref = refAttention(q, allK, allV, pos, T, { heads, kvHeads, headDim, window, scale });
    const tol = new Float64Array(T * qDim);
    for (let th = 0; th < T * heads; th++) {
      // As the WASM bound, with WGSL's exp (3 + 2|x| ulp for |x| ≤ the score range) and division.
      const { absMax, n, vMax } = { absMax: ref.absMax[th], n: ref.n[th], vMax: ref.vMax[th] };
      const bound = (2 * (headDim + 2) * U32 * absMax + (n + 8 + 3 + 2 * 2 * absMax + 3) * U32) *
        vMax;
      tol.fill(bound, th * headDim, (th + 1) * headDim);
    }
    const qb = upload(q), kb = upload(k), vb = upload(v), out = gpu.alloc(T * qDim);
    gpu.attention(qb, kb, vb, cache, out, T, pos, { heads, kvHeads, headDim, window, scale });
    assertWithin(await download(out, T * qDim), ref.want, tol, `chunk at ${pos}`);
    for (const b of [qb, kb, vb, out]) gpu.free(b);
    pos += T;
  }
});

Deno.test("WGSL argmax: the lowest index on ties, NaN refused, as the CPU sampler", async () => {
  const { argmax } = await import("../engine/sampling.ts");
  for (const n of [1, 7, 1000, 262144]) {
    const v = randn(rng(n), n, 4);
    if (n > 7) v[n - 3] = v[5] = 99; // a tie: the lower index wins
    const b = upload(v);
    deepStrictEqual(await gpu.argmax!(b, n), argmax(v), `n = ${n}`);
    gpu.free(b);
  }
  const withNan = new Float32Array([1, NaN, 3]);
  const b = upload(withNan);
  await rejects(gpu.argmax!(b, 3), NonFiniteLogitsError);
  gpu.free(b);
});

Deno.test("WGSL top-k: the k best, best first, lowest index first on ties", async () => {
  const n = 5000, k = 40;
  const v = randn(rng(9), n, 3);
  v[10] = v[4000] = 50; // a tie at the top
  const b = upload(v);
  const got = await gpu.topK!(b, n, k);
  const want = [...v.keys()].sort((x, y) => v[y] - v[x] || x - y).slice(0, k);
  deepStrictEqual(got.ids, want);
  deepStrictEqual(got.values, want.map((i) => v[i]));
  gpu.free(b);
});

Deno.test("sampling on WebGPU (top-k on the GPU) draws what the CPU sampler draws from the same logits", async () => {
  // The same model on both backends gives logits equal to ~1e-6; with a fixed seed, top-k
  // sampling picks the same tokens unless two candidates sit within that of each other.
  const opts = { temperature: 0.8, topK: 20, topP: 0.9, seed: 7, maxTokens: 12, stopTokens: [] };
  const runs: number[][] = [];
  for (const backend of ["webgpu", "wasm"] as const) {
    const m = await loadModel(`${FIXTURES}tiny-a`, { backend, threads: 1 });
    const out: number[] = [];
    for await (const id of m.createSession().generate(golden.prompts[1], opts)) out.push(id);
    runs.push(out);
    await m.dispose();
  }
  deepStrictEqual(runs[0], runs[1]);
});

const golden = JSON.parse(await Deno.readTextFile(`${FIXTURES}tiny-a/golden.json`));

Deno.test("tiny-a on WebGPU: logits within 1e-4 of the golden, the same greedy tokens, in chunks too", async () => {
  for (const maxChunk of [64, 5]) {
    const model = await loadModel(`${FIXTURES}tiny-a`, { backend: "webgpu", maxChunk });
    deepStrictEqual(model.backend, "webgpu");
    for (const [i, r] of golden.results.entries()) {
      const s = model.createSession({ contextLength: 128 });
      const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
      ok(d <= 1e-4, `prompt ${i}, chunks of ${maxChunk}: logits differ by ${d}`);
      const out: number[] = [];
      for await (const id of s.generate([], { maxTokens: 24, stopTokens: [] })) out.push(id);
      deepStrictEqual(out, r.greedy_continuation_kv_cache, `prompt ${i}, chunks of ${maxChunk}`);
      s.dispose();
    }
    await model.dispose();
  }
});

Deno.test("WebGPU: prompt lookup (argmax on the GPU per row) gives the plain tokens; a checkpoint restores the rings bit for bit", async () => {
  const model = await loadModel(`${FIXTURES}tiny-a`, { backend: "webgpu" });
  const prompt = Array.from({ length: 100 }, (_, i) => ((i % 13) * 7 + 3) % 512);
  const answers: number[][] = [];
  for (const speculative of [undefined, { lookup: { n: 2, k: 8 } }]) {
    const s = model.createSession({ contextLength: 256 });
    const out: number[] = [];
    const gen = s.generate(prompt, { maxTokens: 40, stopTokens: [], speculative });
    let r = await gen.next();
    for (; !r.done; r = await gen.next()) out.push(r.value);
    if (speculative) ok(r.value.speculative!.accepted > 0, "no drafted token was accepted");
    answers.push(out);
    // Back past the rings (40 tokens since the prompt), to the checkpoint before its last token.
    s.truncate(99);
    deepStrictEqual(s.evaluatedTokens, 99);
    const got = await s.eval([7, 8, 9], { logits: "all" });
    const cold = model.createSession({ contextLength: 256, checkpoints: { budgetBytes: 0 } });
    const want = (await cold.eval([...prompt.slice(0, 99), 7, 8, 9], { logits: "all" }))
      .subarray(99 * model.config.vocabSize);
    const differ = want.findIndex((v, i) => !Object.is(v, got[i]));
    ok(
      differ < 0,
      `after the restore, logit ${differ}: ${got[differ]} against cold ${want[differ]}`,
    );
    cold.dispose();
    s.dispose();
  }
  deepStrictEqual(answers[1], answers[0]);
  await model.dispose();
});

Deno.test("WebGPU on quantized GGUF files against WASM on their exact f32 decoding", async () => {
  // The same weights on both sides (the f32 file is the blocks decoded), f32 activations on both:
  // only summation order differs, so the float32 standard of the golden (1e-4) applies.
  const dir = await tempDir();
  const config = kQuantConfig();
  const kModel = await writeCheckpoint(config, randomWeights(config, 3));
  const cases: [string, "q8_0" | "q4_0" | "q5_0" | "q4_k" | "q6_k", string][] = [
    [`${FIXTURES}tiny-a/model.gguf`, "q8_0", "q8_0"],
    [`${FIXTURES}tiny-a/model.gguf`, "q4_0", "q4_0"],
    [`${FIXTURES}tiny-a/model.gguf`, "q5_0", "q8_0"],
    [kModel, "q4_k", "q6_k"],
  ];
  for (const [src, type, head] of cases) {
    const q = `${dir}/${type}.gguf`, f = `${dir}/${type}-f32.gguf`;
    await exportGguf(src, q, {
      type,
      headType: head as "q8_0",
      tokenizer: `${FIXTURES}tiny-a/model.gguf`,
    });
    await exportGguf(q, f, { type: "f32", headType: "f32" });
    const [onGpu, onCpu] = [
      await loadModel(q, { backend: "webgpu" }),
      await loadModel(f, { backend: "wasm", threads: 1 }),
    ];
    const prompt = golden.prompts[2].map((id: number) => id % 512);
    const [a, b] = [
      await onGpu.createSession().eval(prompt, { logits: "all" }),
      await onCpu.createSession().eval(prompt, { logits: "all" }),
    ];
    const d = maxAbsDiff(a, b);
    ok(d <= 1e-4, `${type} (head ${head}): WebGPU and WASM logits differ by ${d}`);
    await onGpu.dispose();
    await onCpu.dispose();
  }
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(kModel, { recursive: true });
});

Deno.test("backend auto: a software adapter is not chosen; the choice and the reason are visible", async () => {
  const model = await loadModel(`${FIXTURES}tiny-a`, { threads: 1 });
  if (found.software) {
    deepStrictEqual(model.backend, "wasm");
    ok(/software|no GPU device/.test(model.backendReason), model.backendReason);
  } else deepStrictEqual(model.backend, "webgpu");
  await model.dispose();
  await rejects(
    loadModel(`${FIXTURES}tiny-a`, { backend: "cuda" as "wasm" }),
    /backend "cuda" is not available/,
  );
});
