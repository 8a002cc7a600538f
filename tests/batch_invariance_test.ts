// Batch invariance on whole models, for every weight format: a token's logits have the same bits
// whether its prompt is evaluated at once (prompt chunks take the tiled kernels: token pairs,
// packed row groups), token by token (the decode kernels), or in chunks of other sizes, on 1 or 2
// threads. The kernel tests check each product the same way (tests/kernels/); this checks that
// the forward pass never routes a token through anything that depends on its company.

import { ok } from "node:assert/strict";
import { exportGguf, loadModel } from "../mod.ts";
import { FIXTURES } from "./support/helpers.ts";
import { kQuantGgufs } from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";

/** Every position's logits of `prompt`, evaluated in pieces of `chunk` tokens. */
async function logitsInChunks(
  path: string,
  threads: number,
  prompt: number[],
  chunk: number,
): Promise<Float32Array> {
  const model = await loadModel(path, { threads });
  try {
    const s = model.createSession({ contextLength: 128 });
    const parts: Float32Array[] = [];
    for (let i = 0; i < prompt.length; i += chunk) {
      parts.push(await s.eval(prompt.slice(i, i + chunk), { logits: "all" }));
    }
    const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) all.set(p, (at += p.length) - p.length);
    return all;
  } finally {
    await model.dispose();
  }
}

async function assertInvariant(path: string, what: string, vocab: number): Promise<void> {
  // 21 tokens: pairs, packed groups (4 or more tokens) and an odd one out at the end.
  const prompt = Array.from({ length: 21 }, (_, i) => (i * 37 + 5) % vocab);
  const alone = await logitsInChunks(path, 1, prompt, 1);
  for (const [threads, chunk] of [[1, 21], [1, 5], [2, 21], [2, 1], [2, 6]]) {
    const got = await logitsInChunks(path, threads, prompt, chunk);
    const differ = got.findIndex((v, i) => !Object.is(v, alone[i]));
    ok(
      differ < 0,
      `${what}, ${threads} thread(s), chunks of ${chunk}: position ${
        Math.floor(differ / vocab)
      } differs from the token evaluated alone (${got[differ]} vs ${alone[differ]})`,
    );
  }
}

for (const type of ["f32", "bf16", "q8_0", "q4_0", "q5_0"] as const) {
  Deno.test(`${type}: every position's logits have the same bits alone, at once, in chunks, on 1 or 2 threads`, async () => {
    const dir = await tempDir();
    const path = `${dir}/${type}.gguf`;
    await exportGguf(`${FIXTURES}tiny-a/model.gguf`, path, { type, headType: type });
    await assertInvariant(path, type, 512);
  });
}

Deno.test("q4_k and q6_k (rows of 256): the same bits alone, at once, in chunks, on 1 or 2 threads", async () => {
  for (const { type, path } of await kQuantGgufs(11)) await assertInvariant(path, type, 512);
});
