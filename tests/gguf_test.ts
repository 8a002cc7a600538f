// GGUF loading: tiny-a's llama.cpp-layout GGUF (F32 tensors, llama.cpp names, norms stored as
// 1 + w, metadata instead of config.json) must meet the same golden as the safetensors checkpoint,
// and broken files must be refused with the file and the problem named.

import { deepStrictEqual, ok, rejects, throws } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { FIXTURES, maxAbsDiff } from "./support/helpers.ts";
import { tempDir, tempFile } from "./support/temp.ts";
import { shortJson } from "../engine/formats/quote.ts";

const gguf = `${FIXTURES}tiny-a/model.gguf`;
const golden = JSON.parse(await Deno.readTextFile(`${FIXTURES}tiny-a/golden.json`));
const llamacpp = JSON.parse(await Deno.readTextFile(`${FIXTURES}tiny-a/golden-llamacpp.json`));

Deno.test("tiny-a GGUF: config from metadata, logits within 1e-4 of the golden, the same greedy tokens", async () => {
  const model = await loadModel(gguf);
  const c = model.config;
  deepStrictEqual([c.vocabSize, c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim], [
    512,
    64,
    6,
    4,
    1,
    32,
  ]);
  deepStrictEqual(c.layerTypes.map((t) => t[0]).join(""), "sssssf");
  deepStrictEqual([c.slidingWindow, c.ropeTheta, c.ropeLocalBaseFreq, c.queryPreAttnScalar], [
    8,
    1e6,
    1e4,
    32,
  ]);
  for (const [i, r] of golden.results.entries()) {
    const s = model.createSession({ contextLength: 128 });
    const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
    ok(d <= 1e-4, `prompt ${i}: logits differ by ${d}`);
    const out: number[] = [];
    for await (const id of s.generate([], { maxTokens: 24, stopTokens: [] })) out.push(id);
    deepStrictEqual(out, r.greedy_continuation_kv_cache);
    s.dispose();
  }
  ok(llamacpp !== undefined);
  // The tokenizer comes from the file's metadata (its vocabulary arrays are decoded only when the
  // tokenizer cache has no entry): the same ids as loading it on its own, without the cache.
  const { loadTokenizer } = await import("../mod.ts");
  const alone = await loadTokenizer(gguf, { cache: false });
  const text = alone.decode([17, 42, 99, 250, 7]);
  deepStrictEqual(model.tokenizer.encode(text), alone.encode(text));
  await model.dispose();
});

/** A copy of the fixture with `patch` applied to its bytes. */
async function patched(
  patch: (b: Uint8Array, find: (s: string) => number) => Uint8Array,
): Promise<string> {
  const bytes = await Deno.readFile(gguf);
  const find = (s: string) => {
    const needle = new TextEncoder().encode(s);
    outer: for (let i = 0; i < bytes.length - needle.length; i++) {
      for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
      return i;
    }
    throw new Error(`${s} not found`);
  };
  const path = `${await tempDir()}/model.gguf`;
  await Deno.writeFile(path, patch(bytes, find));
  return path;
}

Deno.test("broken GGUF files are refused with the problem named", async () => {
  const cases: [(b: Uint8Array, find: (s: string) => number) => Uint8Array, RegExp][] = [
    [(b) => b.subarray(0, b.length - 100), /past the end .*truncated/],
    [(b) => b.subarray(0, 5000), /truncated/],
    [(b) => b.subarray(0, 10), /too short/],
    [(b) => ((b[0] = 0x58), b), /not a GGUF file/],
    [(b) => ((b[4] = 9), b), /GGUF version 9 is not supported/],
    [(b) => (new DataView(b.buffer).setBigUint64(8, 1n << 50n, true), b), /implausible counts/],
    [
      (b, find) => ((b.set(new TextEncoder().encode("llama3"), find("gemma3")), b)),
      /general.architecture "llama3" is not supported/,
    ],
    // token_embd.weight's type: name, then n_dims (4 bytes) and two u64 dims, then the type.
    [
      (
        b,
        find,
      ) => (new DataView(b.buffer).setUint32(find("token_embd.weight") + 17 + 4 + 16, 3, true), b),
      /token_embd\.weight is Q4_1, which is not supported \(F32, F16, Q4_0, Q5_0, Q8_0, Q4_K, Q6_K, BF16 are\)/,
    ],
    [
      (
        b,
        find,
      ) => (new DataView(b.buffer).setUint32(find("token_embd.weight") + 17 + 4 + 16, 77, true), b),
      /unknown ggml type 77/,
    ],
    [
      (b, find) => (b.set(new TextEncoder().encode("xxxxxxxx"), find("blk.0.ffn_up")), b),
      /unexpected tensor xxxxxxxxn_up\.weight/,
    ],
  ];
  for (const [patch, pattern] of cases) {
    const path = await patched(patch);
    await rejects(() => loadModel(path), (e: Error) => {
      ok(e.message.includes(path), `message names the file: ${e.message}`);
      ok(pattern.test(e.message), `${e.message} does not match ${pattern}`);
      return true;
    });
  }
});

Deno.test("exportGguf: tiny-a from safetensors to GGUF (norms +1, llama.cpp names) meets the golden", async () => {
  const { exportGguf } = await import("../mod.ts");
  const { readGgufHeader } = await import("../engine/formats/gguf.ts");
  const { openSource } = await import("../engine/io.ts");
  const dir = await tempDir();
  for (const type of ["bf16", "f32"] as const) {
    const out = `${dir}/tiny-a-${type}.gguf`;
    // tiny-a's folder has no tokenizer.json: take the tokenizer from its GGUF.
    await exportGguf(`${FIXTURES}tiny-a`, out, { type, tokenizer: gguf });
    const src = await openSource(out);
    const file = await readGgufHeader(src);
    await src.close();
    deepStrictEqual(
      file.tensors.find((t) => t.name === "blk.0.attn_q.weight")?.type,
      type === "f32" ? 0 : 30,
    );
    deepStrictEqual(file.tensors.find((t) => t.name === "blk.0.attn_norm.weight")?.type, 0);
    deepStrictEqual((file.metadata.get("tokenizer.ggml.tokens") as string[]).length, 512);
    const model = await loadModel(out);
    for (const r of golden.results) {
      const s = model.createSession({ contextLength: 128 });
      const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
      ok(d <= 1e-4, `${type}: logits differ by ${d}`);
      s.dispose();
    }
    await model.dispose();
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("exportGguf: GGUF to GGUF keeps the metadata types and refuses what it cannot write", async () => {
  const { exportGguf } = await import("../mod.ts");
  const { readGgufHeader } = await import("../engine/formats/gguf.ts");
  const { openSource } = await import("../engine/io.ts");
  const dir = await tempDir();
  const out = `${dir}/copy.gguf`;
  await exportGguf(gguf, out, { type: "f32" });
  const [a, b] = await Promise.all([gguf, out].map(async (p) => {
    const s = await openSource(p);
    const f = await readGgufHeader(s);
    await s.close();
    return f;
  }));
  for (
    const key of [
      "tokenizer.ggml.tokens",
      "tokenizer.ggml.scores",
      "tokenizer.ggml.token_type",
      "tokenizer.ggml.bos_token_id",
    ]
  ) {
    deepStrictEqual(b.metadataTypes.get(key), a.metadataTypes.get(key), key);
    deepStrictEqual(b.metadata.get(key), a.metadata.get(key), key);
  }
  // The same F32 weights: bit-identical logits.
  const [m1, m2] = await Promise.all([
    loadModel(gguf, { threads: 1 }),
    loadModel(out, { threads: 1 }),
  ]);
  const prompt = golden.prompts[2];
  deepStrictEqual(await m2.createSession().eval(prompt), await m1.createSession().eval(prompt));
  await Promise.all([m1.dispose(), m2.dispose()]);
  await rejects(
    exportGguf(gguf, `${dir}/x.gguf`, { type: "q3_k" as "q8_0" }),
    /cannot write "q3_k"/,
  );
  await rejects(
    exportGguf(`${FIXTURES}tiny-a`, `${dir}/y.gguf`, { type: "f32" }),
    /no tokenizer\.json/,
  );
  deepStrictEqual(
    [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
    ["copy.gguf"],
    "no partial files left behind",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a GGUF whose tokenizer this engine cannot read still runs on token ids, and says why", async () => {
  const bytes = await Deno.readFile(gguf);
  const at = (() => {
    const needle = new TextEncoder().encode("llama");
    outer: for (let i = 0; i < bytes.length - 5; i++) {
      for (let j = 0; j < 5; j++) if (bytes[i + j] !== needle[j]) continue outer;
      return i;
    }
    return -1;
  })();
  bytes.set(new TextEncoder().encode("gpt2x"), at); // tokenizer.ggml.model = "gpt2x"
  const path = await tempFile(".gguf");
  await Deno.writeFile(path, bytes);
  const model = await loadModel(path, { threads: 1 });
  ok(!model.hasTokenizer);
  const d = maxAbsDiff(
    await model.createSession().eval(golden.results[1].prompt),
    golden.results[1].last_position_logits,
  );
  ok(d <= 1e-4);
  throws(
    () => model.tokenizer,
    /without a tokenizer \(.*tokenizer.ggml.model "gpt2x" is not supported/,
  );
  await model.dispose();
  await Deno.remove(path);
});

Deno.test("GGUF string arrays: decoded together, each item as TextDecoder decodes it alone (ill-formed ones too)", async () => {
  const { parseGguf, utf16Length } = await import("../engine/formats/gguf.ts");
  const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const lenient = new TextDecoder("utf-8", { ignoreBOM: true });
  // Bytes drawn to hit every class: ASCII, continuations, each lead byte range, the edges of the
  // overlong, surrogate and past-U+10FFFF cases; and well-formed strings cut anywhere.
  const interesting = [
    0x00,
    0x41,
    0x7f,
    0x80,
    0x8f,
    0x90,
    0x9f,
    0xa0,
    0xbf,
    0xc0,
    0xc1,
    0xc2,
    0xdf,
    0xe0,
    0xed,
    0xef,
    0xf0,
    0xf4,
    0xf5,
    0xff,
  ];
  const enc = new TextEncoder();
  let seed = 12345;
  const rand = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  const items: Uint8Array[] = [];
  let wellFormed = 0;
  for (let t = 0; t < 100_000; t++) {
    let bytes: Uint8Array;
    if (t % 2) {
      bytes = Uint8Array.from({ length: rand(12) }, () => interesting[rand(interesting.length)]);
    } else {
      const cps = Array.from(
        { length: rand(8) },
        () =>
          [rand(0x80), 0x80 + rand(0x780), 0x800 + rand(0xf800), 0x10000 + rand(0x100000)][rand(4)],
      );
      const full = enc.encode(
        String.fromCodePoint(...cps.filter((c) => c < 0xd800 || c >= 0xe000)),
      );
      bytes = full.subarray(0, rand(full.length + 1));
    }
    // The length is TextDecoder's (fatal) when well-formed, and -1 exactly when it refuses.
    let want = -1;
    try {
      want = fatal.decode(bytes).length;
      wellFormed++;
    } catch { /* ill-formed */ }
    deepStrictEqual(utf16Length(bytes, 0, bytes.length), want, `bytes ${[...bytes]}`);
    items.push(bytes);
  }
  ok(wellFormed > 30_000 && items.length - wellFormed > 30_000, `${wellFormed} well-formed`);
  // A header with them as one string array, parsed eagerly.
  const key = enc.encode("tokenizer.ggml.tokens");
  const size = 24 + 8 + key.length + 4 + 4 + 8 + items.reduce((a, b) => a + 8 + b.length, 0);
  const file = new Uint8Array(size + 32);
  const view = new DataView(file.buffer);
  let o = 0;
  const u32 = (v: number) => (view.setUint32(o, v, true), o += 4);
  const u64 = (v: number) => (view.setBigUint64(o, BigInt(v), true), o += 8);
  const raw = (b: Uint8Array) => (u64(b.length), file.set(b, o), o += b.length);
  u32(0x46554747), u32(3), u64(0), u64(1), raw(key), u32(9), u32(8), u64(items.length);
  for (const b of items) raw(b);
  const parsed = parseGguf(file, file.length, "test").metadata.get("tokenizer.ggml.tokens");
  // A long array is one string and offsets (GgufStrings), iterable as the items.
  deepStrictEqual([...(parsed as Iterable<string>)], items.map((b) => lenient.decode(b)));
});

Deno.test("values in messages: a 64-bit GGUF integer shows as a bigint, a cycle or a huge value does not throw", () => {
  deepStrictEqual(shortJson(5n), "5n");
  deepStrictEqual(shortJson({ a: 2n ** 64n }), '{"a":"18446744073709551616n"}');
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  deepStrictEqual(shortJson(cycle), "(a value with a cycle)");
  let deep: unknown[] = [];
  for (let i = 0; i < 1_000_000; i++) deep = [deep];
  deepStrictEqual(shortJson(deep), "(a value nested too deeply to show)");
  deepStrictEqual(shortJson("x".repeat(1000)), `"${"x".repeat(79)}… (1002 characters)`);
  deepStrictEqual(shortJson(undefined), "undefined");
});
