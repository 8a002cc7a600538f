// Building TokenizerData from Hugging Face's tokenizer.json, and a compact binary form of it.
//
// Gemma's tokenizer.json is 33 MB of JSON (262,144 pieces, 514,906 merges as string pairs);
// parsing it takes around a second. The compact form stores the same information as flat arrays
// (merges as id triples, the merge hash table prebuilt), so loading it is a few typed-array views
// and one UTF-8 decode.

import { GgufStrings } from "../formats/gguf.ts";
import { quoteShort, shortJson } from "../formats/quote.ts";
import { pairHash, type TokenizerData } from "./tokenizer.ts";

type Json = Record<string, unknown>;

function fail(where: string, msg: string): never {
  throw new Error(`${where}: ${msg}`);
}

/** Checks that the pipeline is Gemma's (the only one this tokenizer implements). */
function checkPipeline(t: Json, where: string): void {
  const supported = "only Gemma-style tokenizers are supported (BPE with byte fallback, " +
    "' ' → '▁' normalizer, no pre-tokenizer split)";
  const model = t.model as Json | undefined;
  if (!model || model.type !== "BPE") {
    fail(where, `model.type is ${shortJson(model?.type)}; ${supported}`);
  }
  if (model.byte_fallback !== true) {
    fail(where, `model.byte_fallback is ${shortJson(model.byte_fallback)}; ${supported}`);
  }
  if (model.dropout !== null && model.dropout !== undefined && model.dropout !== 0) {
    fail(where, `model.dropout is ${shortJson(model.dropout)}; BPE dropout is not supported`);
  }
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"]) {
    if (model[key]) fail(where, `model.${key} is ${shortJson(model[key])}; ${supported}`);
  }
  if (model.ignore_merges === true) fail(where, `model.ignore_merges is true; ${supported}`);
  const n = t.normalizer as Json | null;
  const isSpaceReplace = (x: Json | null) =>
    x?.type === "Replace" && (x.pattern as Json)?.String === " " && x.content === "▁";
  if (!isSpaceReplace(n)) fail(where, `normalizer ${shortJson(n)}; ${supported}`);
  const p = t.pre_tokenizer as Json | null;
  if (
    p !== null && p !== undefined && !(p.type === "Split" && (p.pattern as Json)?.String === " ")
  ) {
    fail(where, `pre_tokenizer ${shortJson(p)}; ${supported}`);
  }
}

/** Builds tokenizer data from a parsed tokenizer.json. `where` names it in errors. */
export function fromTokenizerJson(t: unknown, where = "tokenizer.json"): TokenizerData {
  if (typeof t !== "object" || t === null) fail(where, "not a JSON object");
  const json = t as Json;
  checkPipeline(json, where);
  const model = json.model as Json;
  const vocab = model.vocab as Record<string, number>;
  if (typeof vocab !== "object" || vocab === null) fail(where, "model.vocab is not an object");
  const size = Object.keys(vocab).length;
  const byId: string[] = new Array(size);
  for (const [piece, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || id < 0 || id >= size || byId[id] !== undefined) {
      fail(
        where,
        `vocabulary ids must be 0..${size - 1} without gaps (piece ${quoteShort(piece)} has ${
          shortJson(id)
        })`,
      );
    }
    byId[id] = piece;
  }
  const rawMerges = model.merges as unknown[];
  if (!Array.isArray(rawMerges)) fail(where, "model.merges is not a list");
  const merges = new Int32Array(rawMerges.length * 3);
  const own = (piece: string) => (Object.hasOwn(vocab, piece) ? vocab[piece] : undefined);
  rawMerges.forEach((m, r) => {
    // A merge is "left right" or ["left", "right"]: two pieces, nothing else.
    const pair = typeof m === "string" ? m.split(" ") : m;
    if (
      !Array.isArray(pair) || pair.length !== 2 ||
      !pair.every((p) => typeof p === "string")
    ) {
      fail(
        where,
        `model.merges[${r}] is ${shortJson(m)}; expected "left right" or ["left", "right"]`,
      );
    }
    const [a, b] = pair as string[];
    const left = own(a), right = own(b), merged = own(a + b);
    if (left === undefined || right === undefined || merged === undefined) {
      fail(where, `model.merges[${r}] (${shortJson(m)}) uses a piece missing from the vocabulary`);
    }
    merges.set([left, right, merged], 3 * r);
  });

  const rawAdded = json.added_tokens ?? [];
  if (!Array.isArray(rawAdded)) {
    fail(where, `added_tokens is ${shortJson(rawAdded)}; expected a list`);
  }
  const idUsedBy = new Map<number, number>();
  const added = (rawAdded as Json[]).map((a, i) => {
    if (
      typeof a !== "object" || a === null || !Number.isInteger(a.id) ||
      typeof a.content !== "string"
    ) {
      fail(where, `added_tokens[${i}] is ${shortJson(a)}; expected { id, content, ... }`);
    }
    if (a.normalized === true || a.lstrip === true || a.rstrip === true || a.single_word === true) {
      fail(
        where,
        `added token ${
          quoteShort(a.content)
        }: normalized/lstrip/rstrip/single_word are not supported`,
      );
    }
    // The Tokenizer checks these too; here the message can say which entry of the file.
    const id = a.id as number;
    if (id < 0 || id >= size + rawAdded.length) {
      fail(
        where,
        `added_tokens[${i}] (${quoteShort(a.content as string)}) has id ${id}, outside the ` +
          `vocabulary and the added tokens after it (0 to ${size + rawAdded.length - 1})`,
      );
    }
    if (idUsedBy.has(id)) {
      fail(
        where,
        `added_tokens[${i}] (${quoteShort(a.content as string)}) has id ${id}, as ` +
          `added_tokens[${idUsedBy.get(id)}] has`,
      );
    }
    idUsedBy.set(id, i);
    return { id, content: a.content as string, special: a.special === true };
  });
  const unk = model.unk_token;
  return buildData(
    joinPieces(byId),
    merges,
    added,
    typeof unk === "string" ? own(unk) ?? 0 : 0,
  );
}

/** Tokenizer data from the pieces (joined, by id), the merges in rank order, the added tokens. */
function buildData(
  joined: { pieces: string; offsets: Uint32Array },
  merges: Int32Array,
  added: TokenizerData["addedTokens"],
  unkId: number,
): TokenizerData {
  const { pieces, offsets } = joined;
  const size = offsets.length - 1;
  const singles: number[] = [];
  for (let id = 0; id < size; id++) {
    const cp = pieces.codePointAt(offsets[id]);
    const length = offsets[id + 1] - offsets[id];
    if (cp !== undefined && length === (cp > 0xffff ? 2 : 1)) singles.push(cp, id);
  }
  // Characters X such that some piece contains X followed by "▁": the text is not cut there.
  const joiners = new Set<string>();
  for (let id = 0; id < size; id++) {
    let spaceAfterFirst = false;
    for (let i = offsets[id] + 1; i < offsets[id + 1] && !spaceAfterFirst; i++) {
      spaceAfterFirst = pieces.charCodeAt(i) === 0x2581;
    }
    if (!spaceAfterFirst) continue;
    const chars = [...pieces.slice(offsets[id], offsets[id + 1])];
    for (let i = 1; i < chars.length; i++) {
      if (chars[i] === "▁" && chars[i - 1] !== "▁") joiners.add(chars[i - 1]);
    }
  }
  return {
    pieces: joined.pieces,
    pieceOffsets: joined.offsets,
    merges,
    mergeTable: buildMergeTable(merges),
    singleChars: Int32Array.from(singles),
    addedTokens: added,
    joinersBeforeSpace: [...joiners].join(""),
    unkId,
  };
}

/** The pieces as one string, and where each begins (piece i ends where i + 1 begins). */
function joinPieces(byId: string[]): { pieces: string; offsets: Uint32Array } {
  const offsets = new Uint32Array(byId.length + 1);
  for (let i = 0; i < byId.length; i++) offsets[i + 1] = offsets[i] + byId[i].length;
  return { pieces: byId.join(""), offsets };
}

/**
 * The first id of each distinct piece, looked up by a range of the joined pieces without making
 * a string: open addressing on a polynomial hash of the UTF-16 code units (h = h·B + unit, mod
 * 2^32), each slot keeping its piece's hash so that candidates are compared unit by unit only when
 * the hashes agree. The hash of any range is found from the prefix hashes of the piece around it
 * in O(1) (`SplitHashes`), which is what splitting every piece at every point needs.
 */
class PieceIndex {
  readonly #slots: Int32Array; // id + 1; 0 = empty
  readonly #hashes: Int32Array; // the hash of the slot's piece
  readonly #shift: number;
  constructor(readonly pieces: string, readonly offsets: Uint32Array) {
    const n = offsets.length - 1;
    let bits = 1;
    while (1 << bits < 2 * n) bits++;
    this.#slots = new Int32Array(1 << bits);
    this.#hashes = new Int32Array(1 << bits);
    this.#shift = 32 - bits;
    for (let id = 0; id < n; id++) {
      const h = rangeHash(pieces, offsets[id], offsets[id + 1]);
      const slot = this.#probe(offsets[id], offsets[id + 1], h);
      if (this.#slots[slot] === 0) {
        this.#slots[slot] = id + 1;
        this.#hashes[slot] = h;
      }
    }
  }

  /** The first id whose piece is pieces[start, end), whose hash is `h`; or -1. */
  find(start: number, end: number, h: number): number {
    return this.#slots[this.#probe(start, end, h)] - 1;
  }

  /** The slot holding pieces[start, end), or the empty slot where it would go. */
  #probe(start: number, end: number, h: number): number {
    const mask = this.#slots.length - 1;
    for (let slot = Math.imul(h, 0x9e3779b1) >>> this.#shift;; slot = (slot + 1) & mask) {
      const id = this.#slots[slot] - 1;
      if (id < 0 || (this.#hashes[slot] === h && this.#equals(id, start, end))) return slot;
    }
  }

  #equals(id: number, start: number, end: number): boolean {
    const s = this.offsets[id];
    if (this.offsets[id + 1] - s !== end - start) return false;
    for (let i = 0; i < end - start; i++) {
      if (this.pieces.charCodeAt(s + i) !== this.pieces.charCodeAt(start + i)) return false;
    }
    return true;
  }
}

const HASH_BASE = 0x01000193;

/** The polynomial hash of text[start, end) (PieceIndex). */
function rangeHash(text: string, start: number, end: number): number {
  let h = 0;
  for (let i = start; i < end; i++) h = (Math.imul(h, HASH_BASE) + text.charCodeAt(i)) | 0;
  return h;
}

/** Prefix hashes of one piece, so that the hash of either side of a split costs O(1). */
class SplitHashes {
  #prefix: Int32Array;
  #power: Int32Array;
  #start = 0;
  #length = 0;
  constructor(maxLength: number) {
    this.#prefix = new Int32Array(maxLength + 1);
    this.#power = new Int32Array(maxLength + 1);
    this.#power[0] = 1;
    for (let i = 1; i <= maxLength; i++) this.#power[i] = Math.imul(this.#power[i - 1], HASH_BASE);
  }
  /** Takes text[start, end) as the piece. */
  set(text: string, start: number, end: number): void {
    this.#start = start;
    this.#length = end - start;
    for (let i = 0; i < this.#length; i++) {
      this.#prefix[i + 1] = (Math.imul(this.#prefix[i], HASH_BASE) + text.charCodeAt(start + i)) |
        0;
    }
  }
  /** The hash of the piece's text before `cut` (an index into the text). */
  left(cut: number): number {
    return this.#prefix[cut - this.#start];
  }
  /** The hash of the piece's text from `cut` on. */
  right(cut: number): number {
    const a = cut - this.#start;
    return (this.#prefix[this.#length] -
      Math.imul(this.#prefix[a], this.#power[this.#length - a])) |
      0;
  }
}

// ---- GGUF (llama.cpp) tokenizer metadata --------------------------------------------------------
// A Gemma GGUF carries the SentencePiece model: tokenizer.ggml.model = "llama", the pieces, a
// score per piece and a type per piece (1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte).
// SentencePiece BPE merges the adjacent pair whose joined piece scores highest. That is BPE whose
// merges are every split of every piece into two pieces, ranked by the joined piece's score (ties
// by id; a piece's splits longer-left first), which is how Hugging Face's converter makes
// tokenizer.json from the same model; so both files give the same ids.

const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, byte: 6 } as const;

/** Tokenizer data from GGUF metadata. `where` names the file in errors. */
export function fromGgufMetadata(meta: Map<string, unknown>, where: string): TokenizerData {
  const model = meta.get("tokenizer.ggml.model");
  if (model !== "llama") {
    fail(
      where,
      `tokenizer.ggml.model ${
        shortJson(model)
      } is not supported (Gemma's SentencePiece model, "llama", is)`,
    );
  }
  const tokens = meta.get("tokenizer.ggml.tokens");
  const scores = meta.get("tokenizer.ggml.scores");
  const types = meta.get("tokenizer.ggml.token_type");
  if (
    !(tokens instanceof GgufStrings) &&
    (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string"))
  ) {
    fail(where, "tokenizer.ggml.tokens is missing or not a list of strings");
  }
  const n = tokens.length;
  if (!Array.isArray(scores) || scores.length !== n) {
    fail(where, `tokenizer.ggml.scores must have ${n} entries`);
  }
  if (!Array.isArray(types) || types.length !== n) {
    fail(where, `tokenizer.ggml.token_type must have ${n} entries`);
  }
  // Pieces by score (higher first, then lower id); each piece's splits with the longer left
  // part first (the order of Hugging Face's converter). Done on one joined string and typed
  // arrays (the GGUF reader gives a long vocabulary as one string already): a string per split
  // and a Map of 262,144 keys cost over 100 MB for a moment, most of a small edge function's
  // memory.
  const joined = tokens instanceof GgufStrings
    ? { pieces: tokens.joined, offsets: tokens.offsets }
    : joinPieces(tokens as string[]);
  const { pieces, offsets } = joined;
  const index = new PieceIndex(pieces, offsets);
  const score = Float64Array.from(scores as number[]);
  const order = Int32Array.from({ length: n }, (_, i) => i)
    .filter((id) => types[id] === TOKEN_TYPE.normal || types[id] === TOKEN_TYPE.userDefined)
    .sort((a, b) => score[b] - score[a] || a - b);
  let found = new Int32Array(1 << 16), count = 0, longest = 0;
  for (let id = 0; id < n; id++) longest = Math.max(longest, offsets[id + 1] - offsets[id]);
  const split = new SplitHashes(longest);
  for (const id of order) {
    const start = offsets[id], end = offsets[id + 1];
    split.set(pieces, start, end);
    for (let cut = end - 1; cut > start; cut--) {
      const c = pieces.charCodeAt(cut);
      if (c >= 0xdc00 && c < 0xe000) continue; // inside a surrogate pair
      const l = index.find(start, cut, split.left(cut));
      if (l < 0) continue;
      const r = index.find(cut, end, split.right(cut));
      if (r < 0) continue;
      if (count + 3 > found.length) {
        const grown = new Int32Array(found.length * 2);
        grown.set(found);
        found = grown;
      }
      found[count++] = l;
      found[count++] = r;
      found[count++] = id;
    }
  }
  const merges = found.slice(0, count);
  const added: TokenizerData["addedTokens"] = [];
  for (let id = 0; id < n; id++) {
    const t = types[id];
    if (t !== TOKEN_TYPE.control && t !== TOKEN_TYPE.userDefined && t !== TOKEN_TYPE.unknown) {
      continue;
    }
    const content = pieces.slice(offsets[id], offsets[id + 1]);
    added.push({ id, content, special: t !== TOKEN_TYPE.userDefined });
  }
  const unk = meta.get("tokenizer.ggml.unknown_token_id");
  return buildData(joined, merges, added, typeof unk === "number" ? unk : 0);
}

/** The piece strings, scores and types of tokenizer data, as GGUF metadata stores them (the
 * inverse of fromGgufMetadata: a piece's score is minus the rank of its first merge). */
export function toGgufTokenizer(
  d: TokenizerData,
): { tokens: string[]; scores: Float32Array; types: Int32Array } {
  const n = d.pieceOffsets.length - 1;
  const tokens = Array.from(
    { length: n },
    (_, i) => d.pieces.slice(d.pieceOffsets[i], d.pieceOffsets[i + 1]),
  );
  const scores = new Float32Array(n);
  const seen = new Uint8Array(n);
  for (let r = 0; r < d.merges.length / 3; r++) {
    const id = d.merges[3 * r + 2];
    if (!seen[id]) {
      seen[id] = 1;
      scores[id] = -(r + 1);
    }
  }
  const types = new Int32Array(n).fill(TOKEN_TYPE.normal);
  for (let i = 0; i < n; i++) if (/^<0x[0-9A-F]{2}>$/.test(tokens[i])) types[i] = TOKEN_TYPE.byte;
  for (const a of d.addedTokens) {
    if (a.id < n) {
      types[a.id] = a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined;
    }
  }
  if (d.unkId < n) types[d.unkId] = TOKEN_TYPE.unknown;
  return { tokens, scores, types };
}

function buildMergeTable(merges: Int32Array): Int32Array {
  const count = merges.length / 3;
  let size = 1;
  while (size < count * 2) size <<= 1;
  const table = new Int32Array(size);
  const mask = size - 1;
  for (let r = 0; r < count; r++) {
    let slot = pairHash(merges[3 * r], merges[3 * r + 1], mask);
    while (table[slot] !== 0) {
      const other = table[slot] - 1;
      // The first (lowest-rank) merge of a pair wins, as in Hugging Face's merge map.
      if (merges[3 * other] === merges[3 * r] && merges[3 * other + 1] === merges[3 * r + 1]) break;
      slot = (slot + 1) & mask;
    }
    if (table[slot] === 0) table[slot] = r + 1;
  }
  return table;
}

// Compact form: "G3TK", version, then sections, each 4-byte aligned:
//   u32 header[8]: magic, version, vocab, merges, table size, singles (pairs), pieces UTF-8 bytes,
//                  meta JSON bytes
//   u32 pieceOffsets[vocab + 1] · i32 merges[3 × merges] · i32 table[size] · i32 singles[2 × n]
//   pieces (UTF-8) · meta JSON (added tokens, joiners, unk)
const MAGIC = 0x4b543347; // "G3TK"
const VERSION = 1;

const align4 = (n: number) => (n + 3) & ~3;

/** Serialises tokenizer data to the compact form. */
export function toCompact(d: TokenizerData): Uint8Array {
  const enc = new TextEncoder();
  const pieceBytes = enc.encode(d.pieces);
  const meta = enc.encode(
    JSON.stringify({ added: d.addedTokens, joiners: d.joinersBeforeSpace, unk: d.unkId }),
  );
  const arrays = [d.pieceOffsets, d.merges, d.mergeTable, d.singleChars];
  const header = new Uint32Array([
    MAGIC,
    VERSION,
    d.pieceOffsets.length - 1,
    d.merges.length / 3,
    d.mergeTable.length,
    d.singleChars.length / 2,
    pieceBytes.length,
    meta.length,
  ]);
  const total = header.byteLength + arrays.reduce((n, a) => n + a.byteLength, 0) +
    align4(pieceBytes.length) + meta.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const a of [header, ...arrays]) {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    at += a.byteLength;
  }
  out.set(pieceBytes, at);
  out.set(meta, at + align4(pieceBytes.length));
  return out;
}

/** Reads the compact form; throws if it is not one (or of another version). */
export function fromCompact(bytes: Uint8Array, where = "tokenizer cache"): TokenizerData {
  if (bytes.byteOffset % 4 !== 0) bytes = bytes.slice();
  const buf = bytes.buffer;
  const base = bytes.byteOffset;
  if (bytes.length < 32) fail(where, "too short");
  const h = new Uint32Array(buf, base, 8);
  if (h[0] !== MAGIC || h[1] !== VERSION) fail(where, "not a compact tokenizer of this version");
  const [, , vocab, merges, tableSize, singles, pieceLen, metaLen] = h;
  let at = base + 32;
  const take = <T>(make: (o: number) => T, bytesLen: number): T => {
    if (at + bytesLen > base + bytes.length) fail(where, "truncated");
    const v = make(at);
    at += bytesLen;
    return v;
  };
  const pieceOffsets = take((o) => new Uint32Array(buf, o, vocab + 1), 4 * (vocab + 1));
  const mergeArr = take((o) => new Int32Array(buf, o, 3 * merges), 12 * merges);
  const mergeTable = take((o) => new Int32Array(buf, o, tableSize), 4 * tableSize);
  const singleChars = take((o) => new Int32Array(buf, o, 2 * singles), 8 * singles);
  const dec = new TextDecoder("utf-8", { ignoreBOM: true });
  const pieces = take((o) => dec.decode(new Uint8Array(buf, o, pieceLen)), align4(pieceLen));
  const meta = JSON.parse(take((o) => dec.decode(new Uint8Array(buf, o, metaLen)), metaLen));
  if (pieces.length !== pieceOffsets[vocab]) fail(where, "pieces do not match their offsets");
  return {
    pieces,
    pieceOffsets,
    merges: mergeArr,
    mergeTable,
    singleChars,
    addedTokens: meta.added,
    joinersBeforeSpace: meta.joiners,
    unkId: meta.unk,
  };
}
