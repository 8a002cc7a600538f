// The one place that pins llama.cpp for comparisons: npm node-llama-cpp 3.21.1 with its prebuilt
// Linux x64 binaries (its install script is skipped; the binaries load with build: "never", see
// ../shared/NOTES.md). Used by bench/llamacpp.ts and by the tests (tests/support/llamacpp.ts);
// never imported by the engine.

import process from "node:process";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";

/** Installs node-llama-cpp into `dir` (node_modules there) unless it is there already. */
export function ensureLlamaCppIn(dir: string, quiet = false): void {
  if (existsSync(`${dir}/node_modules/@node-llama-cpp/linux-x64/bins`)) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/package.json`, '{ "private": true }\n');
  if (!quiet) process.stderr.write("installing node-llama-cpp 3.21.1 (once)...\n");
  execFileSync("npm", [
    "i",
    "-E",
    "node-llama-cpp@3.21.1",
    "@node-llama-cpp/linux-x64@3.21.1",
    "--omit=optional",
    "--no-audit",
    "--no-fund",
  ], { cwd: dir, stdio: quiet ? "pipe" : "inherit" });
}
