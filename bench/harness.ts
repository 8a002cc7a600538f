// What every benchmark needs: the runtime it runs in, the machine it reports, and one benchmark
// at a time (two running together share the two cores and both measure wrong: a lock file in
// bench/.cache/ holds the running bench's pid; a stale one, dead pid, is taken over).

import process from "node:process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";

/** Takes the bench lock, or exits with a message naming the bench that holds it. */
export function takeBenchLock(): void {
  const dir = new URL("./.cache/", import.meta.url).pathname;
  const lock = `${dir}bench.lock`;
  mkdirSync(dir, { recursive: true });
  if (existsSync(lock)) {
    const [pid, what] = readFileSync(lock, "utf8").split("\n");
    let alive = false;
    try {
      process.kill(Number(pid), 0);
      alive = true;
    } catch { /* stale lock */ }
    if (alive && Number(pid) !== process.pid) {
      console.error(
        `another benchmark is running (pid ${pid}: ${what}); wait for it, or remove ${lock} if it is not`,
      );
      process.exit(1);
    }
  }
  writeFileSync(lock, `${process.pid}\n${process.argv.slice(1).join(" ")}`);
  process.on("exit", () => rmSync(lock, { force: true }));
}

/** "deno", "bun" or "node". */
export const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";

/** CPU model, core count and runtime version, for saved results. */
export function machineInfo(): { cpu: string; cores: number; runtime: string } {
  let cpu = "unknown CPU";
  try {
    cpu = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? cpu;
  } catch { /* not Linux */ }
  const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string } };
  const version = g.Deno
    ? `Deno ${g.Deno.version.deno}`
    : g.Bun
    ? `Bun ${g.Bun.version}`
    : `Node ${process.version}`;
  return { cpu, cores: navigator.hardwareConcurrency, runtime: version };
}

/** Writes a benchmark's results as bench/results/<date>-<name>.md (the markdown) and .json. */
export function saveResults(name: string, markdown: string, json: unknown): void {
  const dir = new URL("./results/", import.meta.url).pathname;
  mkdirSync(dir, { recursive: true });
  const stem = `${dir}${new Date().toISOString().slice(0, 10)}-${name}`;
  writeFileSync(`${stem}.md`, markdown.endsWith("\n") ? markdown : markdown + "\n");
  writeFileSync(`${stem}.json`, JSON.stringify(json, null, 2) + "\n");
}

/** The median of a benchmark's samples (the upper one of an even count). */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}
