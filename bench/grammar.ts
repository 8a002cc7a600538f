// What constrained decoding costs: per schema, the compile time and the grammar's cost per
// generated token (the check of the sampled token, and when the grammar refuses it the mask and
// the second draw), beside the decode step it rides on.
//
//   deno run -A bench/grammar.ts                 # the random 270M, Q8_0 (worst case), 2 threads
//   deno run -A bench/grammar.ts --model real    # the real Gemma 3 270M Q4_K_M
//
// The random model's output is garbage, so the grammar refuses its samples far more often than a
// trained model's: the worst case for the fast path. Writes a table and JSON to bench/results/.

import process from "node:process";
import { parseArgs } from "node:util";
import { writeFileSync } from "node:fs";
import { basename } from "node:path";
import { Grammar, jsonSchemaToGbnf, loadModel } from "../mod.ts";
import { enforceGrammar } from "../engine/session.ts";
import { GrammarMatcher, tokenTrie } from "../engine/grammar/matcher.ts";
import { Sampler } from "../engine/sampling.ts";
import { machineInfo, takeBenchLock } from "./harness.ts";
import { ensureRandomGguf } from "./random_model.ts";
import { modelArgument } from "./real_model.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    threads: { type: "string", default: "2" },
    seeds: { type: "string", default: "3" },
    tokens: { type: "string", default: "64" },
  },
});
takeBenchLock();
const path = values.model ? await modelArgument(values.model) : await ensureRandomGguf("q8_0");
const model = await loadModel(path, { threads: Number(values.threads) });
const tok = model.tokenizer;
const schemas: Record<string, unknown> = JSON.parse(
  Deno.readTextFileSync(new URL("../tests/fixtures/json-schemas/schemas.json", import.meta.url)),
);

const t0 = performance.now();
const trie = tokenTrie(tok);
const trieMs = performance.now() - t0;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
};

interface Row {
  schema: string;
  compileMs: number;
  tokens: number;
  maskP50Us: number;
  maskP99Us: number;
  fullMasks: number;
  stepP50Ms: number;
  shareP50: number;
}
const rows: Row[] = [];
const prompt = tok.encodeChat([{ role: "user", content: "Reply with JSON." }]);
for (const [name, schema] of Object.entries(schemas)) {
  const c0 = performance.now();
  const grammar = new Grammar(jsonSchemaToGbnf(schema)); // fresh: no cache
  const compileMs = performance.now() - c0;
  const costs: number[] = [], steps: number[] = [];
  let fullMasks = 0;
  for (let seed = 1; seed <= Number(values.seeds); seed++) {
    const session = model.createSession({ contextLength: 512 });
    const matcher = new GrammarMatcher(grammar, trie, model.defaultStopTokens);
    const sampler = new Sampler({ temperature: 1, seed });
    const scratch = new Float32Array(model.config.vocabSize);
    const context = [...prompt];
    let logits = await session.eval(prompt);
    for (let n = 0; n < Number(values.tokens) && !matcher.mustEnd; n++) {
      const id0 = sampler.sample(logits, context); // what unconstrained sampling pays anyway
      const before = matcher.stats.masks;
      const a = performance.now();
      const id = enforceGrammar(matcher, id0, logits, scratch, sampler, context);
      if (model.defaultStopTokens.includes(id)) break;
      matcher.accept(id);
      costs.push((performance.now() - a) * 1000);
      fullMasks += matcher.stats.masks - before;
      context.push(id);
      const b = performance.now();
      logits = await session.eval([id]);
      steps.push(performance.now() - b);
    }
    session.dispose();
  }
  const stepP50Ms = pct(steps, 0.5);
  rows.push({
    schema: name,
    compileMs,
    tokens: costs.length,
    maskP50Us: pct(costs, 0.5),
    maskP99Us: pct(costs, 0.99),
    fullMasks,
    stepP50Ms,
    shareP50: pct(costs, 0.5) / 1000 / stepP50Ms,
  });
  const r = rows.at(-1)!;
  process.stderr.write(
    `${name}: compile ${compileMs.toFixed(1)} ms, mask p50 ${r.maskP50Us.toFixed(0)} µs p99 ${
      r.maskP99Us.toFixed(0)
    } µs, ${fullMasks}/${costs.length} full masks, step ${stepP50Ms.toFixed(1)} ms\n`,
  );
}
await model.dispose();

const f = (x: number, d = 1) => x.toFixed(d);
const info = machineInfo();
const label = values.model
  ? `model ${values.model}`
  : "random 270M, Q8_0 (worst case: garbage output)";
const lines = [
  `# Constrained decoding cost (${new Date().toISOString().slice(0, 10)})`,
  "",
  `${info.cpu}, ${info.cores} cores, ${info.runtime}; ${label}; ${values.threads} threads; ` +
  `temperature 1, ${values.seeds} seeds x up to ${values.tokens} tokens per schema. ` +
  `Vocabulary trie (262,144 tokens, ${trie.nodes} nodes) built once in ${f(trieMs, 0)} ms.`,
  "",
  "Mask cost = per generated token: the check of the sampled token, and when the grammar refuses",
  "it, the full mask (trie walk, or a state's cached mask) and the second draw. Target: p50 at",
  "most 5% of a decode step; compile at most 50 ms. llguidance publishes about 50 µs per full",
  "mask on a 128k vocabulary (Rust, native); its fast path is the same as ours and llama.cpp's.",
  "",
  "| schema | compile ms | tokens | full masks | mask p50 µs | mask p99 µs | decode step p50 ms | p50 / step |",
  "|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.schema} | ${f(r.compileMs)} | ${r.tokens} | ${r.fullMasks} | ${f(r.maskP50Us, 0)} | ${
      f(r.maskP99Us, 0)
    } | ${f(r.stepP50Ms)} | ${f(100 * r.shareP50)}% |`
  ),
  "",
];
const table = lines.join("\n");
console.log(table);
const name = `bench/results/${new Date().toISOString().slice(0, 10)}-grammar-${
  values.model ? basename(path, ".gguf") : "random-q8_0"
}`;
writeFileSync(`${name}.md`, table);
writeFileSync(`${name}.json`, JSON.stringify({ info, label, trieMs, rows }, null, 2));
