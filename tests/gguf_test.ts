// GGUF loading: tiny-a's llama.cpp-layout GGUF (F32 tensors, llama.cpp names, norms stored as
// 1 + w, metadata instead of config.json) must meet the same golden as the safetensors checkpoint,
// and broken files must be refused with the file and the problem named.

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { FIXTURES, maxAbsDiff } from "./support/helpers.ts";

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
  const path = `${await Deno.makeTempDir()}/model.gguf`;
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
      /architecture "llama3" is not supported/,
    ],
    // token_embd.weight's type: name, then n_dims (4 bytes) and two u64 dims, then the type.
    [
      (
        b,
        find,
      ) => (new DataView(b.buffer).setUint32(find("token_embd.weight") + 17 + 4 + 16, 2, true), b),
      /token_embd\.weight is Q4_0, which is not supported yet/,
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
