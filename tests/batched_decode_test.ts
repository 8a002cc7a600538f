// Batched decoding across sessions (engine/decode_batcher.ts): sessions decoding at the same time
// share one forward call per step, and each must get exactly what it gets alone: the same
// tokens and every logit with the same bits, for every weight format, on 1 or 2 threads, with
// sessions at different positions (some past the sliding window, whose ring has wrapped).

import { deepEqual, ok } from "node:assert/strict";
import { exportGguf, type Gemma3Model, loadModel } from "../mod.ts";
import { FIXTURES } from "./support/helpers.ts";
import { kQuantGgufs } from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";

const VOCAB = 512;
/** Four prompts of different lengths: the sessions decode at different positions, two of them
 * beyond the fixture's sliding window of 8. */
const PROMPTS = [3, 11, 6, 17].map((n, s) =>
  Array.from({ length: n }, (_, i) => (i * 53 + s * 101 + 7) % VOCAB)
);
const STEPS = 10;

interface Decoded {
  tokens: number[];
  /** Each step's logits (copies). */
  logits: Float32Array[];
}

/** Generates STEPS tokens for each prompt, with a seeded sampler (temperature 1, so that the
 * tokens follow every logit's bits), on sessions of one model: all at once, or one after another. */
async function decode(model: Gemma3Model, together: boolean): Promise<Decoded[]> {
  const one = async (prompt: number[], i: number): Promise<Decoded> => {
    const s = model.createSession({ contextLength: 64 });
    const got: Decoded = { tokens: [], logits: [] };
    const run = s.generate(prompt, {
      maxTokens: STEPS,
      temperature: 1,
      seed: 1000 + i,
      stopTokens: [],
      onLogits: (l) => got.logits.push(l.slice()),
    });
    for await (const id of run) got.tokens.push(id);
    s.dispose();
    return got;
  };
  if (together) return await Promise.all(PROMPTS.map(one));
  const out: Decoded[] = [];
  for (const [i, p] of PROMPTS.entries()) out.push(await one(p, i));
  return out;
}

function assertSameBits(got: Decoded[], alone: Decoded[], what: string): void {
  for (const [s, a] of alone.entries()) {
    deepEqual(got[s].tokens, a.tokens, `${what}: session ${s}'s tokens`);
    for (const [step, logits] of a.logits.entries()) {
      const other = got[s].logits[step];
      const differ = logits.findIndex((v, i) => !Object.is(v, other[i]));
      ok(
        differ < 0,
        `${what}: session ${s}, step ${step}: logit ${differ} is ${other[differ]} in a batch, ` +
          `${logits[differ]} alone`,
      );
    }
  }
}

async function assertBatchedEqualsAlone(path: string, what: string): Promise<void> {
  let alone: Decoded[] | undefined;
  for (const threads of [1, 2]) {
    const model = await loadModel(path, { threads });
    try {
      alone ??= await decode(model, false);
      const before = model.decodeBatchStats;
      const together = await decode(model, true);
      const after = model.decodeBatchStats;
      const steps = after.steps - before.steps, batches = after.batches - before.batches;
      // Each session's prompt is one chunk (not a decode step), and its last token is never
      // evaluated (nothing follows it): STEPS - 1 decode steps each. Batched, the four sessions
      // take about STEPS - 1 batches; one by one they would take four times as many.
      ok(
        steps === 4 * (STEPS - 1) && batches <= 2 * (STEPS - 1),
        `${what}: ${steps} decode steps took ${batches} batches: the sessions were not batched`,
      );
      assertSameBits(together, alone, `${what}, ${threads} thread(s)`);
    } finally {
      await model.dispose();
    }
  }
}

for (const type of ["f32", "bf16", "q8_0", "q4_0", "q5_0"] as const) {
  Deno.test(`${type}: four sessions decoded in batches get the tokens and logits they get alone, on 1 or 2 threads`, async () => {
    const dir = await tempDir();
    const path = `${dir}/${type}.gguf`;
    await exportGguf(`${FIXTURES}tiny-a/model.gguf`, path, { type, headType: type });
    await assertBatchedEqualsAlone(path, type);
  });
}

Deno.test("q4_k and q6_k: four sessions decoded in batches get what they get alone", async () => {
  for (const { type, path } of await kQuantGgufs(12)) await assertBatchedEqualsAlone(path, type);
});

Deno.test("concurrent evals of one session run in order; of several sessions, in one batch", async () => {
  const model = await loadModel(`${FIXTURES}tiny-a/model.gguf`, { threads: 1 });
  try {
    // Reference: token by token on one session.
    const ref = model.createSession({ contextLength: 32 });
    const expected: Float32Array[] = [];
    for (const id of [5, 9, 13]) expected.push(await ref.eval([id]));
    // The same three calls without awaiting between them: each must see the position the one
    // before it leaves.
    const s = model.createSession({ contextLength: 32 });
    const got = await Promise.all([5, 9, 13].map((id) => s.eval([id])));
    deepEqual(got, expected);
    deepEqual(s.tokens, [5, 9, 13]);
    // Three sessions' steps issued together go through the model as one batch.
    const sessions = [0, 1, 2].map(() => model.createSession({ contextLength: 32 }));
    const before = model.decodeBatchStats;
    const logits = await Promise.all(sessions.map((x) => x.eval([5])));
    const after = model.decodeBatchStats;
    deepEqual([after.steps - before.steps, after.batches - before.batches], [3, 1]);
    for (const l of logits) deepEqual(l, expected[0]);
  } finally {
    await model.dispose();
  }
});

Deno.test("a step whose logits are not numbers fails alone; the others in its batch go on", async () => {
  const { randomWeights, smallConfig, writeCheckpoint } = await import(
    "./support/safetensors_writer.ts"
  );
  // Untied head: a NaN in token 9's embedding row makes only a sequence that reads token 9 NaN.
  const config = smallConfig({ tie_word_embeddings: false });
  const tensors = randomWeights(config, 4, "F32");
  const hidden = (config as Record<string, number>).hidden_size;
  tensors["model.embed_tokens.weight"].values[9 * hidden + 3] = NaN;
  const model = await loadModel(await writeCheckpoint(config, tensors), { threads: 1 });
  try {
    const healthy = model.createSession(), damaged = model.createSession();
    await healthy.eval([2, 5]);
    await damaged.eval([2, 5]);
    const alone = (await model.createSession().eval([2, 5, 7])).slice();
    // Greedy steps find their token on the backend (argmax): a NaN row is refused there.
    const before = model.decodeBatchStats.batches;
    const [good, bad] = await Promise.allSettled([
      healthy.generate([7], { maxTokens: 1, temperature: 0 }).next(),
      damaged.generate([9], { maxTokens: 1, temperature: 0 }).next(),
    ]);
    deepEqual(model.decodeBatchStats.batches - before, 1, "the two steps were one batch");
    ok(
      good.status === "fulfilled",
      `the healthy step failed: ${(good as PromiseRejectedResult).reason}`,
    );
    let best = 0;
    for (let i = 1; i < alone.length; i++) if (alone[i] > alone[best]) best = i;
    deepEqual(good.value.value, best, "the healthy step's token is its argmax alone");
    ok(bad.status === "rejected");
    ok(/logits that are not numbers/.test(String(bad.reason)), String(bad.reason));
  } finally {
    await model.dispose();
  }
});
