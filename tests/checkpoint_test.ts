// Sliding-window checkpoints (Session's `checkpoints`): going back inside a context whose rings
// have wrapped resumes from the nearest snapshot instead of from the start, and what follows is
// bit for bit what a cold evaluation of the same tokens gives. tiny-a: window 8, rings of
// 8 + SPARE_SLOTS = 24 slots, 5 sliding layers, 1 KV head of 32.

import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { type Gemma3Model, loadModel, type Session } from "../mod.ts";
import { SPARE_SLOTS } from "../engine/gemma3/forward.ts";
import { FIXTURES } from "./support/helpers.ts";

const model = await loadModel(`${FIXTURES}tiny-a/model.gguf`, { threads: 1 });
const c = model.config;
/** One checkpoint: keys and values of every sliding layer's ring, f32. */
const CHECKPOINT_BYTES = c.layerTypes.filter((t) => t === "sliding_attention").length * 2 *
  (c.slidingWindow + SPARE_SLOTS) * c.numKvHeads * c.headDim * 4;

const tokens = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (i * 37 + seed * 101 + 5) % c.vocabSize);

/** Every logit of `after` evaluated after `prefix` on a fresh session, no checkpoints. */
async function cold(m: Gemma3Model, prefix: number[], after: number[]): Promise<Float32Array> {
  const s = m.createSession({ contextLength: 512, checkpoints: { budgetBytes: 0 } });
  const all = await s.eval([...prefix, ...after], { logits: "all" });
  s.dispose();
  return all.subarray(prefix.length * c.vocabSize);
}

function assertBits(got: Float32Array, want: Float32Array, what: string): void {
  deepStrictEqual(got.length, want.length, what);
  const differ = want.findIndex((v, i) => !Object.is(v, got[i]));
  ok(differ < 0, `${what}: logit ${differ} is ${got[differ]}, cold ${want[differ]}`);
}

Deno.test("after any truncate the logits are those of a cold evaluation, resumed from the nearest checkpoint", async () => {
  const s = model.createSession({ contextLength: 512, checkpoints: { every: 32 } });
  // A conversation: a prompt, an answer, a second prompt (its own eval), an answer.
  const history = tokens(70, 1);
  await s.eval(history);
  for await (const id of s.generate([], { maxTokens: 30, stopTokens: [] })) history.push(id);
  const second = tokens(45, 2);
  history.push(...second);
  await s.eval(second);
  for await (const id of s.generate([], { maxTokens: 20, stopTokens: [] })) history.push(id);
  deepStrictEqual(s.tokens, history);
  // Checkpoints: every 32 positions of the two prompts' evaluations, before each prompt's last
  // token, and where the second prompt's eval began (the end of the first answer, whose last
  // token is evaluated with it: 99); none before 64 (cheaper to evaluate again).
  const positions = s.checkpointPositions;
  deepStrictEqual(positions, [64, 69, 99, 128, 144]);
  ok(s.checkpointBytes <= 64 << 20);
  // Going back to various lengths (each more than the rings' 17 spare positions back), then new
  // tokens: the same bits as cold, and evaluation resumed from the latest checkpoint at or before
  // the length (the rings have overwritten what the length needs), or from 0 (none before it).
  for (const [length, seed] of [[140, 3], [100, 4], [70, 5], [40, 6], [12, 7]]) {
    s.truncate(length);
    const resumed = Math.max(0, ...positions.filter((p) => p <= length));
    deepStrictEqual(s.evaluatedTokens, resumed, `truncate(${length}) resumes at ${resumed}`);
    const extra = tokens(9, seed);
    const got = await s.eval(extra, { logits: "all" });
    assertBits(got, await cold(model, history.slice(0, length), extra), `truncate(${length})`);
    history.splice(length, Infinity, ...extra);
  }
  s.dispose();
});

Deno.test("regenerating an answer re-evaluates one token; a second prompt sharing the start only what follows a checkpoint", async () => {
  const s = model.createSession({ contextLength: 512, checkpoints: { every: 64 } });
  const prompt = tokens(200, 8);
  const first: number[] = [];
  for await (const id of s.generate(prompt, { maxTokens: 40, stopTokens: [] })) first.push(id);
  // Regenerate: the same prompt again keeps all of it but its last token (a checkpoint sits
  // right there) though 40 answer tokens have wrapped the 24-slot rings since.
  deepStrictEqual(s.reusableTokens(prompt), prompt.length - 1); // what the server's slots ask
  deepStrictEqual(s.reusePrefix(prompt), prompt.length - 1);
  deepStrictEqual(s.evaluatedTokens, prompt.length - 1);
  const again: number[] = [];
  for await (const id of s.generate([prompt.at(-1)!], { maxTokens: 40, stopTokens: [] })) {
    again.push(id);
  }
  deepStrictEqual(again, first);
  // Another prompt sharing the first 150 tokens: resumes from the checkpoint at 128.
  const other = [...prompt.slice(0, 150), ...tokens(30, 9)];
  deepStrictEqual(s.reusableTokens(other), 128);
  s.reusePrefix(other);
  deepStrictEqual(s.evaluatedTokens, 128);
  const got = await s.eval(other.slice(150), { logits: "all" });
  assertBits(got, await cold(model, other.slice(0, 150), other.slice(150)), "shared start");
  s.dispose();
});

Deno.test("checkpoints stay within their budget; none with budget 0 (everything evaluated again)", async () => {
  const two = model.createSession({
    contextLength: 512,
    checkpoints: { every: 16, budgetBytes: 2 * CHECKPOINT_BYTES },
  });
  await two.eval(tokens(300, 10));
  deepStrictEqual(two.checkpointBytes, 2 * CHECKPOINT_BYTES);
  deepStrictEqual(two.checkpointPositions.length, 2);
  two.dispose();

  const none = model.createSession({ contextLength: 512, checkpoints: { budgetBytes: 0 } });
  const prompt = tokens(100, 11);
  await none.eval(prompt);
  deepStrictEqual(none.checkpointBytes, 0);
  none.truncate(60);
  deepStrictEqual(none.evaluatedTokens, 0);
  const extra = tokens(5, 12);
  assertBits(
    await none.eval(extra, { logits: "all" }),
    await cold(model, prompt.slice(0, 60), extra),
    "no checkpoints",
  );
  none.dispose();

  // A budget smaller than one checkpoint: none taken.
  const small = model.createSession({
    contextLength: 512,
    checkpoints: { budgetBytes: CHECKPOINT_BYTES - 1 },
  });
  await small.eval(tokens(100, 13));
  deepStrictEqual(small.checkpointPositions, []);
  small.dispose();
});

Deno.test("checkpoint options are checked", () => {
  throws(
    () => model.createSession({ checkpoints: { budgetBytes: -1 } }),
    /checkpoints\.budgetBytes must be an integer >= 0/,
  );
  throws(
    () => model.createSession({ checkpoints: { every: 1.5 } }),
    /checkpoints\.every must be an integer >= 0/,
  );
});

Deno.test("a context that fits in the window takes no checkpoints (nothing is ever overwritten)", async () => {
  const s: Session = model.createSession({ contextLength: 20 });
  await s.eval(tokens(19, 14));
  deepStrictEqual(s.checkpointPositions, []);
  s.dispose();
});

Deno.test("checkpoint teardown", async () => {
  await model.dispose();
});
