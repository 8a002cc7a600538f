// The fuzzer's cases: for each input kind, how a case's input is made from its seed (a mutation
// of a well-formed base: tiny-a's GGUF, safetensors and config.json; a tokenizer.json cut from
// the real Gemma one, sometimes the real one whole; a chat), and how it is used as a program
// would (load, encode, decode, evaluate, generate, render a chat). What comes out is judged here:
// success, a clean error, or an internal one (a runtime TypeError and the like, a WebAssembly
// trap, or an error that does not name the file).

import { type Gemma3Model, loadModel, loadTokenizer, type Tokenizer } from "../../mod.ts";
import { deepen, type Json, jsonBytes, mutateJson, type Mutation } from "./json_mutate.ts";
import { type GgufParts, mutateGguf, readParts } from "./gguf_mutate.ts";
import { Random } from "./random.ts";

export const KINDS = ["gguf", "safetensors", "config", "tokenizer", "chat"] as const;
export type Kind = typeof KINDS[number];

/** What one case came to, as seen inside the process that ran it. */
export interface CaseReport {
  outcome: "ok" | "error" | "internal";
  /** The error's name and message (cut), when it failed. */
  error?: string;
  /** For a file's error: whether it names the file, and the field (or a byte offset). */
  namesFile?: boolean;
  namesField?: boolean;
  /** What the mutation changed. */
  labels: string[];
  /** Where an internal error was thrown (the top of its stack). */
  stack?: string;
}

/** The well-formed inputs every case starts from (read once per process). */
export interface Bases {
  gguf: GgufParts;
  safetensors: Uint8Array;
  config: Json;
  /** A tokenizer.json cut from the real one (the first ids), and the real one's text. */
  smallTokenizer: Json;
  realTokenizerPath: string;
  tokenizerConfig: Json;
  /** Tokenizers for the chat kind: Gemma's template built in, and the same rendered by Jinja. */
  builtInChat: Tokenizer;
  jinjaChat: Tokenizer;
}

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

/** Keeps ids below `keep`, and the merges among what is kept: a tokenizer a tenth the size. */
export function cutTokenizer(full: Record<string, unknown>, keep: number): Json {
  const model = full.model as { vocab: Record<string, number>; merges: [string, string][] };
  const vocab = Object.fromEntries(Object.entries(model.vocab).filter(([, id]) => id < keep));
  const has = (piece: string) => Object.hasOwn(vocab, piece);
  const merges = model.merges.filter(([a, b]) => has(a) && has(b) && has(a + b));
  return {
    ...full,
    model: { ...model, vocab, merges },
    added_tokens: (full.added_tokens as { id: number }[]).filter((t) => t.id < keep),
  } as Json;
}

export async function readBases(tokenizerDir: string, work: string): Promise<Bases> {
  const full = JSON.parse(await Deno.readTextFile(`${tokenizerDir}tokenizer.json`));
  const tokenizerConfig = JSON.parse(
    await Deno.readTextFile(`${tokenizerDir}tokenizer_config.json`),
  );
  const smallTokenizer = cutTokenizer(full, 8000);
  // Two chat tokenizers: Gemma's own template (built in) and one Jinja must render.
  const chatDir = async (name: string, template: string) => {
    const dir = `${work}/${name}`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(smallTokenizer));
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify({ chat_template: template }),
    );
    return await loadTokenizer(dir, { cache: false });
  };
  const template = await Deno.readTextFile(`${FIXTURES}tokenizer/chat_template.jinja`);
  return {
    gguf: readParts(await Deno.readFile(`${FIXTURES}tiny-a/model.gguf`)),
    safetensors: await Deno.readFile(`${FIXTURES}tiny-a/model.safetensors`),
    config: JSON.parse(await Deno.readTextFile(`${FIXTURES}tiny-a/config.json`)),
    smallTokenizer,
    realTokenizerPath: `${tokenizerDir}tokenizer.json`,
    tokenizerConfig,
    builtInChat: await chatDir("chat-builtin", template),
    jinjaChat: await chatDir("chat-jinja", `${template}{# rendered by Jinja #}`),
  };
}

// Messages from V8 and WebAssembly that mean our code met something it did not expect.
const RUNTIME_ERRORS = new RegExp(
  [
    "Cannot read propert",
    "Cannot set propert",
    "Cannot create property",
    "Cannot convert",
    "Cannot mix BigInt",
    "is not iterable",
    "is not a function",
    "is not a constructor",
    "is not defined",
    "before initialization",
    "Invalid array length",
    "Invalid typed array length",
    "Invalid string length",
    "Invalid DataView",
    "Maximum call stack",
    "allocation failed",
    "out of memory",
    "memory access out of bounds",
    "unreachable",
    "Offset is outside the bounds",
    "out of bounds",
    "Reduce of empty array",
    "Converting circular structure",
    "Do not know how to serialize",
    "\\(intermediate value\\)",
  ].join("|"),
);

function judge(e: unknown, labels: string[], file?: string): CaseReport {
  if (!(e instanceof Error)) {
    return { outcome: "internal", error: `thrown non-Error: ${String(e).slice(0, 200)}`, labels };
  }
  const text = `${e.name}: ${e.message}`;
  const error = text.length > 400 ? `${text.slice(0, 400)}… (${text.length} chars)` : text;
  const stack = e.stack?.split("\n").slice(1, 8).join("\n");
  if (e.name === "RuntimeError" || RUNTIME_ERRORS.test(e.message)) {
    return { outcome: "internal", error, labels, stack };
  }
  if (file === undefined) return { outcome: "error", error, labels };
  const namesFile = e.message.includes(file);
  // A random byte changed or cut (GGUF and JSON alike) cannot be traced to a field: whether the
  // message names one is not judged.
  if (labels.includes("(bytes)")) {
    return namesFile
      ? { outcome: "error", error, namesFile, labels }
      : { outcome: "internal", error, namesFile, labels, stack };
  }
  // A label is a key on the mutated path, or (GGUF) "what of NAME": NAME is the field.
  // Names with control characters appear escaped in messages, as JSON escapes them.
  const named = (x: string) =>
    x !== "" && (e.message.includes(x) || e.message.includes(JSON.stringify(x).slice(1, -1)));
  const namesField = labels.some((l) => named(l) || named(l.replace(/^.* of (key )?/, ""))) ||
    // A file cut short has no field to name: saying it is cut short, or too short, is the point.
    (labels.includes("(truncated)") && /truncated|too short|past the end/.test(e.message)) ||
    /\b(offset|byte|position|line|column|at) \d/.test(e.message) ||
    /not valid JSON|is not JSON|invalid JSON|Unexpected|UTF-8/i.test(e.message);
  return namesFile
    ? { outcome: "error", error, namesFile, namesField, labels }
    : { outcome: "internal", error, namesFile, namesField, labels, stack };
}

/** Uses a loaded model as a program would: encode, evaluate, generate a few tokens. */
async function useModel(model: Gemma3Model): Promise<void> {
  let ids = [2, 5, 7, 9];
  let tok: Tokenizer | undefined;
  try {
    tok = model.tokenizer;
  } catch (e) {
    if (!/loaded without a tokenizer/.test((e as Error).message)) throw e;
  }
  if (tok) {
    ids = tok.encode("Hello, world! <start_of_turn>user\nhi").slice(0, 24);
    tok.decode(ids);
  }
  // A config may allow fewer positions than 64 (max_position_embeddings 1 is a model).
  const contextLength = Math.min(64, model.config.maxPositionEmbeddings);
  ids = ids.slice(0, contextLength);
  const session = model.createSession({ contextLength });
  try {
    await session.eval(ids);
    const maxTokens = Math.min(3, contextLength - ids.length);
    if (maxTokens > 0) {
      const gen = session.generate([], { maxTokens, temperature: 0 });
      while (!(await gen.next()).done) { /* the tokens */ }
    }
  } finally {
    session.dispose();
  }
}

/** A document's JSON text, sometimes damaged as bytes (then labelled "(bytes)"). */
function damagedJson(doc: Json, r: Random, labels: string[]): Uint8Array {
  const { bytes, damaged } = jsonBytes(doc, r);
  if (damaged) labels.push("(bytes)");
  return bytes;
}

function labelsOf(mutations: Mutation[]): string[] {
  // Every key on the path (the field, what holds it: a tensor's name, "pre_tokenizer") but
  // tokenizer.json's "model" above the field, which many an unrelated message names
  // ("model.merges[3]").
  return mutations.flatMap((m) =>
    m.keys.filter((k, i) => k !== "model" || i === m.keys.length - 1)
  );
}

/** Texts the tokenizer kind encodes. */
const TEXTS = [
  "Hello, world!",
  "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n",
  "  spaces\tand\nnewlines  ",
  "日本語 and emoji 🙂🙃, and a lone \ud800 surrogate",
  "<bos><eos><pad><unk><mask>",
];

/** Makes case `index` of `kind` from `seed` and runs it in `dir` (a fresh folder). */
export async function runCase(
  kind: Kind,
  seed: number,
  index: number,
  bases: Bases,
  dir: string,
): Promise<CaseReport> {
  const r = new Random(seed, kind, index);
  if (kind === "gguf") {
    const { bytes, labels } = mutateGguf(bases.gguf, r);
    const file = `${dir}/model.gguf`;
    await Deno.writeFile(file, bytes);
    return await loadAndUse(file, labels, "model.gguf");
  }
  if (kind === "safetensors" || kind === "config") {
    let labels: string[];
    let weights: Uint8Array = bases.safetensors;
    let config: Uint8Array = new TextEncoder().encode(JSON.stringify(bases.config));
    if (kind === "config") {
      const m = mutateJson(bases.config, r, CONFIG_FOCUS);
      labels = labelsOf(m.mutations);
      config = damagedJson(m.doc, r, labels);
    } else {
      const m = mutateSafetensors(bases.safetensors, r);
      labels = m.labels;
      weights = m.bytes;
    }
    await Deno.writeFile(`${dir}/config.json`, config);
    await Deno.writeFile(`${dir}/model.safetensors`, weights);
    return await loadAndUse(dir, labels, kind === "config" ? "config.json" : "model.safetensors");
  }
  if (kind === "tokenizer") return await tokenizerCase(r, index, bases, dir);
  return chatCase(r, bases);
}

async function loadAndUse(source: string, labels: string[], file: string): Promise<CaseReport> {
  let model: Gemma3Model | undefined;
  try {
    model = await loadModel(source, { threads: 1, backend: "wasm" });
    await useModel(model);
    return { outcome: "ok", labels };
  } catch (e) {
    return judge(e, labels, file);
  } finally {
    await model?.dispose();
  }
}

const CONFIG_FOCUS = [
  "num_hidden_layers",
  "layer_types",
  "hidden_size",
  "head_dim",
  "num_attention_heads",
  "num_key_value_heads",
  "intermediate_size",
  "vocab_size",
  "sliding_window",
  "rope_theta",
  "rope_local_base_freq",
  "rope_scaling",
  "max_position_embeddings",
  "query_pre_attn_scalar",
  "rms_norm_eps",
  "model_type",
  "architectures",
  "final_logit_softcapping",
  "torch_dtype",
  "tie_word_embeddings",
  "_sliding_window_pattern",
];

/** A safetensors file with its header (JSON) mutated, or its length or data made to lie. */
function mutateSafetensors(base: Uint8Array, r: Random): { bytes: Uint8Array; labels: string[] } {
  const n = Number(new DataView(base.buffer, base.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(base.subarray(8, 8 + n)));
  let data = base.subarray(8 + n);
  const m = mutateJson(header, r, ["dtype", "shape", "data_offsets", "__metadata__"]);
  const labels = labelsOf(m.mutations);
  const text = damagedJson(m.doc, r, labels);
  let length = BigInt(text.length);
  if (r.chance(0.15)) {
    length = BigInt.asUintN(
      64,
      BigInt(r.pick([0, 1, 7, 2 ** 31, 2 ** 53, 2 ** 63, text.length + 8, text.length - 1])),
    );
    labels.push("header length");
  }
  if (r.chance(0.1)) {
    data = data.subarray(0, r.int(data.length));
    labels.push("(truncated)");
  }
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, length, true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return { bytes: out, labels };
}

const TOKENIZER_FOCUS = [
  "model",
  "vocab",
  "merges",
  "added_tokens",
  "id",
  "content",
  "special",
  "normalizer",
  "pre_tokenizer",
  "decoder",
  "type",
  "byte_fallback",
  "unk_token",
  "chat_template",
  "bos_token",
  "eos_token",
];

async function tokenizerCase(
  r: Random,
  index: number,
  bases: Bases,
  dir: string,
): Promise<CaseReport> {
  // One case in a hundred mutates the real tokenizer.json (262,144 pieces, 33 MB) whole.
  const real = index % 100 === 99;
  const base = real
    ? JSON.parse(await Deno.readTextFile(bases.realTokenizerPath)) as Json
    : bases.smallTokenizer;
  let file = "tokenizer.json";
  let labels: string[];
  if (r.chance(0.2)) {
    // tokenizer_config.json: its chat template, its special-token names.
    const m = mutateJson(bases.tokenizerConfig, r, TOKENIZER_FOCUS);
    labels = labelsOf(m.mutations);
    file = "tokenizer_config.json";
    await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(base));
    await Deno.writeFile(`${dir}/tokenizer_config.json`, damagedJson(m.doc, r, labels));
  } else {
    const m = mutateJson(base, r, TOKENIZER_FOCUS, !real); // the real one was parsed afresh
    labels = labelsOf(m.mutations);
    await Deno.writeFile(`${dir}/tokenizer.json`, damagedJson(m.doc, r, labels));
  }
  let tok: Tokenizer;
  try {
    tok = await loadTokenizer(dir, { cache: r.chance(0.5) });
  } catch (e) {
    return judge(e, labels, file);
  }
  try {
    for (const text of TEXTS) {
      const ids = tok.encode(text, { specialTokens: r.chance(0.5) ? "parse" : "plain" });
      tok.decode(ids, { skipSpecialTokens: r.chance(0.5) });
      const stream = tok.streamDecoder();
      for (const id of ids) stream.push(id);
      stream.flush();
    }
    // Ids anywhere in the vocabulary decode.
    tok.decode(Array.from({ length: 64 }, () => r.int(tok.vocabSize)));
    tok.encodeChat([{ role: "user", content: "Hi" }]);
    return { outcome: "ok", labels };
  } catch (e) {
    // After a successful load, an error is about the input or the template: judged without
    // asking for a file name, unless it is the template's (which must name its file).
    const message = (e as Error)?.message ?? "";
    return judge(e, labels, /chat template/.test(message) ? file : undefined);
  }
}

// A chat as a program would send it: a system prompt, turns, parts.
const BASE_CHAT: Json = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: [{ type: "text", text: "Hello." }] },
  { role: "user", content: [{ type: "text", text: "Name a colour." }, { type: "image" }] },
];

/** Values only JavaScript has, which a caller might pass by mistake. */
function jsOnlyValue(r: Random): unknown {
  switch (r.int(9)) {
    case 0:
      return undefined;
    case 1:
      return 5n;
    case 2:
      return Symbol("s");
    case 3:
      return () => "x";
    case 4:
      return new Date(0);
    case 5:
      return Object.create(null);
    case 6: {
      const o: Record<string, unknown> = { role: "user" };
      o.content = [o]; // a cycle
      return o;
    }
    case 7:
      return new Uint8Array(4);
    default:
      return [, , ,]; // holes
  }
}

function chatCase(r: Random, bases: Bases): CaseReport {
  const m = mutateJson(BASE_CHAT, r, ["role", "content", "type", "text"]);
  const labels = labelsOf(m.mutations);
  let messages = deepen(m.doc) as unknown[];
  if (Array.isArray(messages) && r.chance(0.15)) {
    // Something only JavaScript can hold, in place of a message, a content or a part.
    const i = r.int(Math.max(1, messages.length));
    const where = r.int(3);
    const msg = messages[i] as Record<string, unknown> | undefined;
    if (where === 0 || typeof msg !== "object" || msg === null) messages[i] = jsOnlyValue(r);
    else if (where === 1) msg.content = jsOnlyValue(r);
    else msg.content = [{ type: "text", text: jsOnlyValue(r) }];
  }
  if (r.chance(0.05)) {
    // Sizes: many parts, many messages, or one very long text.
    const n = r.size(200_000);
    messages = r.pick([
      [{ role: "user", content: Array.from({ length: n }, () => ({ type: "text", text: "p" })) }],
      Array.from({ length: n }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: "m" })),
      [{ role: "user", content: "word ".repeat(n * 10) }],
    ]);
  }
  const tok = r.chance(0.5) ? bases.builtInChat : bases.jinjaChat;
  try {
    const ids = tok.encodeChat(messages as never);
    tok.decode(ids);
    tok.applyChatTemplate(messages as never, { addGenerationPrompt: r.chance(0.5) });
    return { outcome: "ok", labels };
  } catch (e) {
    return judge(e, labels);
  }
}
