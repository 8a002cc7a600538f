// Grammars without a model: GBNF read, JSON Schema compiled, the automaton's language checked
// against independent judges (ajv for schemas, JSON.parse), and token masks against brute force.

import { deepStrictEqual, ok, throws } from "node:assert/strict";
import {
  compileConstraint,
  Grammar,
  GrammarError,
  jsonSchemaToGbnf,
  loadTokenizer,
} from "../mod.ts";
import { DEAD } from "../engine/grammar/automaton.ts";
import { GrammarMatcher, TokenTrie, type Vocabulary } from "../engine/grammar/matcher.ts";
import { Random } from "../engine/sampling.ts";
import { gemmaTokenizerDir } from "./support/gemma_tokenizer.ts";
import { SCHEMAS, validator } from "./support/json_schemas.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url);
const GBNF_FILES = ["arithmetic", "c", "chess", "english", "japanese", "json", "json_arr", "list"];
const gbnf = (name: string) => Deno.readTextFileSync(new URL(`gbnf/${name}.gbnf`, FIXTURES));
/** A random sentence of the grammar, walked byte by byte (any byte the automaton allows, ending
 * with probability 1/4 where it may end); undefined if it grows past maxBytes. */
function randomSentence(g: Grammar, rng: Random, maxBytes = 4000): string | undefined {
  let state = g.initial;
  const bytes: number[] = [];
  while (bytes.length < maxBytes) {
    const next: number[] = [];
    for (let b = 0; b < 256; b++) if (g.move(state, b) !== DEAD) next.push(b);
    if (g.accepting(state) && (next.length === 0 || rng.next() < 0.25)) {
      return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bytes));
    }
    ok(next.length > 0, "a state that can neither go on nor end");
    // Bias towards ASCII a little, so that structure (quotes, commas) comes up often.
    const b = next[Math.floor(rng.next() * next.length)];
    bytes.push(b);
    state = g.move(state, b);
  }
  return undefined;
}

Deno.test("gbnf: llama.cpp's sample grammars compile, and their sentences are what they say", () => {
  for (const name of GBNF_FILES) new Grammar(gbnf(name));
  const json = new Grammar(gbnf("json"));
  ok(json.matches('{"a": [1, 2.5e3, "x\\u00e9", true, null], "b": {"c": "d"}}'));
  ok(!json.matches('{"a" 1}'));
  ok(!json.matches('{"a": 1'));
  // Every sentence of json.gbnf is JSON (JSON.parse is the judge), over many random walks.
  const rng = new Random(1);
  let checked = 0;
  for (let i = 0; i < 300; i++) {
    const s = randomSentence(json, rng);
    if (s === undefined) continue;
    JSON.parse(s);
    checked++;
  }
  ok(checked > 200, `only ${checked} random sentences finished`);
  const arithmetic = new Grammar(gbnf("arithmetic"));
  ok(arithmetic.matches("(1+2)*x3= 9\n"));
  ok(!arithmetic.matches("1+=2\n"));
  const chess = new Grammar(gbnf("chess"));
  ok(chess.matches("1. e4 e5\n2. Nf3 Nc6\n"));
  ok(!chess.matches("1. e9 e5\n2. Nf3 Nc6\n"));
});

Deno.test("gbnf: mistakes are errors that say where, never a grammar that loops", () => {
  const bad: [string, RegExp][] = [
    ['rot ::= "a"', /no rule named root/],
    ['root ::= "a" b', /refers to b, which is not defined/],
    ['root ::= "a', /line 1, column \d+: unterminated string literal/],
    ["root ::= [a-", /unterminated character class/],
    ['root ::= "a"\nroot ::= "b"', /line 2, column 1: rule root is defined twice/],
    ['root ::= x\nx ::= x "a" | "b"', /left-recursive \(x -> x\)/],
    ['root ::= a\na ::= b? a "x" | "z"\nb ::= "y"', /left-recursive/],
    ['root ::= "a"{3,2}', /maximum below its minimum/],
    ['root ::= "\\q"', /unknown escape/],
    ['root ::= ("a"', /expected \)/],
    ["root ::= <[1234]>", /token references/],
    ['root ::= x\nx ::= "a" x', /rule (root|x) can never finish/],
  ];
  for (const [text, why] of bad) {
    throws(() => new Grammar(text), (e: Error) => e instanceof GrammarError && why.test(e.message));
  }
  // Rules that match nothing in a loop are fine (they add nothing), and repetition counts work.
  const g = new Grammar('root ::= ("" | "a"?)* "b"{2,3}');
  ok(g.matches("aabb") && g.matches("bbb") && !g.matches("b") && !g.matches("bbbb"));
});

Deno.test("nesting: groups, patterns and schemas deeper than 100 levels are GrammarErrors, never V8's stack overflow", () => {
  // A request body of 1 MiB nests 100,000 deep; before the limit these were "Maximum call stack
  // size exceeded" (a RangeError with no word about the grammar or the schema).
  const compile = (c: { grammar?: string; jsonSchema?: unknown }) => () => compileConstraint(c);
  const isGrammarError = (pattern: RegExp) => (e: Error) =>
    e instanceof GrammarError && pattern.test(e.message);
  throws(
    compile({ grammar: `root ::= ${"(".repeat(100_000)}"a"${")".repeat(100_000)}` }),
    isGrammarError(/line 1, column 110: groups nest deeper than 100 levels/),
  );
  throws(
    compile({ jsonSchema: { type: "string", pattern: `${"(".repeat(5000)}a${")".repeat(5000)}` } }),
    isGrammarError(/#\/pattern: pattern "\({80}"… \(10001 characters\) at 101: groups nest deeper/),
  );
  let deep: unknown = { type: "string" };
  for (let i = 0; i < 20_000; i++) deep = { type: "array", items: deep };
  throws(compile({ jsonSchema: deep }), isGrammarError(/schemas nest deeper than 100 levels/));
  const defs: Record<string, unknown> = {};
  for (let i = 0; i < 5000; i++) {
    defs[`d${i}`] = i === 4999
      ? { type: "string" }
      : { type: "array", items: { $ref: `#/$defs/d${i + 1}` } };
  }
  throws(
    compile({ jsonSchema: { $defs: defs, $ref: "#/$defs/d0" } }),
    isGrammarError(/schemas nest deeper than 100 levels/),
  );
  // A chain of rules, each naming the next: not nesting in the text, but the compiler follows it.
  const chain = ["root ::= r0"];
  for (let i = 0; i < 30_000; i++) chain.push(`r${i} ::= ${i === 29_999 ? '"a"' : `r${i + 1}`}`);
  throws(compile({ grammar: chain.join("\n") }), isGrammarError(/the grammar nests too deeply/));
  // At the limit, and recursion through $ref (a tree), still compile.
  let ok100 = '"a"';
  for (let i = 0; i < 99; i++) ok100 = `(${ok100})`;
  ok(compileConstraint({ grammar: `root ::= ${ok100}` }));
  const tree = {
    type: "object",
    properties: { name: { type: "string" }, children: { type: "array", items: { $ref: "#" } } },
  };
  ok(compileConstraint({ jsonSchema: tree }));
});

Deno.test("gbnf: characters are matched as UTF-8, whatever their length", () => {
  const g = new Grammar('root ::= [^a-z]{2} "é" [\\u0100-\\U0001F600] .');
  ok(g.matches("日Aé😀x"));
  ok(g.matches("ZZéĀ\u{10FFFF}"));
  ok(!g.matches("aZéĀx"));
  ok(!g.matches("ZZé\u{1F601}x"));
  // A byte sequence that is not UTF-8 (a lone continuation byte) dies at once.
  deepStrictEqual(g.moveAll(g.initial, Uint8Array.of(0x80)), DEAD);
});

Deno.test("json schema: every sentence of each of the 22 test schemas validates (ajv)", () => {
  const rng = new Random(7);
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    const g = new Grammar(jsonSchemaToGbnf(schema));
    const valid = validator(schema);
    let finished = 0;
    for (let i = 0; i < 200; i++) {
      const s = randomSentence(g, rng);
      if (s === undefined) continue;
      finished++;
      ok(valid(JSON.parse(s)), `${name}: ${s} does not validate`);
    }
    ok(finished >= 50, `${name}: only ${finished} of 200 random sentences finished`);
  }
});

Deno.test("json schema: instances written by hand are accepted or refused as the schema says", () => {
  const accepts = (schema: unknown, text: string) =>
    new Grammar(jsonSchemaToGbnf(schema)).matches(text);
  const s = SCHEMAS;
  ok(accepts(s["person"], '{"name": "Al", "age": 3}'));
  ok(accepts(s["person"], '{\n  "name": "Al",\n  "age": -30,\n  "city": "Oslo"\n}'));
  ok(!accepts(s["person"], '{"age": 3}'), "a required property left out");
  ok(
    !accepts(s["person"], '{"name": "Al", "age": 3, "x": 1}'),
    "additionalProperties defaults to false",
  );
  ok(!accepts(s["person"], '{"name": "Al", "age": 3.5}'), "an integer");
  ok(!accepts(s["person"], `{"name": "${"a".repeat(21)}", "age": 3}`), "maxLength");
  ok(
    accepts(
      s["formats"],
      '{"day":"2024-02-29","at":"23:59:59Z","created":"2000-02-29T00:00:00.5+05:30","id":"123e4567-e89b-12d3-a456-426614174000"}',
    ),
  );
  ok(
    !accepts(
      s["formats"],
      '{"day":"2023-02-29","at":"23:59:59Z","created":"2000-02-29T00:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
    ),
    "no 29 February in 2023",
  );
  ok(
    !accepts(
      s["formats"],
      '{"day":"1900-02-29","at":"23:59:59Z","created":"2000-02-29T00:00:00Z","id":"123e4567-e89b-12d3-a456-426614174000"}',
    ),
    "1900 is no leap year",
  );
  ok(
    accepts(
      s["recursive-tree"],
      '{"value": 1, "children": [{"value": 2}, {"value": 3, "children": []}]}',
    ),
  );
  ok(
    !accepts(
      s["recursive-tree"],
      '{"value": 1, "children": [{"value": 2}, {"value": 3}, {"value": 4}]}',
    ),
  );
  ok(accepts(s["phone-pattern"], '"+47-123-4567"') && !accepts(s["phone-pattern"], '"47-12-4567"'));
  ok(accepts(s["escapes-pattern"], '"a\\"\\\\\\n"'), "quote, backslash and newline come escaped");
  ok(accepts(s["unicode"], '{"word": "日本", "short": "😀é"}'));
  ok(!accepts(s["unicode"], '{"word": "日本", "short": "abcd"}'));
  ok(accepts(s["string-lengths"], '"\\u00e9\\"x"'), "an escape is one character");
  ok(!accepts(s["string-lengths"], '"\\ud83d\\ude00"'), "surrogate escapes are left out");
  ok(
    accepts(s["tuple-prefix-items"], '["ab", 1, true]') &&
      !accepts(s["tuple-prefix-items"], '["ab", 1]'),
  );
  // Whitespace is bounded: one newline and up to 20 spaces between tokens.
  ok(accepts(s["person"], `{"name":${" ".repeat(1)}"A", "age":\n${" ".repeat(20)}1}`));
  ok(!accepts(s["person"], `{"name":"A", "age":\n${" ".repeat(21)}1}`));
  ok(!accepts(s["person"], `{"name":"A", "age":\n\n1}`));
  // Older drafts' tuples: items as a list, nothing after it.
  const tuple = { type: "array", items: [{ type: "integer" }, { type: "string", maxLength: 2 }] };
  ok(accepts(tuple, '[1, "ab"]') && !accepts(tuple, '[1, "ab", 2]') && !accepts(tuple, "[1]"));
  ok(
    accepts({ type: "array", maxItems: 0 }, "[]") &&
      !accepts({ type: "array", maxItems: 0 }, "[1]"),
  );
  // Recursion through anyOf (a tail call) is fine; null ends it.
  const nested = {
    anyOf: [{ type: "null" }, { type: "array", items: { $ref: "#" }, maxItems: 1 }],
  };
  ok(accepts(nested, "[[[null]]]") && accepts(nested, "null") && !accepts(nested, "[1]"));
});

Deno.test("json schema: a keyword it cannot enforce is an error that names it", () => {
  const cases: [unknown, RegExp][] = [
    [{ type: "integer", minimum: 0 }, /#\/minimum: the keyword "minimum" is not supported/],
    [
      { type: "object", properties: { a: { type: "number", multipleOf: 2 } } },
      /#\/properties\/a\/multipleOf/,
    ],
    [{ allOf: [{ type: "string" }] }, /"allOf" is not supported/],
    [{ not: { type: "string" } }, /"not" is not supported/],
    [{ type: "array", uniqueItems: true }, /"uniqueItems" is not supported/],
    [{ type: "object", patternProperties: {} }, /"patternProperties"/],
    [{ type: "string", format: "email" }, /the format "email" is not supported/],
    [{ type: "string", pattern: "a(?=b)" }, /lookaround/],
    [{ type: "string", pattern: "(a)\\1" }, /back-references/],
    [{ type: "string", pattern: "\\bword" }, /word boundary/],
    [{ $ref: "other.json#/x" }, /only references inside the schema/],
    [{ $ref: "#/$defs/missing" }, /points to nothing/],
    [{ type: "strin" }, /unknown type "strin"/],
    [{ type: "integer", maxLength: 3 }, /"maxLength" does not apply to type integer/],
    [{ type: "object", required: ["a"] }, /"a" is required but not in properties/],
    [{ enum: [] }, /non-empty array/],
    [false, /matches nothing/],
    [{ $ref: "#" }, /rule root can never finish/],
  ];
  for (const [schema, why] of cases) {
    throws(
      () => new Grammar(jsonSchemaToGbnf(schema)),
      (e: Error) => e instanceof GrammarError && why.test(e.message),
      `${JSON.stringify(schema)} should fail with ${why}`,
    );
  }
});

/** Tokens allowed next, found the slow way: every token's bytes through the automaton. */
function bruteForce(g: Grammar, state: number, vocab: Vocabulary, end: number[]): Set<number> {
  const out = new Set<number>();
  for (let id = 0; id < vocab.vocabSize; id++) {
    if (end.includes(id)) {
      if (g.accepting(state)) out.add(id);
      continue;
    }
    if (vocab.isSpecial(id)) continue;
    const b = vocab.tokenBytes(id);
    if (b.length > 0 && g.moveAll(state, b) !== DEAD) out.add(id);
  }
  return out;
}

function maskSet(bits: Uint32Array, n: number): Set<number> {
  const out = new Set<number>();
  for (let i = 0; i < n; i++) if ((bits[i >>> 5] >>> (i & 31)) & 1) out.add(i);
  return out;
}

Deno.test("masks: the trie walk allows exactly the tokens brute force allows (random vocabulary)", () => {
  // A vocabulary of random byte strings sharing prefixes, a few special tokens, duplicates.
  const rng = new Random(3);
  const alphabet = [...'{}[]":, \n0123456789abcxyz-.\\'].map((c) => c.charCodeAt(0)).concat([
    0xc3,
    0xa9,
    0xe6,
    0x97,
    0xa5,
  ]);
  const tokens: Uint8Array[] = [];
  for (let i = 0; i < 3000; i++) {
    const len = 1 + Math.floor(rng.next() * 6);
    tokens.push(
      Uint8Array.from({ length: len }, () => alphabet[Math.floor(rng.next() * alphabet.length)]),
    );
  }
  tokens.push(tokens[10].slice(), Uint8Array.of(0x22), Uint8Array.of(0x22)); // duplicates
  const special = new Set([0, 1, 2]);
  const vocab: Vocabulary = {
    vocabSize: tokens.length,
    tokenBytes: (id) => tokens[id],
    isSpecial: (id) => special.has(id),
  };
  const trie = new TokenTrie(vocab);
  const end = [1];
  for (const name of ["person", "nested-order", "unicode", "escapes-pattern"]) {
    const g = new Grammar(jsonSchemaToGbnf(SCHEMAS[name]));
    const m = new GrammarMatcher(g, trie, end);
    const walkRng = new Random(name.length);
    // Follow a random path of allowed tokens, comparing masks at every step.
    for (let step = 0; step < 40; step++) {
      const expected = bruteForce(g, m.state, vocab, end);
      deepStrictEqual(maskSet(m.mask(), vocab.vocabSize), expected, `${name} step ${step}`);
      const allowed = [...expected];
      for (const id of allowed) deepStrictEqual(m.allows(id), true);
      if (allowed.length === 0 || (allowed.length === 1 && allowed[0] === 1)) break;
      const pick = allowed.filter((id) => id !== 1);
      m.accept(pick[Math.floor(walkRng.next() * pick.length)]);
    }
  }
});

Deno.test("masks: on Gemma's 262,144-token vocabulary, the same as brute force", async () => {
  const tok = await loadTokenizer(await gemmaTokenizerDir());
  const trie = new TokenTrie(tok);
  const end = [1, 106];
  const g = new Grammar(jsonSchemaToGbnf(SCHEMAS["nested-order"]));
  const m = new GrammarMatcher(g, trie, end);
  // States along a valid answer: at the start, inside a key, inside a pattern, in a number.
  const text = '{"id": 12, "customer": {"name": "Ann"}, "lines": [{"sku": "ABC-1234", "qty": 2}]}';
  const ids = tok.encode(text, { addBos: false });
  let checked = 0;
  for (let i = 0; i <= ids.length; i++) {
    if (i % 4 === 0 || i === ids.length) {
      const expected = bruteForce(g, m.state, tok, end);
      deepStrictEqual(maskSet(m.mask(), tok.vocabSize), expected, `after ${i} tokens`);
      checked++;
    }
    if (i < ids.length) m.accept(ids[i]);
  }
  ok(checked >= 5);
  ok(m.mustEnd, "the answer is complete: only an end token may follow");
  deepStrictEqual(maskSet(m.mask(), tok.vocabSize), new Set(end));
});
