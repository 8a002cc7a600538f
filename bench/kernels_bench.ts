// Micro-benchmarks of the hot kernels, single-threaded: decode's products on operands larger than
// the caches (each weight read once per call), prompt chunks' products (64 tokens, in cache), and
// attention and RMSNorm:
//
//   deno bench -A bench/kernels_bench.ts [-- --save]
//
// Besides Deno's own table, it prints GB/s and GFLOP/s per kernel next to the read bandwidth one
// thread reaches with the streaming-read kernel (the ceiling for a product that reads each weight
// once), and as a share of the WebAssembly peak of one core (bench/peak.ts).

import { f32ToF16 } from "../engine/formats/dtypes.ts";
import { QUANT } from "../engine/formats/quant.ts";
import type { QuantType } from "../engine/formats/dtypes.ts";
import { WasmRuntime } from "../engine/backends/wasm/runtime.ts";
import { machineInfo } from "./harness.ts";
import { wasmPeaks } from "./peak.ts";

const rt = await WasmRuntime.create({ threads: 1 });
const k = rt.kernels;
const ROWS = 65536, COLS = 640; // 42M weights: 168 MB in f32, far beyond any cache here

/** Random bytes with moderate f16 scales where a block format keeps them. */
function fill(format: "f32" | "bf16" | QuantType, ptr: number, bytes: number): void {
  const u8 = rt.u8(ptr, bytes);
  let seed = 7;
  for (let i = 0; i < bytes; i += 4) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    u8[i] = seed & 0xff;
    u8[i + 1] = (seed >>> 8) & 0xff;
    u8[i + 2] = (seed >>> 16) & 0xff;
    u8[i + 3] = seed >>> 24;
  }
  if (format === "f32" || format === "bf16") {
    // Normal values of magnitude 2^-15..1: exponents 112..127. (Random exponents below that made
    // one weight in 128 subnormal, and x86 multiplies those through a ~100-cycle assist: the f32
    // and bf16 rows timed the assists, not the kernels.)
    const top = format === "f32" ? 3 : 1, step = format === "f32" ? 4 : 2;
    for (let i = top; i < bytes; i += step) u8[i] = (u8[i] & 0x87) | 0x38;
    return;
  }
  const f = QUANT[format];
  const at = { q8_0: [0], q4_0: [0], q5_0: [0], q4_k: [0, 2], q6_k: [208] }[format];
  const view = new DataView(rt.memory.buffer, ptr, bytes);
  const h = f32ToF16(0.001);
  for (let b = 0; b < bytes / f.blockBytes; b++) {
    for (const o of at) view.setUint16(b * f.blockBytes + o, h, true);
  }
}

interface Case {
  name: string;
  bytes: number;
  flops: number;
  run: () => void;
}
const cases: Case[] = [];

const x = rt.alloc(COLS * 4 * 512), y = rt.alloc(ROWS * 4);
rt.f32(x, COLS * 512).fill(0.5);
const qx = rt.alloc(COLS * 512), sx = rt.alloc(k.activationScalesBytes(512, COLS));
k.quantizeRowsQ8(x, 1, COLS, qx, sx);
for (const format of ["f32", "bf16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k"] as const) {
  const bytes = format === "f32"
    ? ROWS * COLS * 4
    : format === "bf16"
    ? ROWS * COLS * 2
    : (ROWS * COLS / QUANT[format].blockElems) * QUANT[format].blockBytes;
  const cols = format === "q4_k" || format === "q6_k" ? 512 : COLS; // K-quants need rows of 256
  const w = rt.alloc(bytes);
  fill(format, w, bytes);
  const rowsHere = format === "q4_k" || format === "q6_k" ? Math.floor((ROWS * COLS) / cols) : ROWS;
  // Timed in the engine's layouts: f32, bf16, Q8_0, Q4_0 and Q5_0 interleaved (random bytes read
  // as either layout), the K-quants in order.
  const run = format === "f32"
    ? () => k.matmulF32(w, x, y, ROWS, COLS, 1, 0, ROWS, 1)
    : format === "bf16"
    ? () => k.matmulBF16(w, x, y, ROWS, COLS, 1, 0, ROWS, 1)
    : () =>
      k.matmulQuant(QUANT[format].kernelFormat, w, qx, sx, y, rowsHere, cols, 1, 0, rowsHere, 1, 0);
  cases.push({ name: `matvec ${format} ${rowsHere}×${cols}`, bytes, flops: 2 * ROWS * COLS, run });
}

// Prompt chunks: 64 tokens through a 2048 × 640 matrix (gate and up of the 270M), K-quants through
// 640 × 2048 (its down projection), in the engine's layouts, with each thread's packing scratch
// (asm packedBytes). The weights (at most 5 MB) stay in cache over the timed calls: this is the
// arithmetic, not the memory.
const CHUNK = 64;
const xc = rt.alloc(CHUNK * 2048 * 4), yc = rt.alloc(CHUNK * 2048 * 4);
rt.f32(xc, CHUNK * 2048).fill(0.25);
const qxc = rt.alloc(CHUNK * 2048), sxc = rt.alloc(k.activationScalesBytes(CHUNK, 2048));
const packed = rt.alloc(k.packedBytes(2048));
for (const format of ["f32", "bf16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k"] as const) {
  const kQuant = format === "q4_k" || format === "q6_k";
  const rows = kQuant ? 640 : 2048, cols = kQuant ? 2048 : 640;
  const bytes = format === "f32"
    ? rows * cols * 4
    : format === "bf16"
    ? rows * cols * 2
    : (rows * cols / QUANT[format].blockElems) * QUANT[format].blockBytes;
  const w = rt.alloc(bytes);
  fill(format, w, bytes);
  if (format !== "f32" && format !== "bf16") k.quantizeRowsQ8(xc, CHUNK, cols, qxc, sxc);
  const run = format === "f32"
    ? () => k.matmulF32(w, xc, yc, rows, cols, CHUNK, 0, rows, 1)
    : format === "bf16"
    ? () => k.matmulBF16(w, xc, yc, rows, cols, CHUNK, 0, rows, 1)
    : () =>
      k.matmulQuant(
        QUANT[format].kernelFormat,
        w,
        qxc,
        sxc,
        yc,
        rows,
        cols,
        CHUNK,
        0,
        rows,
        kQuant ? 0 : 1,
        packed,
      );
  cases.push({
    name: `${CHUNK} tokens ${format} ${rows}×${cols}`,
    bytes,
    flops: 2 * rows * cols * CHUNK,
    run,
  });
}

// Attention of T new tokens after `cached` positions (full attention): 4 query heads over 1 KV
// head of 256, as in the 270M. One decoded token, and a 2,048-token prompt's last chunk of 256 in
// a global layer (each query over 1,792-2,047 keys).
const heads = 4, headDim = 256, kvBytes = headDim * 4;
function attentionCase(name: string, cached: number, T: number): void {
  const kc = rt.alloc((cached + T) * kvBytes), vc = rt.alloc((cached + T) * kvBytes);
  rt.f32(kc, cached * headDim).fill(0.01);
  rt.f32(vc, cached * headDim).fill(0.02);
  const q = rt.alloc(T * heads * kvBytes), kk = rt.alloc(T * kvBytes), vv = rt.alloc(T * kvBytes);
  rt.f32(q, T * heads * headDim).fill(0.1);
  rt.f32(kk, T * headDim).fill(0.01);
  rt.f32(vv, T * headDim).fill(0.02);
  const out = rt.alloc(T * heads * kvBytes), scratch = rt.alloc(k.attentionScratchBytes());
  const keys = T * cached + (T * (T + 1)) / 2;
  cases.push({
    name,
    bytes: 2 * (cached + T) * kvBytes,
    flops: 4 * heads * keys * headDim,
    run: () =>
      k.attention(
        q,
        kk,
        vv,
        kc,
        vc,
        out,
        scratch,
        T,
        cached,
        heads,
        1,
        headDim,
        cached + T,
        0,
        1 / 16,
        0,
        T * heads,
      ),
  });
}
for (const positions of [512, 4096]) {
  attentionCase(`attention 1 token over ${positions} positions`, positions, 1);
}
attentionCase("attention 256 tokens after 1792 positions", 1792, 256);

// RMSNorm over a 512-token prefill batch of width 640.
const nx = rt.alloc(512 * COLS * 4), nw = rt.alloc(COLS * 4), nout = rt.alloc(512 * COLS * 4);
rt.f32(nx, 512 * COLS).fill(0.3);
cases.push({
  name: "rmsNorm 512×640",
  bytes: 2 * 512 * COLS * 4,
  flops: 4 * 512 * COLS,
  run: () => k.rmsNorm(nx, nw, nout, 512, COLS, 1e-6),
});

// The ceiling: streaming reads over 512 MB.
const streamBytes = 512 << 20;
const sp = rt.alloc(streamBytes);
rt.u8(sp, streamBytes).fill(1);
cases.push({
  name: "streamRead 512 MB",
  bytes: streamBytes,
  flops: 0,
  run: () => k.streamRead(sp, 0, streamBytes),
});

for (const c of cases) Deno.bench(c.name, c.run);

// Our own table: median of 7 timed calls after a warm-up.
const rows = cases.map((c) => {
  c.run();
  const t: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    c.run();
    t.push(performance.now() - t0);
  }
  const ms = t.sort((a, b) => a - b)[3];
  return { name: c.name, ms, gbps: c.bytes / 1e6 / ms, gflops: c.flops / 1e6 / ms };
});
const ceiling = rows.find((r) => r.name.startsWith("streamRead"))!.gbps;
// The WebAssembly peak of one core (bench/peak.ts), for the build the runtime chose (relaxed
// SIMD where the engine has it): block-format products against the int8 dot product, the rest
// against the f32 multiply-add.
const peaks = await wasmPeaks();
const peak = (name: string) => peaks.find((p) => p.name === name)?.rate;
const relaxed = peak("f32x4.relaxed_madd") !== undefined;
const floatPeak = peak(relaxed ? "f32x4.relaxed_madd" : "f32x4 mul + add")!;
const intPeak = peak(relaxed ? "i32x4.relaxed_dot_i8x16_i7x16_add_s" : "i32x4.dot_i16x8_s")!;
const shareOfPeak = (r: typeof rows[number]) => {
  if (r.gflops === 0) return "—";
  const quant = / q[0-9]/.test(r.name);
  return `${(100 * r.gflops / (quant ? intPeak : floatPeak)).toFixed(1)}% of ${
    quant ? "int8 dot" : "f32 madd"
  }`;
};
const table = [
  "| kernel (1 thread) | ms | GB/s read | GFLOP/s | share of read bandwidth | share of WASM peak |",
  "|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.name} | ${r.ms.toFixed(2)} | ${r.gbps.toFixed(1)} | ${r.gflops.toFixed(1)} | ${
      r.name.startsWith(`${CHUNK} tokens`)
        ? "— (in cache)"
        : `${Math.round((100 * r.gbps) / ceiling)}%`
    } | ${shareOfPeak(r)} |`
  ),
  "",
  `WASM peak of one core (bench/peak.ts, registers only): ${
    peaks.map((p) => `${p.name} ${p.rate?.toFixed(1) ?? "—"} ${p.unit}`).join(", ")
  }.`,
];
console.log(`\n${table.join("\n")}\n`);
if (Deno.args.includes("--save")) {
  const machine = machineInfo();
  const date = new Date().toISOString().slice(0, 10);
  const dir = new URL("./results/", import.meta.url).pathname;
  await Deno.writeTextFile(
    `${dir}${date}-kernels-deno.md`,
    [
      "# Kernel micro-benchmarks, Deno",
      "",
      `Machine: ${machine.cpu}, ${machine.cores} cores; ${machine.runtime}. Command: \`deno bench -A bench/kernels_bench.ts -- --save\`.`,
      "Medians of 7 calls after a warm-up; operands far larger than the caches.",
      "",
      ...table,
      "",
    ].join("\n"),
  );
  await Deno.writeTextFile(
    `${dir}${date}-kernels-deno.json`,
    JSON.stringify(
      {
        date,
        machine,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
}
