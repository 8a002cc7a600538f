// Prompt-lookup decoding (engine/prompt_lookup.ts, Session.generate's `speculative`): drafts
// from the context, verified in one pass. The answer must be exactly the one without drafts,
// token for token and every logit's bits, for every weight format, on 1 or 2 threads, greedy
// and seeded sampling, with contexts long enough that the sliding layers' rings wrap (tiny-a's
// window is 8; its rings hold 8 + SPARE_SLOTS = 24) and drafts the model rejects written into
// them. And the drafts must actually be used: the tests count accepted tokens.

import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { exportGguf, type Gemma3Model, type GenerateOptions, loadModel } from "../mod.ts";
import { draftFromContext, lookupSettings } from "../engine/prompt_lookup.ts";
import { SPARE_SLOTS } from "../engine/gemma3/forward.ts";
import { FIXTURES } from "./support/helpers.ts";
import { kQuantGgufs } from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";

Deno.test("draftFromContext: the tokens after the most recent earlier match of the last n", () => {
  // "1 2 3" occurred at 0..2, followed by 9 1 2 3 (the draft may run up to the context's end).
  deepStrictEqual(draftFromContext([1, 2, 3, 9, 1, 2, 3], 3, 4), [9, 1, 2, 3]);
  deepStrictEqual(draftFromContext([1, 2, 3, 9, 1, 2, 3], 3, 2), [9, 1]);
  // "1 2" occurs twice before the end: the later one (followed by 6) wins.
  deepStrictEqual(draftFromContext([1, 2, 5, 1, 2, 6, 1, 2], 2, 1), [6]);
  // A match overlapping the suffix: "7 7" ending at index 2 is followed by the last 7 only.
  deepStrictEqual(draftFromContext([7, 7, 7, 7], 2, 3), [7]);
  // Only n - 1 tokens match, or the context is too short: no draft.
  deepStrictEqual(draftFromContext([4, 2, 3, 9, 1, 2, 3], 3, 4), []);
  deepStrictEqual(draftFromContext([1, 2, 3], 3, 4), []);
  deepStrictEqual(draftFromContext([1, 2, 1, 2], 2, 0), []);
});

Deno.test("speculative options are checked, with messages that name them", () => {
  deepStrictEqual(lookupSettings(undefined), null);
  deepStrictEqual(lookupSettings({}), null);
  deepStrictEqual(lookupSettings({ lookup: {} }), { n: 3, k: 8 });
  throws(() => lookupSettings({ lookup: { n: 0 } }), /lookup\.n must be an integer from 1/);
  throws(() => lookupSettings({ lookup: { k: SPARE_SLOTS + 1 } }), /lookup\.k must be .* to 16/);
  throws(() => lookupSettings({ lookup: { k: 2.5 } }), /lookup\.k/);
  throws(() => lookupSettings({ ngram: {} } as never), /no option ngram/);
  throws(() => lookupSettings(5 as never), /must be an object/);
});

/** A prompt that repeats itself (drafts find matches in it), long enough that a 24-slot ring
 * wraps during the prompt and again while generating. */
const PROMPT = Array.from({ length: 40 }, (_, i) => ((i % 13) * 7 + 3) % 512);
const TOKENS = 60;

interface Run {
  tokens: number[];
  logits: Float32Array[];
  /** The logits of one more token evaluated after the answer: the cache the run left. */
  after: Float32Array;
  accepted: number;
}

async function run(
  model: Gemma3Model,
  sampling: GenerateOptions,
  speculative: boolean,
): Promise<Run> {
  const s = model.createSession({ contextLength: 160 });
  const got: Run = { tokens: [], logits: [], after: new Float32Array(), accepted: 0 };
  const gen = s.generate(PROMPT, {
    ...sampling,
    maxTokens: TOKENS,
    stopTokens: [],
    onLogits: (l) => got.logits.push(l.slice()),
    ...speculative && { speculative: { lookup: { n: 2, k: 8 } } },
  });
  for (let r = await gen.next();; r = await gen.next()) {
    if (r.done) {
      got.accepted = r.value.speculative?.accepted ?? 0;
      break;
    }
    got.tokens.push(r.value);
  }
  deepStrictEqual(s.tokens, [...PROMPT, ...got.tokens]);
  got.after = await s.eval([11]);
  s.dispose();
  return got;
}

function assertSame(got: Run, want: Run, what: string): void {
  deepStrictEqual(got.tokens, want.tokens, `${what}: tokens`);
  deepStrictEqual(got.logits.length, want.logits.length, `${what}: steps`);
  for (const [step, logits] of want.logits.entries()) {
    const other = got.logits[step];
    const differ = logits.findIndex((v, i) => !Object.is(v, other[i]));
    ok(
      differ < 0,
      `${what}, step ${step}: logit ${differ} is ${other[differ]}, ${
        logits[differ]
      } without drafts`,
    );
  }
  const differ = want.after.findIndex((v, i) => !Object.is(v, got.after[i]));
  ok(differ < 0, `${what}: the token after the answer differs at logit ${differ}`);
}

const SAMPLINGS: [string, GenerateOptions][] = [
  ["greedy", { temperature: 0 }],
  ["seeded, temperature 0.4", { temperature: 0.4, seed: 7, topP: 0.95 }],
  ["seeded, repetition penalty", { temperature: 0.3, seed: 3, repetitionPenalty: 1.1 }],
];

async function assertExact(path: string, what: string): Promise<void> {
  for (const threads of [1, 2]) {
    const model = await loadModel(path, { threads });
    try {
      let accepted = 0;
      for (const [name, sampling] of SAMPLINGS) {
        const plain = await run(model, sampling, false);
        const drafted = await run(model, sampling, true);
        assertSame(drafted, plain, `${what}, ${threads} thread(s), ${name}`);
        accepted += drafted.accepted;
      }
      // The drafts were used: without accepted tokens the comparison would test nothing.
      ok(accepted >= 10, `${what}, ${threads} thread(s): only ${accepted} drafted tokens accepted`);
    } finally {
      await model.dispose();
    }
  }
}

for (const type of ["f32", "bf16", "q8_0", "q4_0", "q5_0"] as const) {
  Deno.test(`${type}: prompt lookup gives exactly the tokens and logits of plain decoding, on 1 or 2 threads`, async () => {
    const dir = await tempDir();
    const path = `${dir}/${type}.gguf`;
    await exportGguf(`${FIXTURES}tiny-a/model.gguf`, path, { type, headType: type });
    await assertExact(path, type);
  });
}

Deno.test("q4_k and q6_k: prompt lookup gives exactly the tokens and logits of plain decoding", async () => {
  for (const { type, path } of await kQuantGgufs(12)) await assertExact(path, type);
});

Deno.test("a caller that stops early leaves the context with exactly the tokens it saw", async () => {
  const model = await loadModel(`${FIXTURES}tiny-a/model.gguf`, { threads: 1 });
  try {
    const options: GenerateOptions = { maxTokens: 50, stopTokens: [] };
    // Plain decoding: the reference for every cut.
    const ref = model.createSession({ contextLength: 160 });
    const all: number[] = [];
    for await (const id of ref.generate(PROMPT, options)) all.push(id);
    ref.dispose();
    let accepted = 0;
    for (const cut of [1, 5, 12, 23]) {
      const s = model.createSession({ contextLength: 160 });
      const seen: number[] = [];
      const gen = s.generate(PROMPT, { ...options, speculative: { lookup: { n: 2, k: 12 } } });
      for await (const id of gen) {
        seen.push(id);
        if (seen.length === cut) break;
      }
      deepStrictEqual(s.tokens, [...PROMPT, ...all.slice(0, cut)], `cut after ${cut}`);
      // Going on from there gives the rest of the reference answer.
      const rest = s.generate([], {
        ...options,
        maxTokens: 50 - cut,
        speculative: { lookup: { n: 2, k: 12 } },
      });
      let r = await rest.next();
      const more: number[] = [];
      for (; !r.done; r = await rest.next()) more.push(r.value);
      accepted += r.value.speculative!.accepted;
      deepStrictEqual([...seen, ...more], all, `cut after ${cut}, then continued`);
      s.dispose();
    }
    ok(accepted > 0, "no drafted token was accepted");
  } finally {
    await model.dispose();
  }
});

Deno.test("sessions decoding together share batches instead of drafting; their tokens stay the plain ones", async () => {
  const model = await loadModel(`${FIXTURES}tiny-a/model.gguf`, { threads: 1 });
  try {
    const options: GenerateOptions = { maxTokens: 40, stopTokens: [] };
    const plain = async (prompt: number[]) => {
      const s = model.createSession({ contextLength: 160 });
      const out: number[] = [];
      for await (const id of s.generate(prompt, options)) out.push(id);
      s.dispose();
      return out;
    };
    const prompts = [PROMPT, PROMPT.map((t) => (t + 1) % 512)];
    const alone = [await plain(prompts[0]), await plain(prompts[1])];
    const before = model.decodeBatchStats;
    const drafted: number[] = [];
    const together = await Promise.all(prompts.map(async (prompt) => {
      const s = model.createSession({ contextLength: 160 });
      const gen = s.generate(prompt, { ...options, speculative: { lookup: { n: 2, k: 8 } } });
      const out: number[] = [];
      let r = await gen.next();
      for (; !r.done; r = await gen.next()) out.push(r.value);
      drafted.push(r.value.speculative!.drafted);
      s.dispose();
      return out;
    }));
    deepStrictEqual(together, alone);
    const after = model.decodeBatchStats;
    const steps = after.steps - before.steps, batches = after.batches - before.batches;
    // Each answer's 39 steps after its prompt's pass go through the batcher, two to a batch.
    ok(steps >= 70 && batches <= steps / 2 + 2, `${steps} steps in ${batches} batches`);
    ok(drafted.every((d) => d <= 2), `drafts while another session decoded: ${drafted}`);
  } finally {
    await model.dispose();
  }
});
