// The fuzzer's short pass (tests/fuzz/): 400 mutated inputs of each kind, each run in a child
// process with a heap limit, a data limit and a time limit, as the long pass does (10,000 of
// each kind: `deno run -A tests/fuzz/fuzz.ts`, see the README). Every case must end in success
// or in a clean error: no hang, no process over its memory, no crash, no runtime TypeError or
// WebAssembly trap reaching the caller, and every error about a file naming the file, and the
// field where the case's mutation can be traced to one.
//
// FUZZ_SEED picks another seed (the cases are made from seed, kind and index alone, so a failure
// is reproduced with `deno run -A tests/fuzz/fuzz.ts --seed S --only KIND:INDEX`).

import { deepStrictEqual, ok } from "node:assert/strict";
import { failures, fuzz, markdownTable, summarize } from "./fuzz/fuzz.ts";
import { KINDS, readBases } from "./fuzz/cases.ts";
import { mutateGguf } from "./fuzz/gguf_mutate.ts";
import { mutateJson } from "./fuzz/json_mutate.ts";
import { Random } from "./fuzz/random.ts";
import { gemmaTokenizerDir } from "./support/gemma_tokenizer.ts";
import { tempDir } from "./support/temp.ts";

const seed = Number(Deno.env.get("FUZZ_SEED") ?? 1);

Deno.test("fuzz: a case is made from (seed, kind, index) alone", async () => {
  const bases = await readBases(await gemmaTokenizerDir(), await tempDir());
  const a = mutateGguf(bases.gguf, new Random(seed, "gguf", 17));
  const b = mutateGguf(bases.gguf, new Random(seed, "gguf", 17));
  deepStrictEqual(a, b);
  const c = mutateJson(bases.config, new Random(seed, "config", 17));
  deepStrictEqual(c, mutateJson(bases.config, new Random(seed, "config", 17)));
  ok(
    JSON.stringify(c) !== JSON.stringify(mutateJson(bases.config, new Random(seed, "config", 18))),
    "another index, another case",
  );
});

Deno.test("fuzz: 400 cases of each kind end in success or a clean error naming the file and the field", async () => {
  const results = await fuzz({
    kinds: KINDS,
    cases: 400,
    seed,
    timeoutMs: 10_000,
    heapMiB: 1024,
    dataGiB: 3,
    jobs: 2,
    fresh: false,
  });
  const rows = summarize(results);
  const table = markdownTable(rows);
  const bad = failures(results).map((r) =>
    `${r.kind}:${r.index} ${r.outcome}: ${r.error}${r.stack ? `\n${r.stack}` : ""}`
  );
  deepStrictEqual(bad, [], `seed ${seed}\n${table}`);
  for (const row of rows) {
    deepStrictEqual(row.cases, 400);
    const unnamed = results.filter((r) =>
      r.kind === row.kind && r.namesFile && r.namesField === false
    );
    deepStrictEqual(
      unnamed.map((r) => `${r.kind}:${r.index} (mutated ${r.labels.join(", ")}): ${r.error}`),
      [],
      `file errors that do not name the field (seed ${seed})`,
    );
  }
  // The pass did reach the engine's checks: each file kind had errors and successes.
  for (const kind of ["gguf", "safetensors", "config", "tokenizer"]) {
    const row = rows.find((r) => r.kind === kind)!;
    ok(row.counts.ok > 0 && row.counts.error > 0 && row.fileErrors > 0, `${kind}: ${table}`);
  }
});
