// The one place that pins llama.cpp for comparisons: npm node-llama-cpp 3.21.1 with its prebuilt
// Linux x64 binaries (its install script is skipped; the binaries load with build: "never", see
// ../shared/NOTES.md), and the same release's source built for this CPU (ensureNativeLlamaTool:
// llama-bench and llama-server, bench only). Used by bench/llamacpp.ts and by the tests (tests/support/llamacpp.ts); never
// imported by the engine.

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

/** The options llama.cpp is built with for this machine. `-march=native` (GGML_NATIVE) with the
 * AMX instructions left out: on the Sapphire Rapids VMs this project runs on, a native build's AMX
 * kernels died with an illegal instruction on their first product (gdb: inside
 * ggml::cpu::amx::tensor_traits::compute_forward), though node-llama-cpp's prebuilt binaries
 * report AMX_INT8 there and run; WebAssembly has no matrix unit either. */
const NATIVE_CMAKE = [
  "-G",
  "Ninja",
  "-DGGML_NATIVE=ON",
  "-DLLAMA_CURL=OFF",
  "-DCMAKE_BUILD_TYPE=Release",
  "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
  "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
];

/** A llama.cpp tool (llama-bench, llama-server) built for this CPU from the llama.cpp source
 * node-llama-cpp ships (its gitRelease.bundle, in the install at `nodeLlamaDir`), once, into
 * `dir` (one source tree and build for every tool; cmake, ninja and a C++ compiler needed; ~10-15
 * min on 2 cores, the compiler's progress shown); returns its path. */
export function ensureNativeLlamaTool(
  nodeLlamaDir: string,
  dir: string,
  tool: "llama-bench" | "llama-server",
): string {
  const bin = `${dir}/src/build/bin/${tool}`;
  if (existsSync(bin)) return bin;
  ensureLlamaCppIn(nodeLlamaDir);
  const bundle = `${nodeLlamaDir}/node_modules/node-llama-cpp/llama/gitRelease.bundle`;
  for (const t of ["git", "cmake", "ninja", "c++"]) {
    try {
      execFileSync(t, ["--version"], { stdio: "ignore" });
    } catch {
      throw new Error(
        `building llama.cpp's ${tool} needs ${t} (apt install git cmake ninja-build g++)`,
      );
    }
  }
  mkdirSync(dir, { recursive: true });
  process.stderr.write(
    `building llama.cpp's ${tool} for this CPU into ${dir} (once, ~15 min)...\n`,
  );
  if (!existsSync(`${dir}/src/.git`)) execFileSync("git", ["clone", "-q", bundle, `${dir}/src`]);
  execFileSync("cmake", ["-B", "build", ...NATIVE_CMAKE], { cwd: `${dir}/src`, stdio: "inherit" });
  execFileSync("cmake", ["--build", "build", "-j", "2", "--target", tool], {
    cwd: `${dir}/src`,
    stdio: "inherit",
  });
  return bin;
}
