// The process that runs fuzz cases (started by fuzz.ts, with a heap and a data limit). It reads
// one case per line on stdin ({"kind","index"}), runs it in a fresh folder, and prints one line
// per case: "@@" and the report as JSON, with the time it took and the process's RSS after it.
// Anything else on stdout or stderr is the engine's own output and is ignored.

import { type Kind, readBases, runCase } from "./cases.ts";

const [seedText, work, tokenizerDir] = Deno.args;
const seed = Number(seedText);
const bases = await readBases(tokenizerDir, work);
const encoder = new TextEncoder();
const write = (line: string) => Deno.stdout.writeSync(encoder.encode(`${line}\n`));
write("@@ready");

let pending = "";
for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  pending += chunk;
  for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
    const { kind, index } = JSON.parse(pending.slice(0, nl)) as { kind: Kind; index: number };
    pending = pending.slice(nl + 1);
    const dir = `${work}/case-${kind}-${index}`;
    await Deno.mkdir(dir, { recursive: true });
    const t0 = performance.now();
    // An error that escapes runCase is the fuzzer's own (making the case failed): reported as
    // internal, so that it is seen and fixed rather than taken for a hang.
    const report = await runCase(kind, seed, index, bases, dir).catch((e) => ({
      outcome: "internal" as const,
      labels: [],
      error: `the fuzzer failed to make or judge the case: ${(e as Error)?.stack ?? e}`,
    }));
    const ms = Math.round(performance.now() - t0);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    write(`@@${JSON.stringify({ kind, index, ms, rss: Deno.memoryUsage().rss, ...report })}`);
  }
}
