// One benchmark at a time: two running together share the two cores and both measure wrong.
// A lock file in bench/.cache/ holds the running bench's pid; a stale one (dead pid) is taken over.

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
