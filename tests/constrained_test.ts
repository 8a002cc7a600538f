// Constrained generation on the worst case: the full-size random-weight 270M (Q8_0, Gemma's
// real 262,144-token vocabulary), whose free output is garbage, sampled at temperature 1. Every
// finished output must parse and validate with independent judges: ajv for JSON Schemas,
// llama.cpp's own grammar engine for llama.cpp's sample GBNF grammars.

import { deepStrictEqual, ok } from "node:assert/strict";
import { Grammar, jsonSchemaToGbnf, loadModel } from "../mod.ts";
import { DEAD } from "../engine/grammar/automaton.ts";
import { random270mGguf } from "./support/random_270m.ts";
import { ensureLlamaCpp, llamaCppGrammarAccepts, llamaCppTokenize } from "./support/llamacpp.ts";
import { SCHEMAS, validator } from "./support/json_schemas.ts";

const path = await random270mGguf();
const model = await loadModel(path, { threads: 2 });
const tok = model.tokenizer;
const SEEDS = 10;
const ask = (content: string) => [{ role: "user", content }];

/** Runs model.chat and returns the text and why it ended. */
async function answer(messages: { role: string; content: string }[], options: object) {
  const gen = model.chat(messages, options);
  let text = "";
  for (let r = await gen.next();; r = await gen.next()) {
    if (r.done) return { text, finishReason: r.value.finishReason };
    text += r.value;
  }
}

Deno.test({
  name:
    "constrained: 22 schemas x 10 seeds at temperature 1 on the random 270M: every finished answer validates (ajv)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const rows: string[] = [];
    let finished = 0, total = 0;
    for (const [name, schema] of Object.entries(SCHEMAS)) {
      const valid = validator(schema);
      let done = 0;
      for (let seed = 1; seed <= SEEDS; seed++) {
        const r = await answer(ask(`Reply with JSON (${name}).`), {
          jsonSchema: schema,
          temperature: 1,
          seed,
          maxTokens: 96,
        });
        total++;
        if (r.finishReason !== "end_of_turn") {
          deepStrictEqual(r.finishReason, "length");
          continue;
        }
        done++;
        let value: unknown;
        try {
          value = JSON.parse(r.text);
        } catch (e) {
          throw new Error(`${name} seed ${seed}: not JSON: ${r.text} (${(e as Error).message})`);
        }
        ok(valid(value), `${name} seed ${seed}: ${r.text} does not validate`);
      }
      finished += done;
      rows.push(`${name}: ${done}/${SEEDS}`);
    }
    console.log(`finished and valid: ${finished}/${total} (${rows.join(", ")})`);
    // Most answers end within 96 tokens; an answer cut by maxTokens reports "length".
    ok(finished >= total * 0.6, `only ${finished} of ${total} answers finished`);
  },
});

Deno.test({
  name:
    "constrained: llama.cpp's sample grammars; llama.cpp's grammar engine accepts every answer (a cut one as a start)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    ensureLlamaCpp();
    // llama.cpp tokenizes this file as we do (else its grammar check would see other text).
    const texts = ['{"a": [1, 2]}', "- item\n", "1. e4 e5\n"];
    deepStrictEqual(
      await llamaCppTokenize(path, texts),
      texts.map((t) => tok.encode(t, { addBos: false })),
    );
    const names = ["json", "json_arr", "arithmetic", "list", "chess", "english", "japanese", "c"];
    let finished = 0;
    for (const name of names) {
      const gbnf = Deno.readTextFileSync(new URL(`./fixtures/gbnf/${name}.gbnf`, import.meta.url));
      const grammar = new Grammar(gbnf);
      const outputs: { text: string; done: boolean }[] = [];
      for (let seed = 1; seed <= 5; seed++) {
        const r = await answer(ask("Go on."), {
          grammar: gbnf,
          temperature: 1,
          seed,
          maxTokens: 64,
        });
        const done = r.finishReason === "end_of_turn";
        if (!done) deepStrictEqual(r.finishReason, "length");
        outputs.push({ text: r.text, done });
        // Ours: a finished answer is a sentence; a cut one, the start of one.
        const state = grammar.moveAll(grammar.initial, new TextEncoder().encode(r.text));
        ok(done ? grammar.accepting(state) : state !== DEAD, `${name}: ${JSON.stringify(r.text)}`);
      }
      // llama.cpp's: the same, judged by its own grammar engine.
      const verdicts = await llamaCppGrammarAccepts(path, gbnf, outputs.map((o) => o.text));
      verdicts.forEach((v, i) => {
        const { text, done } = outputs[i];
        ok(done ? v.whole : v.prefix, `${name}: llama.cpp refuses ${JSON.stringify(text)}`);
      });
      const n = outputs.filter((o) => o.done).length;
      finished += n;
      console.log(`${name}: 5 answers (${n} finished), all accepted by llama.cpp`);
    }
    // Some must finish, or the whole-sentence check above checked nothing (chess, json and c do).
    ok(finished >= 3, `only ${finished} answers finished`);
    // The checker can refuse: text outside the grammar is refused by llama.cpp too.
    const json = Deno.readTextFileSync(new URL("./fixtures/gbnf/json.gbnf", import.meta.url));
    deepStrictEqual(await llamaCppGrammarAccepts(path, json, ['{"a": 1}', '{"a" 1}', '{"a": 1']), [
      { prefix: true, whole: true },
      { prefix: false, whole: false },
      { prefix: true, whole: false },
    ]);
  },
});

Deno.test({
  name:
    "constrained: greedy output is the argmax over exactly the allowed tokens, the same on 1 and 2 threads",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const one = await loadModel(path, { threads: 1 });
    try {
      for (const name of ["nested-order", "formats", "recursive-tree"]) {
        const schema = SCHEMAS[name];
        const grammar = new Grammar(jsonSchemaToGbnf(schema));
        const results: number[][] = [];
        for (const m of [model, one]) {
          const s = m.createSession({ contextLength: 256 });
          const ids: number[] = [];
          let state = grammar.initial;
          const prompt = tok.encodeChat(ask("JSON please."));
          for await (
            const id of s.generate(prompt, {
              jsonSchema: schema,
              maxTokens: 40,
              stopTokens: model.defaultStopTokens,
              onLogits: m === model && ids.length < 6
                ? (logits, id) => {
                  // Brute force: the best logit among tokens whose bytes the grammar allows.
                  let best = -1;
                  for (let t = 0; t < logits.length; t++) {
                    if (tok.isSpecial(t)) continue;
                    const b = tok.tokenBytes(t);
                    if (b.length === 0 || grammar.moveAll(state, b) === DEAD) continue;
                    if (best < 0 || logits[t] > logits[best]) best = t;
                  }
                  deepStrictEqual(id, best, `${name}: token ${ids.length}`);
                }
                : undefined,
            })
          ) {
            ids.push(id);
            state = grammar.moveAll(state, tok.tokenBytes(id));
          }
          s.dispose();
          results.push(ids);
        }
        deepStrictEqual(results[0], results[1], `${name}: 2 threads and 1 thread differ`);
      }
    } finally {
      await one.dispose();
    }
  },
});

Deno.test({
  name: "constrained: finish reasons, log-probabilities before the mask, and bad options",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const schema = { type: "object", properties: { a: { enum: ["x", "y"] } }, required: ["a"] };
    const done = await answer(ask("JSON"), { jsonSchema: schema });
    deepStrictEqual(done.finishReason, "end_of_turn");
    ok(/^\{\s*"a"\s*:\s*"[xy]"\s*\}$/.test(done.text), done.text);
    const cut = await answer(ask("JSON"), { jsonSchema: schema, maxTokens: 2 });
    deepStrictEqual(cut.finishReason, "length");
    const stopped = await answer(ask("JSON"), { jsonSchema: schema, stop: ['"a"'] });
    deepStrictEqual(stopped.finishReason, "stop");
    ok(!stopped.text.includes('"a"'));

    // Log-probabilities: natural logs of the whole distribution, before any mask (float64 here).
    const s = model.createSession();
    const seen: Float32Array[] = [];
    const gen = s.generate(tok.encodeChat(ask("JSON")), {
      jsonSchema: schema,
      logprobs: 3,
      temperature: 1,
      seed: 5,
      onLogits: (l) => seen.push(l.slice()),
    });
    const ids: number[] = [];
    let r = await gen.next();
    for (; !r.done; r = await gen.next()) ids.push(r.value);
    const lps = r.value.logprobs!;
    deepStrictEqual(lps.length, ids.length);
    lps.forEach((lp, i) => {
      const l = seen[i];
      let max = -Infinity;
      for (const x of l) max = Math.max(max, x);
      let sum = 0;
      for (const x of l) sum += Math.exp(x - max);
      const want = l[ids[i]] - max - Math.log(sum);
      ok(Math.abs(lp.logprob - want) < 1e-9, `token ${i}: ${lp.logprob} vs ${want}`);
      deepStrictEqual(lp.top.length, 3);
      ok(lp.top[0].logprob >= lp.top[1].logprob && lp.top[1].logprob >= lp.top[2].logprob);
    });
    s.dispose();

    for (
      const [options, why] of [
        [{ jsonSchema: { type: "integer", minimum: 1 } }, /"minimum" is not supported/],
        [{ grammar: "root ::= x" }, /x, which is not defined/],
        [{ grammar: 'root ::= "a"', jsonSchema: {} }, /not both/],
        [{ logprobs: 21 }, /logprobs must be an integer from 0 to 20/],
      ] as const
    ) {
      let error: Error | undefined;
      try {
        await answer(ask("x"), options);
      } catch (e) {
        error = e as Error;
      }
      ok(error && why.test(error.message), `${JSON.stringify(options)}: ${error?.message}`);
    }
  },
});

Deno.test({
  name: "constrained: (cleanup)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await model.dispose();
  },
});
