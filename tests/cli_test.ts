// The CLI as a user runs it: a child process, its stdout, stderr and exit code.

import { deepStrictEqual, match, ok } from "node:assert/strict";
import { FIXTURES } from "./support/helpers.ts";

const cli = new URL("../cli.ts", import.meta.url).pathname;
const tinyA = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${tinyA}/golden.json`));

async function run(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("cli generate prints the golden greedy continuation and a stats line", async () => {
  const r = golden.results[1];
  const res = await run("generate", "--model", tinyA, "--tokens", r.prompt.join(","), "-n", "24", "--ignore-eos");
  deepStrictEqual(res.code, 0, res.stderr);
  deepStrictEqual(res.stdout.trim().split(" ").map(Number), r.greedy_continuation_kv_cache);
  match(res.stderr, /prefill 7 tokens, [\d.]+ tok\/s \| decode 24 tokens, [\d.]+ tok\/s/);
});

Deno.test("cli generate --json is machine-readable", async () => {
  const res = await run("generate", "-m", tinyA, "-t", "2", "-n", "5", "--json", "--temperature", "0.9", "--seed", "4");
  deepStrictEqual(res.code, 0, res.stderr);
  const j = JSON.parse(res.stdout);
  deepStrictEqual(j.prompt, [2]);
  ok(j.tokens.length <= 5 && j.tokens.every((t: number) => t >= 0 && t < 512));
  deepStrictEqual(res.stderr, "");
  // The same seed gives the same tokens.
  deepStrictEqual(JSON.parse((await run("generate", "-m", tinyA, "-t", "2", "-n", "5", "--json", "--temperature", "0.9", "--seed", "4")).stdout).tokens, j.tokens);
});

Deno.test("cli errors are one line and a non-zero exit", async () => {
  const cases: [string[], number, RegExp][] = [
    [["generate", "--tokens", "2"], 2, /needs --model/],
    [["generate", "-m", tinyA, "--tokens", "2,x"], 2, /"x" is not a token id/],
    [["generate", "-m", tinyA, "--tokens", "2,512"], 1, /token id 512/],
    [["generate", "-m", tinyA, "-t", "2", "--frob"], 2, /frob/],
    [["generate", "-m", "/no/such/model", "-t", "2"], 1, /\/no\/such\/model/],
    [["frob"], 2, /unknown command "frob"/],
  ];
  for (const [args, code, pattern] of cases) {
    const res = await run(...args);
    deepStrictEqual(res.code, code, `${args.join(" ")}: ${res.stderr}`);
    match(res.stderr, pattern);
    deepStrictEqual(res.stderr.trim().split("\n").length, 1, `one line: ${res.stderr}`);
  }
});

Deno.test("cli --help answers for the tool and for generate", async () => {
  const top = await run("--help");
  deepStrictEqual(top.code, 0);
  match(top.stdout, /generate/);
  const gen = await run("generate", "--help");
  deepStrictEqual(gen.code, 0);
  for (const flag of ["--model", "--tokens", "--max-tokens", "--temperature", "--top-k", "--top-p", "--min-p", "--repetition-penalty", "--seed", "--stop", "--json"]) {
    ok(gen.stdout.includes(flag), `help mentions ${flag}`);
  }
});
