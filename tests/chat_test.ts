// model.tokenizer and model.chat on a random-weight model with the real Gemma 3 vocabulary (the
// session side, truncate and pending tokens, is tests/session_test.ts).

import { deepStrictEqual, ok, rejects, throws } from "node:assert/strict";
import { loadModel, type Session } from "../mod.ts";
import { gemmaTokenizerDir } from "./support/gemma_tokenizer.ts";
import { FIXTURES } from "./support/helpers.ts";
import { randomWeights, smallConfig, writeCheckpoint } from "./support/safetensors_writer.ts";

// A tiny model over the real 262,144-token vocabulary, so real chat prompts are valid input.
const config = smallConfig({
  vocab_size: 262144,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  layer_types: ["sliding_attention", "full_attention"],
  sliding_window: 4,
});
const dir = await writeCheckpoint(config, randomWeights(config, 21));
await Deno.copyFile(`${await gemmaTokenizerDir()}tokenizer.json`, `${dir}/tokenizer.json`);
const model = await loadModel(dir);

/** Counts the tokens a session evaluates (generate() calls eval() for every step). */
function countEvals(s: Session): { n: number } {
  const counter = { n: 0 };
  const orig = s.eval.bind(s);
  s.eval = (ids, o) => {
    counter.n += ids.length;
    return orig(ids, o);
  };
  return counter;
}

Deno.test("model.tokenizer is loaded from the folder", () => {
  ok(model.hasTokenizer);
  deepStrictEqual(model.tokenizer.encode("Hello world"), [2, 9259, 1902]);
});

Deno.test("a model folder without tokenizer.json says so when asked for one", async () => {
  const tiny = await loadModel(`${FIXTURES}tiny-a`);
  ok(!tiny.hasTokenizer);
  throws(() => tiny.tokenizer.encode("x"), /no tokenizer\.json/);
  await tiny.dispose();
});

Deno.test("chat streams text equal to decoding the greedy tokens, and reuses the cache across turns", async () => {
  const s = model.createSession({ contextLength: 512 });
  const evals = countEvals(s);
  const messages = [{ role: "user", content: "Hi, who are you?" }];
  let answer = "";
  for await (const piece of model.chat(messages, { session: s, maxTokens: 12, temperature: 0 })) {
    answer += piece;
  }
  const prompt1 = model.tokenizer.encode(
    model.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }),
    { addBos: false },
  );
  // Independent check: greedy tokens from a fresh session, decoded in one go.
  const fresh = model.createSession({ contextLength: 512 });
  const ids: number[] = [];
  for await (const id of fresh.generate(prompt1, { maxTokens: 12, stopTokens: [1, 106] })) {
    ids.push(id);
  }
  deepStrictEqual(answer, model.tokenizer.decode(ids, { skipSpecialTokens: true }));
  fresh.dispose();

  // Second turn: only the tokens after what the session holds are evaluated.
  const held = s.position;
  const before = evals.n;
  const turn2 = [...messages, { role: "assistant", content: answer }, {
    role: "user",
    content: "Tell me more.",
  }];
  for await (
    const _ of model.chat(turn2, { session: s, maxTokens: 3, temperature: 0 })
  ) { /* drain */ }
  const prompt2 = model.tokenizer.encode(
    model.tokenizer.applyChatTemplate(turn2, { addGenerationPrompt: true }),
    { addBos: false },
  );
  let shared = 0;
  while (shared < prompt1.length + ids.length && prompt2[shared] === [...prompt1, ...ids][shared]) {
    shared++;
  }
  ok(shared >= prompt1.length, "the first prompt is a prefix of the second");
  const newTokens = evals.n - before;
  ok(
    newTokens <= prompt2.length - shared + 3 + 1,
    `evaluated ${newTokens} tokens for ${prompt2.length - shared} new ones (held ${held})`,
  );
  s.dispose();
});

Deno.test("chat rejects a conversation longer than the context and bad messages", async () => {
  const s = model.createSession({ contextLength: 8 });
  await rejects(
    () =>
      model.chat([{ role: "user", content: "a long question ".repeat(5) }], { session: s }).next(),
    /context length 8/,
  );
  await rejects(
    () => model.chat([{ role: "assistant", content: "x" }], { session: s }).next(),
    /alternate/,
  );
  s.dispose();
});
