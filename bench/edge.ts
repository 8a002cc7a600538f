/**
 * The edge function (examples/deno-deploy/main.ts) measured as a platform runs it: a fresh Deno
 * process with no workers (Worker and process removed, as on Deno Deploy), no write permission,
 * the model by URL from a local HTTP server (or, `local`, by path), one streaming chat request.
 *
 *   deno run -A bench/edge.ts [--rounds 3] [--save]
 *
 * For each case: cold start to first token (from spawning the process to the first streamed
 * token), CPU seconds the process used by the end of that first request (user + system), and
 * peak RSS (VmHWM). Cases: the full-size random 270M as Q4_0 (embedding/head in Q4_0 too, and in
 * Q8_0 as llama-quantize keeps it) and Q8_0 by URL, and Q8_0 by local path. Linux only (/proc). Medians of the rounds with the min–max spread.
 */
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { ensureRandomGguf } from "./random_model.ts";
import { machineInfo, median, saveResults, takeBenchLock } from "./harness.ts";
import { fileResponse } from "../cli/web_page.ts";
import { spawnEdge } from "../tests/fixtures/edge/spawn.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    save: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(`Usage: deno run -A bench/edge.ts [--rounds N] [--save]

Cold start to first token, CPU of the first request and peak RSS of examples/deno-deploy/main.ts,
run as an edge platform runs it (no workers, no write permission), on the random 270M.
--save writes bench/results/<date>-edge.{md,json}.`);
  Deno.exit(0);
}
takeBenchLock();
const rounds = Number(values.rounds);
const CLK_TCK = 100; // Linux's USER_HZ for /proc/<pid>/stat times

const files: Record<string, string> = {
  "q4_0-head-q4_0.gguf": await ensureRandomGguf("q4_0+q4_0"),
  "q4_0.gguf": await ensureRandomGguf("q4_0"),
  "q8_0.gguf": await ensureRandomGguf("q8_0"),
};
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
  const name = new URL(req.url).pathname.slice(1);
  return files[name] ? fileResponse(files[name], req) : new Response("no", { status: 404 });
});
const base = `http://127.0.0.1:${server.addr.port}/`;

interface Sample {
  coldStartMs: number;
  firstRequestCpuS: number;
  peakRssMiB: number;
  threads: number;
}

async function once(model: string, local: boolean): Promise<Sample> {
  const port = 30000 + Math.floor(Math.random() * 20000);
  const started = performance.now();
  const child = spawnEdge({
    modelUrl: model,
    port,
    remove: ["Worker", "process"],
    allowRead: local ? [model] : [],
    stdout: "null",
  });
  try {
    const body = JSON.stringify({
      messages: [{ role: "user", content: "Why is the sky blue?" }],
      max_tokens: 16,
      temperature: 0,
      stream: true,
    });
    let res: Response | undefined;
    while (!res) {
      res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, { method: "POST", body })
        .catch(() => undefined);
      if (!res) await new Promise((r) => setTimeout(r, 5));
    }
    let first = 0;
    const decoder = new TextDecoder();
    for await (const chunk of res.body!) {
      if (!first && /"content":"[^"]/.test(decoder.decode(chunk))) first = performance.now();
    }
    const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1].split(" ");
    const cpu = (Number(stat[11]) + Number(stat[12])) / CLK_TCK; // utime, stime
    const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
    const rss = Number(/VmHWM:\s*(\d+)/.exec(status)![1]) / 1024;
    const props = await (await fetch(`http://127.0.0.1:${port}/props`)).json();
    return {
      coldStartMs: first - started,
      firstRequestCpuS: cpu,
      peakRssMiB: rss,
      threads: props.threads,
    };
  } finally {
    child.kill();
    await child.status;
    await child.stderr.cancel().catch(() => {});
  }
}

const CASES = [
  { name: "Q4_0, head Q4_0, by URL", model: `${base}q4_0-head-q4_0.gguf`, local: false },
  { name: "Q4_0 by URL", model: `${base}q4_0.gguf`, local: false },
  { name: "Q8_0 by URL", model: `${base}q8_0.gguf`, local: false },
  { name: "Q8_0 local file", model: files["q8_0.gguf"], local: true },
];
const samples = new Map<string, Sample[]>(CASES.map((c) => [c.name, []]));
for (let r = 0; r < rounds; r++) {
  for (const c of CASES) samples.get(c.name)!.push(await once(c.model, c.local));
}
await server.shutdown();

const spread = (xs: number[], digits: number) =>
  `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${
    Math.max(...xs).toFixed(digits)
  })`;
const rows = CASES.map((c) => {
  const s = samples.get(c.name)!;
  return {
    case: c.name,
    threads: s[0].threads,
    coldStartMs: s.map((x) => x.coldStartMs),
    firstRequestCpuS: s.map((x) => x.firstRequestCpuS),
    peakRssMiB: s.map((x) => x.peakRssMiB),
  };
});
const table = [
  "| case | threads | cold start to first token, ms | CPU s, first request | peak RSS MiB |",
  "|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.case} | ${r.threads} | ${spread(r.coldStartMs, 0)} | ${
      spread(r.firstRequestCpuS, 2)
    } | ${spread(r.peakRssMiB, 0)} |`
  ),
].join("\n");
const machine = machineInfo();
const header =
  `Edge function (examples/deno-deploy/main.ts, Worker and process removed, no write permission), random 270M, ${machine.cpu}, ${machine.cores} cores, Deno ${Deno.version.deno}; medians of ${rounds} (min–max)`;
console.log(`${header}\n\n${table}`);
if (values.save) {
  saveResults(
    "edge",
    `# ${header}\n\nCommand: \`deno run -A bench/edge.ts --rounds ${rounds} --save\`\n\n${table}\n`,
    { machine, rounds, rows },
  );
}
