// Our tokenizer against the reference cases made with six independent implementations
// (tests/fixtures/tokenizer, from shared/tokenizer): exact ids and exact text, no tolerance.

import { deepStrictEqual, ok, rejects, throws } from "node:assert/strict";
import { loadTokenizer } from "../mod.ts";
import { gemmaTokenizerDir } from "./support/gemma_tokenizer.ts";
import { FIXTURES } from "./support/helpers.ts";

const dir = await gemmaTokenizerDir();
// Each test run uses a fresh cache folder, so the first load parses the JSON and the second
// reads the compact form; both must give the same tokenizer.
const cacheDir = await Deno.makeTempDir({ prefix: "gemma3-tok-cache-" });
Deno.env.set("GEMMA3_WASM_CACHE", cacheDir);
const fromJson = await loadTokenizer(dir);
const tok = await loadTokenizer(dir);
const read = async (name: string) => JSON.parse(await Deno.readTextFile(`${FIXTURES}tokenizer/${name}`));

Deno.test("the compact form was cached on the first load", () => {
  const files = [...Deno.readDirSync(`${cacheDir}/tokenizers`)];
  deepStrictEqual(files.length, 1);
  ok(files[0].name.endsWith(".g3tk"));
});

for (const [label, t] of [["from tokenizer.json", fromJson], ["from the cached compact form", tok]] as const) {
  Deno.test(`encode: every reference case, ${label}`, async () => {
    const cases: { name: string; text: string; ids: number[] }[] = await read("encode-cases.json");
    const failures = cases.filter((c) => t.encode(c.text, { addBos: false }).join() !== c.ids.join());
    deepStrictEqual(failures.map((c) => c.name), [], "cases that differ");
    ok(cases.length > 200);
  });
}

Deno.test("encode adds <bos> by default, never <eos>", () => {
  deepStrictEqual(tok.encode("Hello world"), [2, 9259, 1902]);
  deepStrictEqual(tok.encode(""), [2]);
  deepStrictEqual(tok.encode("", { addBos: false }), []);
});

Deno.test("special-token text is parsed by default, spelled out in plain mode", () => {
  deepStrictEqual(tok.encode("<start_of_turn>user", { addBos: false }), [105, 2364]);
  const plain = tok.encode("<start_of_turn>user", { addBos: false, specialTokens: "plain" });
  ok(!plain.includes(105), `plain mode produced the special token: ${plain}`);
  deepStrictEqual(tok.decode(plain), "<start_of_turn>user");
  // Non-special added tokens (newline runs) stay: they are how the model saw whitespace.
  deepStrictEqual(tok.encode("a\n\nb", { addBos: false, specialTokens: "plain" }), tok.encode("a\n\nb", { addBos: false }));
});

Deno.test("lone surrogates become U+FFFD before encoding (the documented choice)", async () => {
  const d = await read("tokenizer-disagreements.json");
  for (const c of d.encode) deepStrictEqual(tok.encode(c.text, { addBos: false }), c.text_toWellFormed_ids, c.name);
});

Deno.test("decode: every reference case", async () => {
  const d = await read("decode-cases.json");
  for (const c of d.cases) {
    deepStrictEqual(tok.decode(c.ids, { skipSpecialTokens: c.skip_special_tokens }), c.text, c.name);
  }
});

Deno.test("decode follows tokenizer.json (and Rust) where implementations disagree", async () => {
  const d = await read("tokenizer-disagreements.json");
  for (const c of d.decode) {
    deepStrictEqual(tok.decode(c.ids, { skipSpecialTokens: c.skip_special_tokens }), c.by_impl.rust, c.name);
  }
});

Deno.test("streaming decode never emits half a character", async () => {
  const d = await read("decode-cases.json");
  for (const s of d.streaming) {
    const dec = tok.streamDecoder({ skipSpecialTokens: s.skip_special_tokens });
    let text = "";
    for (const [i, step] of s.steps.entries()) {
      const emitted = dec.push(step.id);
      deepStrictEqual(emitted, step.emit, `${s.name}: step ${i}`);
      text += emitted;
    }
    text += dec.flush();
    deepStrictEqual(text, s.full_decode, s.name);
  }
});

Deno.test("encode/decode round trip on mixed text", async () => {
  const cases: { text: string }[] = await read("encode-cases.json");
  for (const c of cases) {
    // Special-token text decodes as itself anyway; a literal "▁" in the input decodes as a space.
    if (/<[a-z_]+>|\[multimodal\]|▁/.test(c.text)) continue;
    deepStrictEqual(tok.decode(tok.encode(c.text, { addBos: false })), c.text.toWellFormed());
  }
});

Deno.test("chat template: every reference case, rendered and encoded", async () => {
  const cases = await read("chat-cases.json");
  for (const c of cases) {
    if (c.error) {
      throws(() => tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt }), new RegExp(c.error.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")));
      continue;
    }
    const rendered = tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt });
    deepStrictEqual(rendered, c.rendered, c.name);
    deepStrictEqual(tok.encode(rendered, { addBos: false }), c.ids, c.name);
  }
  ok(tok.chatTemplate.isGemma3, "the package's template is recognised as the official one");
});

Deno.test("a model's own (non-Gemma) template is rendered with Jinja", async () => {
  const folder = await Deno.makeTempDir();
  await Deno.copyFile(`${dir}tokenizer.json`, `${folder}/tokenizer.json`);
  const template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[model]{% endif %}";
  await Deno.writeTextFile(`${folder}/tokenizer_config.json`, JSON.stringify({ chat_template: template }));
  const custom = await loadTokenizer(folder, { cache: false });
  ok(!custom.chatTemplate.isGemma3);
  deepStrictEqual(custom.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true }), "<bos>[user]hi[model]");
});

Deno.test("loading errors name the file", async () => {
  await rejects(() => loadTokenizer("/no/such/tokenizer.json"), /\/no\/such\/tokenizer\.json/);
  const folder = await Deno.makeTempDir();
  await rejects(() => loadTokenizer(folder), /tokenizer\.json: no such file/);
  await Deno.writeTextFile(`${folder}/tokenizer.json`, "{ broken");
  await rejects(() => loadTokenizer(folder), /tokenizer\.json: not valid JSON/);
  await Deno.writeTextFile(`${folder}/tokenizer.json`, JSON.stringify({ model: { type: "Unigram" } }));
  await rejects(() => loadTokenizer(folder), /model type "Unigram".*Gemma-style/);
});

Deno.test("a corrupt cache entry is rebuilt, not used", async () => {
  const [entry] = [...Deno.readDirSync(`${cacheDir}/tokenizers`)];
  const path = `${cacheDir}/tokenizers/${entry.name}`;
  const bytes = await Deno.readFile(path);
  await Deno.writeFile(path, bytes.subarray(0, 1000));
  const again = await loadTokenizer(dir);
  deepStrictEqual(again.encode("Hello world"), [2, 9259, 1902]);
  ok((await Deno.stat(path)).size === bytes.length, "the cache entry was rewritten");
});
