// A runtime smoke test that needs no test framework, so Deno, Bun and Node (bundled) run the same
// file: load tiny-a, generate 24 greedy tokens for each golden prompt, compare with the golden.
//
//   deno run -A tests/smoke.ts   |   bun tests/smoke.ts   |   node smoke.mjs (bundled by bun build)
//
// Run from the repository root (or pass the fixture folder as the first argument).

import process from "node:process";
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { loadModel, loadTokenizer } from "../mod.ts";

const runtime = "Deno" in globalThis
  ? "deno"
  : "Bun" in globalThis
  ? "bun"
  : `node ${process.version}`;
const dir = process.argv[2] ?? "tests/fixtures/tiny-a";
const golden = JSON.parse(await readFile(`${dir}/golden.json`, "utf8"));
let passed = 0, failed = 0;
for (const threads of [1, 2]) {
  const model = await loadModel(dir, { threads });
  for (
    const r of golden.results as { prompt: number[]; greedy_continuation_kv_cache: number[] }[]
  ) {
    const s = model.createSession({ contextLength: 128 });
    const got: number[] = [];
    for await (const id of s.generate(r.prompt, { maxTokens: 24, stopTokens: [] })) got.push(id);
    if (got.join() === r.greedy_continuation_kv_cache.join()) passed++;
    else {
      failed++;
      console.error(
        `${threads} thread(s), prompt ${r.prompt.join(",")}: got ${got.join(",")}, want ${
          r.greedy_continuation_kv_cache.join(",")
        }`,
      );
    }
    s.dispose();
  }
  if (model.threads !== threads) {
    failed++;
    console.error(
      `asked for ${threads} threads, got ${model.threads} (${model.threadsFallbackReason})`,
    );
  }
  await model.dispose();
}

// The tokenizer too, when the tests have fetched the real tokenizer.json (CI runs them first).
const tokDir = "tests/.cache/gemma3-tokenizer";
if (existsSync(`${tokDir}/tokenizer.json`)) {
  const tok = await loadTokenizer(tokDir);
  const cases: { name: string; text: string; ids: number[] }[] = JSON.parse(
    await readFile("tests/fixtures/tokenizer/encode-cases.json", "utf8"),
  );
  const bad = cases.filter((c) => tok.encode(c.text, { addBos: false }).join() !== c.ids.join());
  if (bad.length) {
    failed++;
    console.error(`tokenizer: ${bad.length} encode cases differ, e.g. ${bad[0].name}`);
  } else passed++;
}
console.log(`smoke (${runtime}): ${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
