// The CLI as a user runs it: a child process, its stdout, stderr and exit code.

import { deepStrictEqual, match, ok } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { gemmaTokenizerDir } from "./support/gemma_tokenizer.ts";
import { FIXTURES } from "./support/helpers.ts";
import { randomWeights, smallConfig, writeCheckpoint } from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";
import { validator } from "./support/json_schemas.ts";

const cli = new URL("../cli.ts", import.meta.url).pathname;
const tinyA = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${tinyA}/golden.json`));

// A tiny random model over the real Gemma 3 vocabulary, with the real tokenizer files.
const config = smallConfig({
  vocab_size: 262144,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  layer_types: ["sliding_attention", "full_attention"],
  sliding_window: 4,
});
const withTokenizer = await writeCheckpoint(config, randomWeights(config, 21));
for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
  await Deno.copyFile(`${await gemmaTokenizerDir()}${f}`, `${withTokenizer}/${f}`);
}

async function runWithInput(input: string | null, ...args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: input === null ? "null" : "piped",
  }).spawn();
  if (input !== null) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(input));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const run = (...args: string[]) => runWithInput(null, ...args);

/** `cli.ts generate` of `n` greedy tokens after the token ids `prompt` (never stopping at an
 * end-of-turn token), with `extra` flags. */
const generate = (model: string, prompt: number[], n: number, ...extra: string[]) =>
  run("generate", "-m", model, "-t", prompt.join(","), "-n", String(n), "--ignore-eos", ...extra);

/** The greedy answer to a chat prompt, computed through the library (not the CLI). */
async function greedyAnswer(prompt: string, n: number): Promise<string> {
  const model = await loadModel(withTokenizer);
  const tok = model.tokenizer;
  const ids = tok.encode(
    tok.applyChatTemplate([{ role: "user", content: prompt }], { addGenerationPrompt: true }),
    { addBos: false },
  );
  const out: number[] = [];
  for await (
    const id of model.createSession().generate(ids, { maxTokens: n, stopTokens: [1, 106] })
  ) out.push(id);
  await model.dispose();
  return tok.decode(out, { skipSpecialTokens: true });
}

Deno.test("cli run streams the chat answer; stats on stderr; the prompt can come from stdin", async () => {
  const want = await greedyAnswer("Why is the sky blue?", 10);
  const res = await run(
    "run",
    "Why is the sky blue?",
    "-m",
    withTokenizer,
    "-n",
    "10",
    "--temperature",
    "0",
  );
  deepStrictEqual(res.code, 0, res.stderr);
  deepStrictEqual(res.stdout, want + "\n");
  match(res.stderr, /prefill \d+ tokens, [\d.]+ tok\/s \| decode \d+ tokens, [\d.]+ tok\/s/);
  const piped = await runWithInput(
    "Why is the sky blue?",
    "run",
    "-m",
    withTokenizer,
    "-n",
    "10",
    "--temperature",
    "0",
    "--json",
  );
  deepStrictEqual(piped.code, 0, piped.stderr);
  deepStrictEqual(JSON.parse(piped.stdout).text, want);
});

Deno.test("cli chat answers each stdin line, keeps the conversation, and /reset starts over", async () => {
  const res = await runWithInput(
    "Why is the sky blue?\n/reset\nWhy is the sky blue?\n",
    "chat",
    "-m",
    withTokenizer,
    "-n",
    "6",
    "--temperature",
    "0",
    "--json",
  );
  deepStrictEqual(res.code, 0, res.stderr);
  const lines = res.stdout.trim().split("\n").map((l) => JSON.parse(l));
  deepStrictEqual(lines.length, 2);
  const want = await greedyAnswer("Why is the sky blue?", 6);
  deepStrictEqual(lines[0].answer, want);
  deepStrictEqual(lines[1].answer, want, "after /reset the same question gets the same answer");
});

Deno.test("cli tokenize matches the reference ids, decodes, and explains pieces", async () => {
  const enc = await run("tokenize", "Hello world", "-m", withTokenizer);
  deepStrictEqual(enc.stdout.trim(), "2 9259 1902", enc.stderr);
  const dec = await run(
    "tokenize",
    "--decode",
    "2,9259,1902",
    "--skip-special",
    "-m",
    `${withTokenizer}/tokenizer.json`,
  );
  deepStrictEqual(dec.stdout, "Hello world\n", dec.stderr);
  const plain = JSON.parse(
    (await run("tokenize", "<start_of_turn>", "--plain", "--no-bos", "--json", "-m", withTokenizer))
      .stdout,
  );
  ok(!plain.ids.includes(105));
  deepStrictEqual(plain.pieces.join(""), "<start_of_turn>");
});

Deno.test("cli run on a model without a tokenizer is one clear error", async () => {
  const res = await run("run", "hi", "-m", tinyA);
  deepStrictEqual(res.code, 1);
  match(res.stderr, /no tokenizer\.json/);
});

Deno.test("cli generate prints the golden greedy continuation and a stats line", async () => {
  const r = golden.results[1];
  const res = await run(
    "generate",
    "--model",
    tinyA,
    "--tokens",
    r.prompt.join(","),
    "-n",
    "24",
    "--ignore-eos",
  );
  deepStrictEqual(res.code, 0, res.stderr);
  deepStrictEqual(res.stdout.trim().split(" ").map(Number), r.greedy_continuation_kv_cache);
  match(res.stderr, /prefill 7 tokens, [\d.]+ tok\/s \| decode 24 tokens, [\d.]+ tok\/s/);
});

Deno.test("cli --threads: the same tokens on 1 and 2 threads, and a bad count is a usage error", async () => {
  const r = golden.results[2];
  const one = await generate(tinyA, r.prompt, 24, "--threads", "1", "--json");
  const two = await generate(tinyA, r.prompt, 24, "--threads", "2", "--json");
  deepStrictEqual(JSON.parse(one.stdout).threads, 1);
  deepStrictEqual(JSON.parse(two.stdout).threads, 2);
  deepStrictEqual(JSON.parse(one.stdout).tokens, r.greedy_continuation_kv_cache);
  deepStrictEqual(JSON.parse(two.stdout).tokens, r.greedy_continuation_kv_cache);
  const bad = await run("generate", "-m", tinyA, "-t", "2", "--threads", "two");
  deepStrictEqual(bad.code, 2);
  match(bad.stderr, /--threads: "two" is not an integer/);
});

Deno.test("cli --lookup: prompt-lookup decoding prints the same golden tokens; bad values are usage errors", async () => {
  const r = golden.results[1];
  const res = await generate(tinyA, r.prompt, 24, "--lookup", "1,4", "--json");
  deepStrictEqual(res.code, 0, res.stderr);
  deepStrictEqual(JSON.parse(res.stdout).tokens, r.greedy_continuation_kv_cache);
  for (
    const [value, message] of [["3", /--lookup needs n,k/], [
      "3,40",
      /k must be an integer from 1 to 16/,
    ]]
  ) {
    const bad = await run("generate", "-m", tinyA, "-t", "2", "--lookup", value as string);
    deepStrictEqual(bad.code, 2, value as string);
    match(bad.stderr, message as RegExp);
  }
});

Deno.test("cli generate runs a .gguf file, and --weights is checked", async () => {
  const r = golden.results[1];
  const res = await generate(`${tinyA}/model.gguf`, r.prompt, 24, "--json");
  deepStrictEqual(res.code, 0, res.stderr);
  deepStrictEqual(JSON.parse(res.stdout).tokens, r.greedy_continuation_kv_cache);
  const bad = await run("generate", "-m", tinyA, "-t", "2", "--weights", "q4");
  deepStrictEqual(bad.code, 2);
  match(bad.stderr, /--weights: "q4" is not a format/);
});

Deno.test("cli quantize writes a GGUF that generate runs; bad formats are usage errors", async () => {
  const dir = await tempDir();
  const out = `${dir}/tiny-q8.gguf`;
  const q = await run(
    "quantize",
    `${tinyA}/model.gguf`,
    out,
    "--type",
    "q8_0",
    "--head-type",
    "q8_0",
  );
  deepStrictEqual(q.code, 0, q.stderr);
  ok(/wrote .*tiny-q8\.gguf: 80 tensors/.test(q.stderr), q.stderr);
  const gen = await generate(out, golden.prompts[1], 8, "-q");
  deepStrictEqual(gen.code, 0, gen.stderr);
  deepStrictEqual(gen.stdout.trim().split(" ").length, 8);
  const bad = await run("quantize", `${tinyA}/model.gguf`, out, "--type", "q9");
  deepStrictEqual(bad.code, 2);
  ok(/--type: "q9" is not a format/.test(bad.stderr), bad.stderr);
  const noType = await run("quantize", `${tinyA}/model.gguf`, out);
  deepStrictEqual(noType.code, 2);
  ok((await run("quantize", "--help")).stdout.includes("--head-type"));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cli --backend webgpu runs the golden on the GPU; --verbose says which backend and why", async () => {
  const r = golden.results[1];
  const gpu = await generate(tinyA, r.prompt, 8, "--backend", "webgpu", "-v", "-q");
  deepStrictEqual(gpu.code, 0, gpu.stderr);
  deepStrictEqual(gpu.stdout.trim(), r.greedy_continuation_kv_cache.slice(0, 8).join(" "));
  ok(/backend: webgpu: asked for/.test(gpu.stderr), gpu.stderr);
  const auto = await run("generate", "-m", tinyA, "-t", "2", "-n", "1", "-v", "-q");
  ok(/backend: (wasm|webgpu)/.test(auto.stderr), auto.stderr);
  const bad = await run("generate", "-m", tinyA, "-t", "2", "--backend", "tpu");
  deepStrictEqual(bad.code, 2);
});

Deno.test("cli generate --json is machine-readable", async () => {
  const res = await run(
    "generate",
    "-m",
    tinyA,
    "-t",
    "2",
    "-n",
    "5",
    "--json",
    "--temperature",
    "0.9",
    "--seed",
    "4",
  );
  deepStrictEqual(res.code, 0, res.stderr);
  const j = JSON.parse(res.stdout);
  deepStrictEqual(j.prompt, [2]);
  ok(j.tokens.length <= 5 && j.tokens.every((t: number) => t >= 0 && t < 512));
  deepStrictEqual(res.stderr, "");
  // The same seed gives the same tokens.
  deepStrictEqual(
    JSON.parse(
      (await run(
        "generate",
        "-m",
        tinyA,
        "-t",
        "2",
        "-n",
        "5",
        "--json",
        "--temperature",
        "0.9",
        "--seed",
        "4",
      )).stdout,
    ).tokens,
    j.tokens,
  );
});

Deno.test("cli run --json-schema and --grammar: the answer parses; bad schemas are usage errors", async () => {
  const dir = await tempDir();
  const schema = {
    type: "object",
    properties: { ok: { type: "boolean" }, tag: { enum: ["a", "b"] } },
    required: ["ok", "tag"],
  };
  await Deno.writeTextFile(`${dir}/schema.json`, JSON.stringify(schema));
  await Deno.writeTextFile(`${dir}/yes-no.gbnf`, 'root ::= ("yes" | "no") "!"');
  const valid = validator(schema);
  for (const source of [`${dir}/schema.json`, JSON.stringify(schema)]) {
    const r = await run(
      "run",
      "hi",
      "-m",
      withTokenizer,
      "--json-schema",
      source,
      "--json",
      "-n",
      "200",
      "--temperature",
      "1",
      "--seed",
      "2",
    );
    deepStrictEqual(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    deepStrictEqual(out.finishReason, "end_of_turn");
    ok(valid(JSON.parse(out.text)), out.text);
  }
  const g = await run(
    "run",
    "hi",
    "-m",
    withTokenizer,
    "--grammar",
    `${dir}/yes-no.gbnf`,
    "--json",
  );
  deepStrictEqual(g.code, 0, g.stderr);
  match(JSON.parse(g.stdout).text, /^(yes|no)!$/);
  for (
    const [args, why] of [
      [
        ["--json-schema", '{"type":"integer","minimum":1}'],
        /--json-schema: .*"minimum" is not supported/,
      ],
      [["--json-schema", "{not json"], /--json-schema: not JSON/],
      [["--json-schema", `${dir}/missing.json`], /--json-schema: cannot read/],
      [["--grammar", `${dir}/schema.json`], /--grammar: grammar line 1/],
      [["--grammar", `${dir}/yes-no.gbnf`, "--json-schema", "{}"], /not both/],
    ] as const
  ) {
    const r = await run("run", "hi", "-m", withTokenizer, ...args);
    deepStrictEqual(r.code, 2, r.stderr);
    match(r.stderr, why);
  }
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

Deno.test("cli --help answers for the tool and every command", async () => {
  const top = await run("--help");
  deepStrictEqual(top.code, 0);
  for (const c of ["run", "chat", "tokenize", "generate", "HF_TOKEN", "HF_HUB_OFFLINE"]) {
    match(top.stdout, new RegExp(c));
  }
  for (const c of ["run", "chat", "tokenize"]) {
    const h = await run(c, "--help");
    deepStrictEqual(h.code, 0);
    match(h.stdout, new RegExp(`Usage: cli.ts ${c}`));
  }
  const gen = await run("generate", "--help");
  deepStrictEqual(gen.code, 0);
  for (
    const flag of [
      "--model",
      "--tokens",
      "--max-tokens",
      "--temperature",
      "--top-k",
      "--top-p",
      "--min-p",
      "--repetition-penalty",
      "--seed",
      "--stop",
      "--json",
    ]
  ) {
    ok(gen.stdout.includes(flag), `help mentions ${flag}`);
  }
});

Deno.test("cli chat: Ctrl-C stops the current answer, not the program", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      cli,
      "chat",
      "-m",
      withTokenizer,
      "-n",
      "100000",
      "--temperature",
      "0.9",
      "--seed",
      "1",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode("Tell me a long story.\n"));
  const reader = child.stdout.getReader();
  let out = "";
  while (out.length < 20) out += new TextDecoder().decode((await reader.read()).value);
  child.kill("SIGINT");
  while (!out.includes("[stopped]")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += new TextDecoder().decode(value);
  }
  await w.write(new TextEncoder().encode("/exit\n"));
  await w.close();
  reader.releaseLock();
  await child.stdout.cancel();
  const status = await child.status;
  await child.stderr.cancel();
  ok(out.includes("[stopped]"), out.slice(-200));
  deepStrictEqual(status.code, 0);
});
