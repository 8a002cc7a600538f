// The fuzzer: mutated GGUF, safetensors, config.json, tokenizer.json and chat inputs, each case
// run in a child process with a heap limit, a data limit and a time limit, and counted as ok, a
// clean error, a hang, over memory, a crash (the process died) or internal (a runtime TypeError
// and the like, a WebAssembly trap, or a file error that does not name the file).
//
//   deno run -A tests/fuzz/fuzz.ts                       # the long pass: 10,000 cases per kind
//   deno run -A tests/fuzz/fuzz.ts --cases 200 --kind gguf --seed 7
//   deno run -A tests/fuzz/fuzz.ts --only gguf:1234      # one case here, with its stack
//
// Cases are made from (seed, kind, index) alone, so a failure is reproduced by its index. A child
// runs cases one after another (a fresh process per case would cost ~0.5 s each); one that hangs,
// dies or passes the memory limit is replaced, and `--fresh` gives every case its own process.

import { parseArgs } from "node:util";
import { gemmaTokenizerDir } from "../support/gemma_tokenizer.ts";
import { type CaseReport, type Kind, KINDS, readBases, runCase } from "./cases.ts";

export interface FuzzOptions {
  kinds: readonly Kind[];
  /** Cases per kind. */
  cases: number;
  seed: number;
  /** A case that takes longer is a hang. */
  timeoutMs: number;
  /** V8 heap limit of a child (MiB), and its data limit (GiB, RLIMIT_DATA): past either the
   * child dies, and the case counts as over memory. */
  heapMiB: number;
  dataGiB: number;
  /** Children running at once. */
  jobs: number;
  /** A new process for every case. */
  fresh: boolean;
  onResult?: (r: Result) => void;
}

export const OUTCOMES = ["ok", "error", "hang", "memory", "crash", "internal"] as const;
export type Outcome = typeof OUTCOMES[number];

/** One case's result, as the parent saw it. */
export interface Result extends Omit<CaseReport, "outcome"> {
  kind: Kind;
  index: number;
  outcome: Outcome;
  ms?: number;
  rss?: number;
}

/** Per kind: counts of each outcome, how many file errors named the field, time and memory. */
export interface Row {
  kind: Kind;
  cases: number;
  counts: Record<Outcome, number>;
  /** File errors whose cause is a mutated field (not random byte damage), and how many of
   * them name it. */
  fileErrors: number;
  namesField: number;
  maxMs: number;
  peakRssMiB: number;
}

const CHILD = new URL("./child.ts", import.meta.url).pathname;

/** Lines of a child's stdout, one at a time. */
class LineReader {
  #reader: ReadableStreamDefaultReader<string>;
  #pending = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }
  /** The next line, or undefined at the end of the stream. */
  async next(): Promise<string | undefined> {
    for (;;) {
      const nl = this.#pending.indexOf("\n");
      if (nl >= 0) {
        const line = this.#pending.slice(0, nl);
        this.#pending = this.#pending.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) return undefined;
      this.#pending += value;
    }
  }
}

/** A running child: send it a case, read its report. */
class Child {
  #proc: Deno.ChildProcess;
  #lines: LineReader;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  stderrTail = "";
  #stderrDone: Promise<void>;

  constructor(o: FuzzOptions, work: string, tokenizerDir: string) {
    const deno = [
      Deno.execPath(),
      "run",
      "-A",
      `--v8-flags=--max-old-space-size=${o.heapMiB}`,
      CHILD,
      String(o.seed),
      work,
      tokenizerDir,
    ];
    // prlimit sets RLIMIT_DATA, which counts memory the process writes (WebAssembly memory
    // too) but not the address space WebAssembly reserves and never touches.
    const cmd = hasPrlimit ? ["prlimit", `--data=${o.dataGiB * 2 ** 30}`, ...deno] : deno;
    const proc = this.#proc = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { GEMMA3_WASM_CACHE: `${work}/cache`, NO_COLOR: "1" },
    }).spawn();
    this.#lines = new LineReader(this.#proc.stdout);
    this.#stdin = this.#proc.stdin.getWriter();
    this.#stderrDone = (async () => {
      for await (const chunk of proc.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderrTail = (this.stderrTail + chunk).slice(-4000);
      }
    })();
  }

  /** The next report line, or undefined when the child is gone. */
  async report(): Promise<string | undefined> {
    for (let line = await this.#lines.next(); line !== undefined; line = await this.#lines.next()) {
      if (line.startsWith("@@")) return line.slice(2);
    }
    return undefined;
  }

  async send(kind: Kind, index: number): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(`${JSON.stringify({ kind, index })}\n`));
  }

  /** Stops it, and says how it ended. */
  async kill(): Promise<Deno.CommandStatus> {
    try {
      this.#proc.kill("SIGKILL");
    } catch { /* already gone */ }
    return await this.status();
  }

  async status(): Promise<Deno.CommandStatus> {
    const s = await this.#proc.status;
    await this.#stderrDone.catch(() => {});
    return s;
  }

  async close(): Promise<void> {
    await this.#stdin.close().catch(() => {});
    await this.status();
  }
}

const hasPrlimit = await (async () => {
  try {
    return (await new Deno.Command("prlimit", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output()).success;
  } catch {
    return false;
  }
})();

/** How a child that died was ended: out of memory (V8's own message, the data limit, or the
 * kernel's OOM killer, whose SIGKILL nobody else sends it), or a crash. */
function deathOf(status: Deno.CommandStatus, stderr: string): Outcome {
  const memory = /out of memory|heap limit|Allocation failed|Cannot allocate|memory allocation/i;
  return memory.test(stderr) || status.signal === "SIGKILL" ? "memory" : "crash";
}

/** Runs the cases and returns every result, in order of kind then index. */
export async function fuzz(o: FuzzOptions): Promise<Result[]> {
  const work = await Deno.makeTempDir({ prefix: "gemma3-fuzz-" });
  const tokenizerDir = await gemmaTokenizerDir();
  const queue = o.kinds.flatMap((kind) =>
    Array.from({ length: o.cases }, (_, index) => ({ kind, index }))
  );
  const results: Result[] = [];
  const record = (r: Result) => {
    results.push(r);
    o.onResult?.(r);
  };
  const runner = async () => {
    let child: Child | undefined;
    const start = async () => {
      const c = new Child(o, work, tokenizerDir);
      const ready = await withTimeout(c.report(), 120_000);
      if (ready !== "@@ready".slice(2)) {
        await c.kill();
        throw new Error(`a fuzz child did not start:\n${c.stderrTail}`);
      }
      return c;
    };
    for (let next = queue.shift(); next; next = queue.shift()) {
      child ??= await start();
      await child.send(next.kind, next.index);
      const line = await withTimeout(child.report(), o.timeoutMs);
      if (line === TIMEOUT) {
        await child.kill();
        record({
          ...next,
          outcome: "hang",
          labels: [],
          error: `no answer within ${o.timeoutMs} ms`,
        });
        child = undefined;
      } else if (line === undefined) {
        const status = await child.status();
        record({
          ...next,
          outcome: deathOf(status, child.stderrTail),
          labels: [],
          error: `exit ${status.code}${status.signal ? ` (${status.signal})` : ""}: ${
            child.stderrTail.slice(-600)
          }`,
        });
        child = undefined;
      } else {
        const r = JSON.parse(line) as Result;
        record(r);
        if (o.fresh) {
          await child.close();
          child = undefined;
        }
      }
    }
    await child?.close();
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, o.jobs) }, runner));
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  return results.sort((a, b) => KINDS.indexOf(a.kind) - KINDS.indexOf(b.kind) || a.index - b.index);
}

const TIMEOUT = Symbol("timeout");
async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<typeof TIMEOUT>((resolve) => timer = setTimeout(() => resolve(TIMEOUT), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The table of outcomes per kind. */
export function summarize(results: Result[]): Row[] {
  const rows = new Map<Kind, Row>();
  for (const r of results) {
    let row = rows.get(r.kind);
    if (!row) {
      row = {
        kind: r.kind,
        cases: 0,
        counts: Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>,
        fileErrors: 0,
        namesField: 0,
        maxMs: 0,
        peakRssMiB: 0,
      };
      rows.set(r.kind, row);
    }
    row.cases++;
    row.counts[r.outcome]++;
    if (r.namesFile && r.namesField !== undefined) row.fileErrors++;
    if (r.namesFile && r.namesField) row.namesField++;
    row.maxMs = Math.max(row.maxMs, r.ms ?? 0);
    row.peakRssMiB = Math.max(row.peakRssMiB, Math.round((r.rss ?? 0) / 2 ** 20));
  }
  return [...rows.values()];
}

export function markdownTable(rows: Row[]): string {
  const head = `| kind | cases | ${
    OUTCOMES.join(" | ")
  } | file errors naming the field¹ | slowest case (ms) | peak RSS (MiB) |`;
  const lines = [head, head.replace(/[^|]+/g, "---")];
  for (const r of rows) {
    lines.push(
      `| ${r.kind} | ${r.cases} | ${
        OUTCOMES.map((o) => r.counts[o]).join(" | ")
      } | ${r.namesField} / ${r.fileErrors} | ${r.maxMs} | ${r.peakRssMiB} |`,
    );
  }
  lines.push(
    "",
    "¹ of the file errors whose cause is a mutated field (random byte damage is not traced).",
  );
  return lines.join("\n");
}

/** Failures worth a look: every outcome but ok and a clean error. */
export function failures(results: Result[]): Result[] {
  return results.filter((r) => r.outcome !== "ok" && r.outcome !== "error");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      kind: { type: "string", multiple: true },
      cases: { type: "string", default: "10000" },
      seed: { type: "string", default: "1" },
      "timeout-ms": { type: "string", default: "10000" },
      "heap-mib": { type: "string", default: "1024" },
      "data-gib": { type: "string", default: "3" },
      jobs: { type: "string", default: "2" },
      fresh: { type: "boolean", default: false },
      only: { type: "string" },
      json: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(`deno run -A tests/fuzz/fuzz.ts [options]

Mutated inputs (${KINDS.join(", ")}), each case in a child process with limits.

  --kind K          a kind to fuzz (repeat for more; default: all)
  --cases N         cases per kind (default 10000)
  --seed S          the seed (default 1): cases are made from (seed, kind, index)
  --timeout-ms MS   a case that takes longer is a hang (default 10000)
  --heap-mib M      V8 heap limit of a child (default 1024)
  --data-gib G      data limit of a child, RLIMIT_DATA (default 3)
  --jobs J          children at once (default 2)
  --fresh           a new process for every case (slow)
  --only KIND:I     run case I of KIND here, print what happened and its stack
  --json FILE       write the table and every failure as JSON`);
    Deno.exit(0);
  }
  const seed = Number(values.seed);
  if (values.only) {
    const [kind, index] = values.only.split(":");
    if (!KINDS.includes(kind as Kind) || !/^\d+$/.test(index ?? "")) {
      console.error(`--only wants KIND:INDEX, KIND one of ${KINDS.join(", ")}`);
      Deno.exit(2);
    }
    const work = await Deno.makeTempDir({ prefix: "gemma3-fuzz-" });
    const bases = await readBases(await gemmaTokenizerDir(), work);
    const dir = `${work}/case`;
    await Deno.mkdir(dir);
    console.log(await runCase(kind as Kind, seed, Number(index), bases, dir));
    console.log(`(its files are kept in ${dir})`);
    Deno.exit(0);
  }
  const kinds = (values.kind ?? [...KINDS]) as Kind[];
  const bad = kinds.find((k) => !KINDS.includes(k));
  if (bad) {
    console.error(`unknown kind ${JSON.stringify(bad)}; kinds: ${KINDS.join(", ")}`);
    Deno.exit(2);
  }
  const options: FuzzOptions = {
    kinds,
    cases: Number(values.cases),
    seed,
    timeoutMs: Number(values["timeout-ms"]),
    heapMiB: Number(values["heap-mib"]),
    dataGiB: Number(values["data-gib"]),
    jobs: Number(values.jobs),
    fresh: values.fresh,
  };
  for (const [k, v] of Object.entries(options)) {
    if (typeof v === "number" && !(Number.isFinite(v) && v >= 0)) {
      console.error(`--${k} must be a number >= 0`);
      Deno.exit(2);
    }
  }
  if (!hasPrlimit) console.error("note: prlimit not found: children run without a data limit");
  const total = kinds.length * options.cases;
  let done = 0;
  const t0 = performance.now();
  const results = await fuzz({
    ...options,
    onResult(r) {
      done++;
      if (r.outcome !== "ok" && r.outcome !== "error") {
        console.error(`\n${r.kind}:${r.index} ${r.outcome}: ${r.error ?? ""}`);
      }
      if (done % 50 === 0 || done === total) {
        const s = (performance.now() - t0) / 1000;
        Deno.stderr.writeSync(
          new TextEncoder().encode(`\r${done}/${total} cases, ${s.toFixed(0)} s`),
        );
      }
    },
  });
  console.error("");
  const rows = summarize(results);
  console.log(
    `seed ${seed}, ${options.cases} cases per kind, ${
      ((performance.now() - t0) / 60000).toFixed(1)
    } min\n`,
  );
  console.log(markdownTable(rows));
  if (values.json) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify(
        {
          options,
          rows,
          failures: failures(results),
          // File errors that name the file but not the field: the next thing to improve.
          unnamedField: results.filter((r) => r.namesFile && r.namesField === false),
        },
        null,
        1,
      ),
    );
  }
  Deno.exit(failures(results).length > 0 ? 1 : 0);
}
