/**
 * The WebAssembly SIMD peak of one core: register-only loops (no memory traffic) of the
 * instructions the kernels are built from, so that a kernel's rate can be read as a share of what
 * this machine's WebAssembly engine can do at all.
 *
 *   deno run -A bench/peak.ts        (or: bun bench/peak.ts)
 *
 * - f32x4 mul + add: the plain build's float products (2 flops per lane, two instructions);
 * - f32x4.relaxed_madd: the relaxed build's (a fused multiply-add where the CPU has one);
 * - i32x4.dot_i16x8_s: the plain build's int8 products (weights and activations widened to i16;
 *   8 multiply-adds, 16 ops, per instruction);
 * - i32x4.relaxed_dot_i8x16_i7x16_add_s: the relaxed build's (16 multiply-adds and the
 *   accumulate, 32 ops, per instruction).
 *
 * Each loop keeps 8 independent accumulators, and every product takes its accumulator as an
 * operand: a product of two loop constants is computed once per iteration, not once per
 * accumulator (V8 merges the identical expressions; the first version of this probe timed mostly
 * the adds, and reported 173 GOP/s for dot_i16x8_s where it runs at 67 here). With the
 * accumulator as an operand the int8 probes are bound by latency as much as by throughput (8
 * chains of 5-6 cycles on a core that issues two a cycle): read them as what a kernel with 8
 * independent sums gets. The module is assembled here from text with binaryen (the build's own
 * dependency), so the engine carries none of it.
 *
 * @module
 */

import binaryen from "binaryen";

/** Accumulators per loop, and the operations one iteration does in each probe. */
const ACC = 8;
const PROBES = [
  { name: "f32x4 mul + add", export: "mulAdd", opsPerIteration: ACC * 4 * 2, unit: "GFLOP/s" },
  { name: "f32x4.relaxed_madd", export: "madd", opsPerIteration: ACC * 4 * 2, unit: "GFLOP/s" },
  { name: "i32x4.dot_i16x8_s", export: "dot16", opsPerIteration: ACC * 8 * 2, unit: "GOP/s" },
  {
    name: "i32x4.relaxed_dot_i8x16_i7x16_add_s",
    export: "dot8",
    opsPerIteration: ACC * 16 * 2,
    unit: "GOP/s",
  },
] as const;

/** A function that runs `n` iterations of `step` on each of ACC v128 accumulators and returns a
 * lane of their sum (so that nothing is optimised away). */
function loop(name: string, init: string, step: (acc: string) => string, sum: string): string {
  const accs = Array.from({ length: ACC }, (_, i) => `$a${i}`);
  return `
  (func (export "${name}") (param $n i32) (result i32)
    (local $i i32) (local $m v128) (local $c v128) ${accs.map((a) => `(local ${a} v128)`).join(" ")}
    (local.set $m (${init}))
    (local.set $c (${init}))
    ${accs.map((a) => `(local.set ${a} (${init}))`).join("\n    ")}
    (loop $l
      ${accs.map((a) => `(local.set ${a} ${step(a)})`).join("\n      ")}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (i32x4.extract_lane 0 ${
    accs.slice(1).reduce((e, a) => `(${sum} ${e} (local.get ${a}))`, "(local.get $a0)")
  }))`;
}

const WAT = `(module${
  loop(
    "mulAdd",
    "f32x4.splat (f32.const 0.999)",
    (a) => `(f32x4.add (f32x4.mul (local.get ${a}) (local.get $m)) (local.get $c))`,
    "f32x4.add",
  )
}${
  loop(
    "madd",
    "f32x4.splat (f32.const 0.999)",
    (a) => `(f32x4.relaxed_madd (local.get ${a}) (local.get $m) (local.get $c))`,
    "f32x4.add",
  )
}${
  loop(
    "dot16",
    "i16x8.splat (i32.const 3)",
    (a) => `(i32x4.add (local.get ${a}) (i32x4.dot_i16x8_s (local.get ${a}) (local.get $c)))`,
    "i32x4.add",
  )
}${
  loop(
    "dot8",
    "i8x16.splat (i32.const 3)",
    (a) => `(i32x4.relaxed_dot_i8x16_i7x16_add_s (local.get ${a}) (local.get $c) (local.get ${a}))`,
    "i32x4.add",
  )
})`;

export interface Peak {
  name: string;
  unit: "GFLOP/s" | "GOP/s";
  /** Operations per second, in billions; undefined where the engine lacks the instruction. */
  rate?: number;
}

/** The one-core peak of each probe: the best of 5 runs of ~0.1 s each. */
export async function wasmPeaks(): Promise<Peak[]> {
  const module = binaryen.parseText(WAT);
  module.setFeatures(binaryen.Features.All);
  // No optimisation: the loops are written as they should run, and binaryen must not fold them.
  const bytes = new Uint8Array(module.emitBinary()); // a copy on its own ArrayBuffer
  module.dispose();
  const relaxed = WebAssembly.validate(bytes);
  const exports = relaxed
    ? (await WebAssembly.instantiate(await WebAssembly.compile(bytes))).exports as Record<
      string,
      (n: number) => number
    >
    : undefined;
  return PROBES.map((p) => {
    if (!exports) return { name: p.name, unit: p.unit }; // without relaxed SIMD: none measured
    const run = exports[p.export];
    run(1000); // compile and warm up
    let n = 1 << 16;
    for (let t = performance.now(); (run(n), performance.now() - t) < 20; t = performance.now()) {
      n *= 2;
    }
    let best = 0;
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      run(n);
      best = Math.max(best, (n * p.opsPerIteration) / ((performance.now() - t0) / 1000) / 1e9);
    }
    return { name: p.name, unit: p.unit, rate: best };
  });
}

if (import.meta.main) {
  const peaks = await wasmPeaks();
  console.log("| instruction (1 core, registers only) | rate |\n|---|---|");
  for (const p of peaks) {
    console.log(`| ${p.name} | ${p.rate === undefined ? "—" : p.rate.toFixed(1)} ${p.unit} |`);
  }
}
