/**
 * The server under load, beside llama-server on the same GGUF file and threads: aggregate
 * generated tokens/s and time to first token (p50, p95) at 1, 2, 4 and 8 concurrent clients,
 * each request a streamed /v1/completions of a distinct ~128-token prompt and 64 tokens.
 *
 *   deno run -A bench/serve.ts [--model real|<file.gguf>] [--clients 1,2,4,8] [--threads 2]
 *                              [--rounds 3] [--save] [--no-llama]
 *
 * llama-server is built once for this CPU from the llama.cpp source that node-llama-cpp 3.21.1
 * ships (its git bundle; cmake, about ten minutes on 2 cores, or far more while other work runs)
 * into bench/.cache/llama-native/, beside bench/llamacpp.ts's llama-bench (-march=native without
 * AMX: bench/peers/llamacpp_install.ts says why). Ours runs as `cli.ts serve` in a fresh process. The engines take
 * turns at each level (ours, llama-server, ours, ...), and every request's prompt is new to both
 * (no prompt cache hit on either side).
 */
import process from "node:process";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { modelArgument } from "./real_model.ts";
import { ensureNativeLlamaTool } from "./peers/llamacpp_install.ts";
import { machineInfo, runtime, takeBenchLock } from "./harness.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    model: { type: "string", default: "real" },
    clients: { type: "string", default: "1,2,4,8" },
    threads: { type: "string", default: "2" },
    rounds: { type: "string", default: "3" },
    prompt: { type: "string", default: "128" },
    generate: { type: "string", default: "64" },
    save: { type: "boolean" },
    "no-llama": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`Usage: bench/serve.ts [options]

  --model <file>     GGUF file, or "real" (the real Gemma 3 270M Q4_K_M, fetched once; default)
  --clients <list>   concurrent clients per level (default 1,2,4,8)
  --threads <n>      threads for both servers (default 2)
  --rounds <n>       rounds per level and engine, alternating (default 3)
  --prompt <n>       prompt tokens per request, about (default 128)
  --generate <n>     tokens generated per request (default 64)
  --no-llama         ours only (no llama-server build)
  --save             write bench/results/<date>-serve-<runtime>.{json,md}`);
  process.exit(0);
}
const clientLevels = values.clients!.split(",").map(Number);
const threads = Number(values.threads), rounds = Number(values.rounds);
const promptTokens = Number(values.prompt), generateTokens = Number(values.generate);
const cache = new URL("./.cache/", import.meta.url).pathname;
takeBenchLock();

const model = await modelArgument(values.model!);

/** llama-server built for this CPU from node-llama-cpp's llama.cpp source, once (the same build
 * as bench/llamacpp.ts's llama-bench: bench/peers/llamacpp_install.ts). */
function ensureLlamaServer(): string {
  return ensureNativeLlamaTool(`${cache}llama`, `${cache}llama-native`, "llama-server");
}

/** Starts a server process and waits until /health says ok. */
async function startServer(cmd: string, args: string[], port: number) {
  const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => stderr = (stderr + d).slice(-4000));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited: ${stderr}`);
    try {
      if ((await fetch(`${base}/health`)).ok) return { base, stop: () => child.kill("SIGINT") };
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill();
  throw new Error(`${cmd} did not become healthy: ${stderr}`);
}

/** A distinct prompt of about `n` tokens (common words; ~1.2 tokens each). */
let promptSerial = 0;
function nextPrompt(n: number): string {
  const words =
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there one all we their"
      .split(" ");
  const serial = promptSerial++;
  const out = [`Note ${serial}:`];
  for (let i = 0; out.length < n / 1.2; i++) out.push(words[(serial * 7 + i * 13) % words.length]);
  return out.join(" ");
}

/** One streamed completion: time to the first text and tokens generated. */
async function request(base: string): Promise<{ ttftMs: number; tokens: number; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      prompt: nextPrompt(promptTokens),
      max_tokens: generateTokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!res.ok) throw new Error(`${base}: ${res.status} ${await res.text()}`);
  let ttft = -1, tokens = 0, buf = "";
  const dec = new TextDecoder();
  for await (const chunk of res.body!) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const data = JSON.parse(event.slice(6));
      if (ttft < 0 && data.choices?.[0]?.text) ttft = performance.now() - t0;
      if (data.usage) tokens = data.usage.completion_tokens;
    }
  }
  return { ttftMs: ttft, tokens, ms: performance.now() - t0 };
}

async function level(base: string, clients: number) {
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: clients }, () => request(base)));
  const wall = (performance.now() - t0) / 1000;
  return {
    tokensPerSec: rs.reduce((a, r) => a + r.tokens, 0) / wall,
    ttfts: rs.map((r) => r.ttftMs),
  };
}

const ourPort = 18180, llamaPort = 18181;
const maxClients = Math.max(...clientLevels);
const perSlot = promptTokens * 2 + generateTokens + 64;
const engines: { name: string; start: () => Promise<{ base: string; stop: () => void }> }[] = [{
  name: "ours",
  start: () => {
    const cmd = runtime === "deno" ? [process.execPath, "run", "-A"] : [process.execPath, "run"];
    return startServer(cmd[0], [
      ...cmd.slice(1),
      new URL("../cli.ts", import.meta.url).pathname,
      "serve",
      "--model",
      model,
      "--port",
      String(ourPort),
      "--threads",
      String(threads),
      "--parallel",
      String(maxClients),
      "--context-length",
      String(perSlot),
      "-q",
    ], ourPort);
  },
}];
if (!values["no-llama"]) {
  const bin = ensureLlamaServer();
  engines.push({
    name: "llama-server",
    start: () =>
      startServer(bin, [
        "-m",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        String(llamaPort),
        "-t",
        String(threads),
        "-tb",
        String(threads),
        "-np",
        String(maxClients),
        "-c",
        String(perSlot * maxClients),
        "--no-webui",
      ], llamaPort),
  });
}

const servers: { name: string; base: string; stop: () => void }[] = [];
for (const e of engines) servers.push({ ...e, ...(await e.start()) });
const results = new Map<string, { tokensPerSec: number[]; ttfts: number[] }>();
try {
  for (const base of servers) await request(base.base); // warm up
  for (const c of clientLevels) {
    for (let r = 0; r < rounds; r++) {
      for (const s of servers) {
        const got = await level(s.base, c);
        const key = `${s.name}|${c}`;
        const acc = results.get(key) ?? { tokensPerSec: [], ttfts: [] };
        acc.tokensPerSec.push(got.tokensPerSec);
        acc.ttfts.push(...got.ttfts);
        results.set(key, acc);
        process.stderr.write(".");
      }
    }
  }
} finally {
  for (const s of servers) s.stop();
}
process.stderr.write("\n");

const q = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const rows = clientLevels.map((c) => {
  const row: Record<string, unknown> = { clients: c };
  for (const s of servers) {
    const r = results.get(`${s.name}|${c}`)!;
    row[s.name] = {
      tokensPerSec: q(r.tokensPerSec, 0.5),
      ttftP50Ms: q(r.ttfts, 0.5),
      ttftP95Ms: q(r.ttfts, 0.95),
    };
  }
  return row;
});
const names = servers.map((s) => s.name);
const cell = (r: Record<string, unknown>, n: string) => {
  const v = r[n] as { tokensPerSec: number; ttftP50Ms: number; ttftP95Ms: number };
  return `${v.tokensPerSec.toFixed(1)} | ${v.ttftP50Ms.toFixed(0)} / ${v.ttftP95Ms.toFixed(0)}`;
};
const table = [
  `Server throughput, ${
    model.split("/").pop()
  }, ${threads} threads, ${runtime}; each request a streamed completion of a distinct ~${promptTokens}-token prompt and ${generateTokens} tokens; medians over ${rounds} alternating rounds (TTFT percentiles over all requests)`,
  "",
  `| clients | ${names.map((n) => `${n} tok/s | ${n} TTFT p50 / p95 ms`).join(" | ")} |${
    names.length > 1 ? " tok/s ratio |" : ""
  }`,
  `|---|${names.map(() => "---|---|").join("")}${names.length > 1 ? "---|" : ""}`,
  ...rows.map((r) =>
    `| ${r.clients} | ${names.map((n) => cell(r, n)).join(" | ")} |${
      names.length > 1
        ? ` ${
          ((r.ours as { tokensPerSec: number }).tokensPerSec /
            (r["llama-server"] as { tokensPerSec: number }).tokensPerSec).toFixed(2)
        } |`
        : ""
    }`
  ),
];
console.log(table.join("\n"));
if (values.save) {
  const dir = new URL("./results/", import.meta.url).pathname;
  const base = `${dir}${new Date().toISOString().slice(0, 10)}-serve-${runtime}`;
  const machine = machineInfo();
  const command = `${runtime} bench/serve.ts ${process.argv.slice(2).join(" ")}`.trim();
  writeFileSync(
    `${base}.json`,
    JSON.stringify({ date: new Date().toISOString(), command, machine, rows }, null, 2) + "\n",
  );
  writeFileSync(
    `${base}.md`,
    [
      `# The server under load, ${runtime}`,
      "",
      `Machine: ${machine.cpu}, ${machine.cores} cores; ${machine.runtime}. Command: \`${command}\`.`,
      "",
      ...table,
      "",
    ].join("\n"),
  );
}
