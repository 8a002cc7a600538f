/**
 * This engine and wllama (llama.cpp compiled to WebAssembly; npm @wllama/wllama 3.13.0, installed
 * once into bench/.cache/wllama, never imported by the engine) in the same headless Chromium on the
 * same GGUF files: decode tok/s (tokens after a 16-token prompt) and prefill tok/s (one long
 * prompt), at 1 and 2 threads, greedy, the same prompts for both (wllama takes them as text; its
 * prompt token counts are checked against ours). The page is cross-origin
 * isolated (COOP/COEP), so both can use threads.
 *
 *   deno run -A bench/wllama.ts [--formats q8_0,q4_0] [--threads 1,2] [--rounds 3] [--save]
 *
 * Every measurement is a fresh page, ours and wllama's alternating, over rounds; medians with the
 * min–max spread, and ours/wllama ratios taken within each round. The same engine in Deno on the
 * same file and token counts (bench/ours_one.ts, a fresh process) is measured in the same rounds,
 * for the browser/Deno ratio. Needs Chromium (CHROMIUM, default /usr/bin/chromium).
 */
import { parseArgs } from "node:util";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { extname } from "node:path";
import { chromium } from "playwright-core";
import { ensureRandomGguf } from "./random_model.ts";
import { loadTokenizer } from "../mod.ts";
import { machineInfo, median, saveResults, takeBenchLock } from "./harness.ts";
import { fileResponse, ISOLATION_HEADERS } from "../cli/web_page.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    formats: { type: "string", default: "q8_0,q4_0" },
    threads: { type: "string", default: "1,2" },
    rounds: { type: "string", default: "3" },
    decode: { type: "string", default: "64" },
    prefill: { type: "string", default: "256" },
    save: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`Usage: deno run -A bench/wllama.ts [options]

This engine vs wllama in headless Chromium on the random 270M GGUF files: decode and prefill tok/s.
  --formats q8_0,q4_0   GGUF files (bench/random_model.ts, written once)
  --threads 1,2         thread counts
  --rounds 3            interleaved rounds
  --decode 64           tokens generated after a 16-token prompt
  --prefill 256         tokens in the prefill prompt
  --save                write bench/results/<date>-wllama.{md,json}`);
  Deno.exit(0);
}
takeBenchLock();
const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";
if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt install chromium)`);
const WLLAMA = "3.13.0";
const cache = new URL("./.cache/wllama/", import.meta.url).pathname;
if (!existsSync(`${cache}node_modules/@wllama/wllama/esm/wasm/wllama.wasm`)) {
  mkdirSync(cache, { recursive: true });
  writeFileSync(`${cache}package.json`, '{ "private": true }\n');
  console.error(`installing @wllama/wllama ${WLLAMA} (once)...`);
  execFileSync("npm", ["i", "-E", `@wllama/wllama@${WLLAMA}`, "--no-audit", "--no-fund"], {
    cwd: cache,
    stdio: "inherit",
  });
}

const formats = values.formats!.split(",");
const threadCounts = values.threads!.split(",").map(Number);
const rounds = Number(values.rounds), decode = Number(values.decode);
const files = Object.fromEntries(
  await Promise.all(formats.map(async (f) => [f, await ensureRandomGguf(f)] as const)),
);

// The prompts as text (wllama takes text), tokenized by this engine for itself (BOS first, as
// llama.cpp adds it); the GGUF files' tokenizer gives llama.cpp's ids (tests/llamacpp_test.ts),
// and each wllama run's prompt_n is checked against the count here.
const tokenizer = await loadTokenizer(files[formats[0]]);
const WORDS = ("The river runs past the old mill and under the stone bridge, where children " +
  "watch the boats go by in the long summer evenings while the town lights come on one by one.")
  .split(" ");
function textOf(tokens: number): { text: string; ids: number[] } {
  let text = "";
  for (let i = 0; tokenizer.encode(text).length < tokens; i++) {
    text += (i ? " " : "") + WORDS[i % WORDS.length];
  }
  return { text, ids: tokenizer.encode(text) };
}
const prompt = textOf(16), prefill = textOf(Number(values.prefill));

// The page, the bundle, wllama's package and the model files, cross-origin isolated.
const root = new URL("../", import.meta.url).pathname;
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".map": "application/json",
};
// URL paths mirror the repository's, so the page's relative imports are the files' own.
const mounts: [string, string][] = [
  ["/bench/peers/browser/", `${root}bench/peers/browser/`],
  ["/web/", `${root}web/`],
  ["/wllama/", `${cache}node_modules/@wllama/wllama/`],
];
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
  const path = decodeURIComponent(new URL(req.url).pathname);
  let file: string | undefined;
  if (path.startsWith("/models/")) file = files[path.slice(8).replace(/\.gguf$/, "")];
  for (const [prefix, dir] of mounts) {
    if (path.startsWith(prefix) && !path.includes("..")) file = dir + path.slice(prefix.length);
  }
  if (!file || !existsSync(file)) return new Response("not found", { status: 404 });
  const res = await fileResponse(file, req);
  const headers = new Headers(res.headers);
  headers.set("content-type", TYPES[extname(file)] ?? "application/octet-stream");
  for (const [k, v] of Object.entries(ISOLATION_HEADERS)) headers.set(k, v);
  return new Response(res.body, { status: res.status, headers });
});
const base = `http://127.0.0.1:${server.addr.port}`;

interface Rates {
  decode: number;
  prefill: number;
  prefillTokens?: number;
  threads: number;
}

const profile = await Deno.makeTempDir({ prefix: "gemma3-wllama-bench-" });
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  args: ["--no-sandbox"],
});

async function inBrowser(
  engine: "ours" | "wllama",
  format: string,
  threads: number,
): Promise<Rates> {
  const page = await browser.newPage();
  try {
    await page.goto(`${base}/bench/peers/browser/index.html`);
    await page.waitForFunction(() => "bench" in globalThis);
    const model = `${base}/models/${format}.gguf`;
    const request = engine === "ours"
      ? { model, threads, prompt: prompt.ids, decode, prefill: prefill.ids }
      : { model, threads, prompt: prompt.text, decode, prefill: prefill.text };
    const r = await page.evaluate(
      ([engine, request]) =>
        (globalThis as unknown as {
          bench: Record<string, (r: unknown) => Promise<Rates>>;
        }).bench[engine as string](request),
      [engine, request] as const,
    );
    if (r.threads !== threads) {
      throw new Error(`${engine} ran ${r.threads} threads, not ${threads}`);
    }
    return r;
  } finally {
    await page.close();
  }
}

/** The same engine in Deno, a fresh process (bench/ours_one.ts). */
function inDeno(format: string, threads: number): Rates {
  const out = execFileSync(Deno.execPath(), [
    "run",
    "-A",
    `${root}bench/ours_one.ts`,
    JSON.stringify({
      model: files[format],
      threads,
      prompt: prompt.ids,
      decode: decode - 1,
      prefill: prefill.ids,
    }),
  ]);
  const r = JSON.parse(new TextDecoder().decode(out));
  return { decode: r.decode, prefill: r.prefill, threads: r.threads };
}

type Key = `${string}/${number}`;
const results = new Map<Key, { ours: Rates[]; wllama: Rates[]; deno: Rates[] }>();
for (let round = 0; round < rounds; round++) {
  for (const format of formats) {
    for (const threads of threadCounts) {
      const key: Key = `${format}/${threads}`;
      const r = results.get(key) ?? { ours: [], wllama: [], deno: [] };
      results.set(key, r);
      // Alternate which goes first, so neither always meets a warmer machine.
      const order = round % 2 ? ["wllama", "ours"] as const : ["ours", "wllama"] as const;
      for (const engine of order) r[engine].push(await inBrowser(engine, format, threads));
      r.deno.push(inDeno(format, threads));
      console.error(
        `round ${round + 1} ${key}: ours ${r.ours.at(-1)!.decode.toFixed(1)} / wllama ${
          r.wllama.at(-1)!.decode.toFixed(1)
        } decode tok/s`,
      );
    }
  }
}
await browser.close();
await server.shutdown();
await Deno.remove(profile, { recursive: true }).catch(() => {});

const cell = (xs: number[], digits = 1) =>
  `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${
    Math.max(...xs).toFixed(digits)
  })`;
const rows = [...results].map(([key, r]) => {
  const [format, threads] = key.split("/");
  const ratio = (a: Rates[], b: Rates[], k: "decode" | "prefill") =>
    a.map((x, i) => x[k] / b[i][k]);
  return {
    format,
    threads: Number(threads),
    decode: {
      ours: r.ours.map((x) => x.decode),
      wllama: r.wllama.map((x) => x.decode),
      deno: r.deno.map((x) => x.decode),
    },
    prefill: {
      ours: r.ours.map((x) => x.prefill),
      wllama: r.wllama.map((x) => x.prefill),
      deno: r.deno.map((x) => x.prefill),
    },
    decodeRatio: ratio(r.ours, r.wllama, "decode"),
    prefillRatio: ratio(r.ours, r.wllama, "prefill"),
    decodeBrowserVsDeno: ratio(r.ours, r.deno, "decode"),
    prefillBrowserVsDeno: ratio(r.ours, r.deno, "prefill"),
  };
});
const table = [
  "| format | threads | decode tok/s ours | decode tok/s wllama | ours/wllama | prefill tok/s ours | prefill tok/s wllama | ours/wllama | browser/Deno decode, prefill |",
  "|---|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.format} | ${r.threads} | ${cell(r.decode.ours)} | ${cell(r.decode.wllama)} | ${
      cell(r.decodeRatio, 2)
    } | ${cell(r.prefill.ours)} | ${cell(r.prefill.wllama)} | ${cell(r.prefillRatio, 2)} | ${
      median(r.decodeBrowserVsDeno).toFixed(2)
    }, ${median(r.prefillBrowserVsDeno).toFixed(2)} |`
  ),
].join("\n");
const machine = machineInfo();
const version = new TextDecoder().decode(
  execFileSync(CHROMIUM, ["--version"], { stdio: ["ignore", "pipe", "ignore"] }),
)
  .trim().replace(/ built on .*/, "");
const header =
  `This engine vs wllama ${WLLAMA} in ${version} (headless, cross-origin isolated), random 270M, decode ${decode} tokens after ${prompt.ids.length}, prefill ${prefill.ids.length}; ${machine.cpu}, ${machine.cores} cores; medians of ${rounds} rounds (min–max)`;
console.log(`${header}\n\n${table}`);
if (values.save) {
  const command =
    `deno run -A bench/wllama.ts --formats ${values.formats} --threads ${values.threads} --rounds ${rounds} --decode ${decode} --prefill ${values.prefill} --save`;
  saveResults("wllama", `# ${header}\n\nCommand: \`${command}\`\n\n${table}\n`, {
    machine,
    chromium: version,
    wllama: WLLAMA,
    rounds,
    rows,
  });
}
