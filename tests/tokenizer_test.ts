// Our tokenizer against the reference cases made with six independent implementations
// (tests/fixtures/tokenizer, from shared/tokenizer): exact ids and exact text, no tolerance.

import { deepStrictEqual, ok, rejects, throws } from "node:assert/strict";
import { ChatTemplate, loadTokenizer } from "../mod.ts";
import { gemmaTokenizerDir } from "./support/gemma_tokenizer.ts";
import { FIXTURES } from "./support/helpers.ts";
import { setEnvForModule, tempDir, tempFile } from "./support/temp.ts";

const dir = await gemmaTokenizerDir();
// Each test run uses a fresh cache folder, so the first load parses the JSON and the second
// reads the compact form; both must give the same tokenizer.
const cacheDir = await tempDir("gemma3-tok-cache-");
setEnvForModule("GEMMA3_WASM_CACHE", cacheDir);
const fromJson = await loadTokenizer(dir);
const tok = await loadTokenizer(dir);
const read = async (name: string) =>
  JSON.parse(await Deno.readTextFile(`${FIXTURES}tokenizer/${name}`));

Deno.test("the compact form was cached on the first load", () => {
  const files = [...Deno.readDirSync(`${cacheDir}/tokenizers`)];
  deepStrictEqual(files.length, 1);
  ok(files[0].name.endsWith(".g3tk"));
});

for (
  const [label, t] of [["from tokenizer.json", fromJson], [
    "from the cached compact form",
    tok,
  ]] as const
) {
  Deno.test(`encode: every reference case, ${label}`, async () => {
    const cases: { name: string; text: string; ids: number[] }[] = await read("encode-cases.json");
    const failures = cases.filter((c) =>
      t.encode(c.text, { addBos: false }).join() !== c.ids.join()
    );
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
  deepStrictEqual(
    tok.encode("a\n\nb", { addBos: false, specialTokens: "plain" }),
    tok.encode("a\n\nb", { addBos: false }),
  );
});

Deno.test("lone surrogates become U+FFFD before encoding (the documented choice)", async () => {
  const d = await read("tokenizer-disagreements.json");
  for (const c of d.encode) {
    deepStrictEqual(tok.encode(c.text, { addBos: false }), c.text_toWellFormed_ids, c.name);
  }
});

Deno.test("decode: every reference case", async () => {
  const d = await read("decode-cases.json");
  for (const c of d.cases) {
    deepStrictEqual(
      tok.decode(c.ids, { skipSpecialTokens: c.skip_special_tokens }),
      c.text,
      c.name,
    );
  }
});

Deno.test("decode follows tokenizer.json (and Rust) where implementations disagree", async () => {
  const d = await read("tokenizer-disagreements.json");
  for (const c of d.decode) {
    deepStrictEqual(
      tok.decode(c.ids, { skipSpecialTokens: c.skip_special_tokens }),
      c.by_impl.rust,
      c.name,
    );
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
      throws(
        () => tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt }),
        new RegExp(c.error.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")),
      );
      continue;
    }
    const rendered = tok.applyChatTemplate(c.messages, {
      addGenerationPrompt: c.add_generation_prompt,
    });
    deepStrictEqual(rendered, c.rendered, c.name);
    deepStrictEqual(tok.encode(rendered, { addBos: false }), c.ids, c.name);
  }
  ok(tok.chatTemplate.isGemma3, "the package's template is recognised as the official one");
});

Deno.test("a model's own (non-Gemma) template is rendered with Jinja", async () => {
  const folder = await tempDir();
  await Deno.copyFile(`${dir}tokenizer.json`, `${folder}/tokenizer.json`);
  const template =
    "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[model]{% endif %}";
  await Deno.writeTextFile(
    `${folder}/tokenizer_config.json`,
    JSON.stringify({ chat_template: template }),
  );
  const custom = await loadTokenizer(folder, { cache: false });
  ok(!custom.chatTemplate.isGemma3);
  deepStrictEqual(
    custom.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true }),
    "<bos>[user]hi[model]",
  );
});

Deno.test("loading errors name the file", async () => {
  await rejects(() => loadTokenizer("/no/such/tokenizer.json"), /\/no\/such\/tokenizer\.json/);
  const folder = await tempDir();
  await rejects(() => loadTokenizer(folder), /tokenizer\.json: no such file/);
  await Deno.writeTextFile(`${folder}/tokenizer.json`, "{ broken");
  await rejects(() => loadTokenizer(folder), /tokenizer\.json: not valid JSON/);
  await Deno.writeTextFile(
    `${folder}/tokenizer.json`,
    JSON.stringify({ model: { type: "Unigram" } }),
  );
  await rejects(() => loadTokenizer(folder), /model\.type is "Unigram".*Gemma-style/);
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

Deno.test("a GGUF file's tokenizer (SentencePiece pieces, scores, types) gives tokenizer.json's ids", async () => {
  // A metadata-only GGUF holding the tokenizer as llama.cpp's converter writes it: pieces, a score
  // per piece (merge priority) and a type per piece. Merges are not stored: they are rebuilt from
  // the scores, and must come out as tokenizer.json's.
  const { encodeGgufHeader, GGUF_VALUE: V } = await import("../engine/formats/gguf.ts");
  const { fromTokenizerJson, toGgufTokenizer } = await import("../engine/tokenizer/format.ts");
  const json = fromTokenizerJson(JSON.parse(await Deno.readTextFile(`${dir}tokenizer.json`)));
  const { tokens, scores, types } = toGgufTokenizer(json);
  const { header } = encodeGgufHeader([
    { key: "general.architecture", type: V.string, value: "gemma3" },
    { key: "tokenizer.ggml.model", type: V.string, value: "llama" },
    { key: "tokenizer.ggml.tokens", type: V.array, itemType: V.string, value: tokens },
    { key: "tokenizer.ggml.scores", type: V.array, itemType: V.f32, value: scores },
    { key: "tokenizer.ggml.token_type", type: V.array, itemType: V.i32, value: types },
    { key: "tokenizer.ggml.unknown_token_id", type: V.u32, value: 3 },
  ], []);
  const path = await tempFile(".gguf");
  await Deno.writeFile(path, header);
  const fromGguf = await loadTokenizer(path);
  // <image_soft_token> (id 262144) lies past the 262,144 pieces a GGUF vocabulary holds.
  const cases: { name: string; text: string; ids: number[] }[] = (await read("encode-cases.json"))
    .filter((c: { ids: number[] }) => c.ids.every((id) => id < tokens.length));
  const failures = cases.filter((c) =>
    fromGguf.encode(c.text, { addBos: false }).join() !== c.ids.join()
  );
  deepStrictEqual(failures.map((c) => c.name), [], "cases that differ");
  ok(cases.length > 200);
  // Pieces that begin with U+FEFF survive the trip (a UTF-8 decoder drops a leading BOM unless
  // told not to).
  deepStrictEqual(fromGguf.decode([88979]), tok.decode([88979]));
  deepStrictEqual([...tok.decode([88979])].length >= 1, true);
  const decodeCases: { ids: number[]; skip_special_tokens: boolean; text: string }[] =
    (await read("decode-cases.json")).cases;
  for (const c of decodeCases.filter((c) => c.ids.every((id) => id < tokens.length))) {
    deepStrictEqual(fromGguf.decode(c.ids, { skipSpecialTokens: c.skip_special_tokens }), c.text);
  }
  await Deno.remove(path);
});

Deno.test("the tokenizer cache keeps the most recently used entries and deletes the rest", async () => {
  const { markUsed, pruneCacheFolder } = await import("../engine/io.ts");
  const { TOKENIZER_CACHE_ENTRIES: keep } = await import("../engine/tokenizer/load.ts");
  const folder = await tempDir();
  // keep + 3 entries, entry i last used i minutes ago; then entry keep + 1 is used again.
  const names = Array.from({ length: keep + 3 }, (_, i) => `entry${i}.g3tk`);
  for (const [i, n] of names.entries()) {
    await Deno.writeFile(`${folder}/${n}`, new Uint8Array([i]));
    const t = new Date(Date.now() - (i + 1) * 60_000);
    await Deno.utime(`${folder}/${n}`, t, t);
  }
  await Deno.writeTextFile(`${folder}/other.txt`, "not an entry");
  await markUsed(`${folder}/${names[keep + 1]}`);
  await pruneCacheFolder(folder, ".g3tk", keep);
  const left = [...Deno.readDirSync(folder)].map((e) => e.name).sort();
  const want = [...names.slice(0, keep - 1), names[keep + 1], "other.txt"].sort();
  deepStrictEqual(left, want);
});

Deno.test("encode and decode refuse bad arguments, naming the argument", () => {
  const cases: [() => unknown, RegExp][] = [
    [() => tok.encode(null as unknown as string), /encode: text must be a string, got null/],
    [
      () => tok.encode("hi", null as unknown as object),
      /encode: options must be an object, got null/,
    ],
    [
      () => tok.encode("hi", { addBos: "yes" as unknown as boolean }),
      /addBos must be true or false/,
    ],
    [
      () => tok.encode("hi", { specialTokens: "strip" as "plain" }),
      /specialTokens must be "parse" or "plain", got the string "strip"/,
    ],
    [() => tok.decode(null as unknown as number[]), /decode: ids must be an array of token ids/],
    [() => tok.decode([5], null as unknown as object), /decode: options must be an object/],
    [() => tok.decode(["5"] as unknown as number[]), /ids\[0\] is the string "5", not a token id/],
    [() => tok.decode([1, 5n] as unknown as number[]), /ids\[1\] is the bigint 5n/],
    [() => tok.decode([[5]] as unknown as number[]), /ids\[0\] is an array/],
    [() => tok.decode([1.5]), /ids\[0\] is number 1.5, not a token id/],
    [() => tok.decode([-1]), /token id -1 is not in the vocabulary/],
  ];
  for (const [call, pattern] of cases) {
    throws(call, (e: Error) => {
      ok(e instanceof TypeError || e instanceof RangeError, `${e.constructor.name}: ${e.message}`);
      ok(pattern.test(e.message), `${e.message} does not match ${pattern}`);
      return true;
    });
  }
  // What is valid still works.
  deepStrictEqual(tok.decode(Int32Array.of(9259, 1902)), tok.decode([9259, 1902]));
  deepStrictEqual(tok.encode("Hello", { addBos: false }), tok.encode("Hello").slice(1));
});

/** The smallest Gemma-style tokenizer.json: BPE with byte fallback, " " → "▁", and <bos>. */
const MINIMAL_TOKENIZER_JSON = {
  normalizer: { type: "Replace", pattern: { String: " " }, content: "▁" },
  model: { type: "BPE", byte_fallback: true, vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] },
  added_tokens: [{ id: 3, content: "<bos>", special: true }],
};

Deno.test("added tokens: ids past the vocabulary and the added tokens after it, or used twice, are errors (no table sized by them)", async () => {
  const folder = await tempDir();
  const base = MINIMAL_TOKENIZER_JSON;
  const write = (json: unknown) =>
    Deno.writeTextFile(`${folder}/tokenizer.json`, JSON.stringify(json));
  // Valid: one added token right after the vocabulary (as Gemma's <image_soft_token>).
  await write(base);
  deepStrictEqual((await loadTokenizer(folder, { cache: false })).encode("ab"), [3, 2]);
  for (const id of [2 ** 31 - 1, 2 ** 32, 1e12, 2 ** 53, -1]) {
    await write({ ...base, added_tokens: [{ id, content: "<x>", special: true }] });
    await rejects(
      loadTokenizer(folder, { cache: false }),
      (e: Error) =>
        e.message.startsWith(`${folder}/tokenizer.json: `) &&
        /added_tokens\[0\] \("<x>"\) has id .* outside the vocabulary/.test(e.message),
      String(id),
    );
  }
  await write({
    ...base,
    added_tokens: [...base.added_tokens, { id: 3, content: "<eos>", special: true }],
  });
  await rejects(
    loadTokenizer(folder, { cache: false }),
    (e: Error) =>
      e.message ===
        `${folder}/tokenizer.json: added_tokens[1] ("<eos>") has id 3, as added_tokens[0] has`,
  );
  // No <bos>: encode says so rather than putting -1 first.
  await write({ ...base, added_tokens: [] });
  const noBos = await loadTokenizer(folder, { cache: false });
  throws(() => noBos.encode("ab"), /no <bos> token; pass \{ addBos: false \}/);
  deepStrictEqual(noBos.encode("ab", { addBos: false }), [2]);
});

Deno.test("malformed tokenizer.json merges and added_tokens are named, not TypeErrors", async () => {
  const folder = await tempDir();
  const base = MINIMAL_TOKENIZER_JSON;
  const model = base.model;
  const cases: [unknown, RegExp][] = [
    [
      { ...base, model: { ...model, merges: [null] } },
      /model\.merges\[0\] is null; expected "left right"/,
    ],
    [{ ...base, model: { ...model, merges: [7] } }, /model\.merges\[0\] is 7; expected/],
    [
      { ...base, model: { ...model, merges: ["a b ab"] } },
      /model\.merges\[0\] is "a b ab"; expected/,
    ],
    [
      { ...base, model: { ...model, merges: [["a", "b", "c"]] } },
      /model\.merges\[0\] is \["a","b","c"\]/,
    ],
    [
      { ...base, model: { ...model, merges: ["toString b"] } },
      /model\.merges\[0\] .* missing from the vocabulary/,
    ],
    [{ ...base, added_tokens: "<bos>" }, /added_tokens is "<bos>"; expected a list/],
    [{ ...base, added_tokens: [null] }, /added_tokens\[0\] is null; expected \{ id, content/],
  ];
  for (const [json, pattern] of cases) {
    await Deno.writeTextFile(`${folder}/tokenizer.json`, JSON.stringify(json));
    await rejects(loadTokenizer(folder, { cache: false }), (e: Error) => {
      ok(!(e instanceof TypeError), `a TypeError: ${e.message}`);
      ok(/tokenizer\.json/.test(e.message) && pattern.test(e.message), e.message);
      return true;
    });
  }
});

Deno.test("chat messages with bad content are named", () => {
  const cases: [unknown, RegExp][] = [
    [
      [{ role: "user", content: null }],
      /message 0: content must be a string or a list of parts, got null/,
    ],
    [[{ role: "user", content: [null] }], /message 0: content\[0\] must be a part/],
    [
      [{ role: "user", content: [{ type: "text", text: 5 }] }],
      /content\[0\] is a text part whose text is number 5/,
    ],
    [
      [{ role: "user", content: "hi" }, { role: "model", content: 3 }],
      /message 1: content must be/,
    ],
  ];
  for (const [messages, pattern] of cases) {
    throws(() => tok.applyChatTemplate(messages as never), pattern);
    throws(() => tok.encodeChat(messages as never), pattern);
  }
  // Valid parts still render as before.
  deepStrictEqual(
    tok.applyChatTemplate([{ role: "user", content: [{ type: "text", text: "hi" }] }]),
    tok.applyChatTemplate([{ role: "user", content: "hi" }]),
  );
});

Deno.test("a model's template: its errors say they are the model's template and where it is; a null tokenizer_config.json or null list entries are passed over", async () => {
  const folder = await tempDir();
  await Deno.copyFile(`${dir}tokenizer.json`, `${folder}/tokenizer.json`);
  const write = (v: unknown) =>
    Deno.writeTextFile(`${folder}/tokenizer_config.json`, JSON.stringify(v));
  await write({ chat_template: "{{ raise_exception('no system role here') }}" });
  const raising = await loadTokenizer(folder, { cache: false });
  throws(
    () => raising.applyChatTemplate([{ role: "user", content: "hi" }]),
    /the model's chat template \(.*tokenizer_config\.json\) failed: .*no system role here/,
  );
  await write({ chat_template: "{% for %}" }); // does not compile: said when rendering
  const broken = await loadTokenizer(folder, { cache: false });
  throws(
    () => broken.applyChatTemplate([{ role: "user", content: "hi" }]),
    /the model's chat template \(.*tokenizer_config\.json\) failed: its source is not valid Jinja/,
  );
  // Cut short inside an expression: the Jinja parser's own TypeError is not what the caller sees.
  await write({ chat_template: "{%- if (message['role']" });
  const cut = await loadTokenizer(folder, { cache: false });
  throws(
    () => cut.applyChatTemplate([{ role: "user", content: "hi" }]),
    (e: Error) =>
      /the model's chat template \(.*tokenizer_config\.json\) failed: its source is not valid Jinja \(the parser ran past its end/
        .test(e.message),
  );
  // null, and a list holding nulls: the Gemma template (none) or the valid entry.
  await write(null);
  ok((await loadTokenizer(folder, { cache: false })).chatTemplate.isGemma3);
  await write({ chat_template: [null, { name: "default", template: "{{ bos_token }}X" }] });
  deepStrictEqual(
    (await loadTokenizer(folder, { cache: false })).applyChatTemplate([{
      role: "user",
      content: "a",
    }]),
    "<bos>X",
  );
});

Deno.test("a model's template runs within a budget: a huge range, a zero step and nested loops end in an error naming the template, never an abort or a hang", async () => {
  const folder = await tempDir();
  await Deno.copyFile(`${dir}tokenizer.json`, `${folder}/tokenizer.json`);
  const withTemplate = async (template: string) => {
    await Deno.writeTextFile(
      `${folder}/tokenizer_config.json`,
      JSON.stringify({ chat_template: template }),
    );
    return await loadTokenizer(folder, { cache: false });
  };
  const chat = [{ role: "user", content: "hi" }];
  const cases: [string, RegExp][] = [
    // 1.7 GB and V8's fatal out-of-memory abort without the cap.
    [
      "{% for i in range(100000000) %}x{% endfor %}",
      /range\(\) made more than 1000000 items in one render \(100000000 in this call\)/,
    ],
    ["{% for i in range(0, 10, 0) %}x{% endfor %}", /range\(\) step must not be zero/],
    // 10^12 iterations: ends when the ranges made pass the budget.
    [
      "{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}",
      /range\(\) made more than 1000000 items in one render/,
    ],
    // Loops over the messages, each step evaluated: ends at the step budget (or the clock).
    [
      "{% for i in range(1000000) %}{% for m in messages %}{{ m.content }}{{ m.role }}{{ i }}{% endfor %}{% endfor %}",
      /ran past (5000000 steps|2000 ms)/,
    ],
  ];
  for (const [template, pattern] of cases) {
    const t = await withTemplate(template);
    throws(() => t.applyChatTemplate(chat), (e: Error) => {
      ok(
        /the model's chat template \(.*tokenizer_config\.json\) failed/.test(e.message),
        e.message,
      );
      ok(pattern.test(e.message), e.message);
      return true;
    });
  }
  // Jinja holds each message and part as values of ~10 KB while rendering: 100,000 parts took
  // 1 GB and V8's fatal abort. Past 10,000 in all it is an error; Gemma's built-in renderer
  // (the same chat through tokenizer.json's own folder without a template) still takes them.
  const parts = Array.from({ length: 100_000 }, (_, i) => ({ type: "text", text: `p${i}` }));
  const many = await withTemplate("{% for m in messages %}{{ m.content }}{% endfor %}");
  throws(
    () => many.applyChatTemplate([{ role: "user", content: parts }]),
    /the model's chat template \(.*tokenizer_config\.json\) renders at most 10000 messages and content parts in all; this chat has 100001/,
  );
  throws(
    () =>
      many.applyChatTemplate(
        Array.from(
          { length: 10_001 },
          (_, i) => ({ role: i % 2 ? "assistant" : "user", content: "m" }),
        ),
      ),
    /renders at most 10000 messages and content parts in all; this chat has 10001/,
  );
  ok(
    many.applyChatTemplate(Array.from({ length: 5_000 }, () => ({ role: "user", content: "m" })))
      .length === 5_000,
  );
  ok(
    ChatTemplate.gemma3().render([{ role: "user", content: parts }]).includes("p99999"),
  );
  // Within the budget, as before: Jinja's globals (range, namespace-free loops, raise_exception).
  const t = await withTemplate(
    "{{ bos_token }}{% for m in messages %}{% for i in range(3) %}{{ i }}{% endfor %}{{ m.content }}{% endfor %}{% if false %}{{ raise_exception('no') }}{% endif %}",
  );
  deepStrictEqual(t.applyChatTemplate(chat), "<bos>012hi");
});
