// The Gemma 3 tokenizer: byte-fallback BPE over Hugging Face's tokenizer.json, our own.
//
// The pipeline of Gemma's tokenizer.json, in order:
//   1. added tokens (<bos>, <start_of_turn>, "\n\n", <unused7>, ...) are cut out of the raw text,
//      leftmost-longest;
//   2. the rest is normalized: every " " becomes "▁" (U+2581);
//   3. BPE: start from single characters (a character missing from the vocabulary becomes its
//      UTF-8 bytes, the <0xXX> pieces), then apply merges, lowest rank first, leftmost on a tie.
// There is no pre-tokenizer split, so in principle a merge may span any two characters. In the
// Gemma vocabulary no piece contains "▁" right after another character except a handful (one:
// ">▁</"), so the text can be cut before every "▁" that follows a character outside that
// handful: no merge can cross such a cut, the result is identical, and words repeat, so each
// distinct word is encoded once and cached. The cut set is derived from the vocabulary itself.
//
// Decoding reverses it: pieces are concatenated, "▁" becomes " ", runs of <0xXX> bytes are decoded
// as UTF-8 (a run that is not valid UTF-8 gives one U+FFFD per byte, as the Hugging Face decoder
// does).
//
// The tokenizer is built from a compact binary form (see format.ts) that loads in a few
// milliseconds; parsing the 33 MB JSON is done once and cached.

import { describeValue, quoteShort } from "../formats/quote.ts";
import { type ChatMessage, ChatTemplate } from "./chat_template.ts";

/** Everything the tokenizer needs, as flat arrays. */
export interface TokenizerData {
  /** All vocabulary pieces concatenated; piece i is pieces.slice(pieceOffsets[i], pieceOffsets[i + 1]). */
  pieces: string;
  pieceOffsets: Uint32Array;
  /** Merges in rank order: [left, right, merged] ids, three per merge. */
  merges: Int32Array;
  /** Open-addressing table: slot → merge rank + 1 (0: empty), keyed by (left, right). */
  mergeTable: Int32Array;
  /** Single-character pieces: [code point, id] pairs. */
  singleChars: Int32Array;
  /** Tokens matched in raw text before BPE. Ids may lie past the vocabulary (<image_soft_token>). */
  addedTokens: { id: number; content: string; special: boolean }[];
  /** Characters after which a "▁" may be joined by a merge (so the text is not cut there). */
  joinersBeforeSpace: string;
  /** Id of <unk>, used when a byte piece is missing (never for Gemma). */
  unkId: number;
}

/** Options of `encode`. */
export interface EncodeOptions {
  /** Prepend <bos> (default true, as the Hugging Face tokenizer does). */
  addBos?: boolean;
  /** "parse" (default): special-token text such as "<start_of_turn>" in the input becomes that
   * token. "plain": special tokens are spelled out as ordinary text (for untrusted input). */
  specialTokens?: "parse" | "plain";
}

/** Options of `decode`. */
export interface DecodeOptions {
  /** Leave out special tokens (<bos>, <eos>, <start_of_turn>, ... as marked in tokenizer.json). */
  skipSpecialTokens?: boolean;
}

const SPACE = 0x20;
const WORD_START = 0x2581; // ▁

/** Hash of a merge pair; the table size is a power of two (mask = size - 1). */
export function pairHash(left: number, right: number, mask: number): number {
  return ((Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x632be5ab, 0x85ebca77)) >>> 7) & mask;
}

interface AddedGroup {
  /** Every token of the group is `runChar` repeated: match by counting the run. */
  run: boolean;
  /** Distinct lengths, longest first. */
  lengths: number[];
  byText: Map<string, number>;
}

/** A Gemma 3 tokenizer: encode, decode, streaming decode. */
export class Tokenizer {
  readonly #d: TokenizerData;
  readonly #mask: number;
  readonly #bmp: Int32Array;
  readonly #astral = new Map<number, number>();
  readonly #byteIds: Int32Array;
  readonly #special: Uint8Array;
  readonly #pieceCache: (string | undefined)[];
  readonly #byteOf: Int16Array;
  #groups: Map<number, AddedGroup>[] = [];
  readonly #joiners: Set<number>;
  #wordCache = new Map<string, number[]>();
  // Scratch of the BPE, grown as needed.
  #sym = new Int32Array(256);
  #prev = new Int32Array(256);
  #next = new Int32Array(256);
  #heap = new Float64Array(256);

  /** Vocabulary size (number of pieces; added tokens may have ids past it). */
  readonly vocabSize: number;
  /** Id of <bos>. */
  readonly bosId: number;
  /** Id of <eos>. */
  readonly eosId: number;
  /** Id of <end_of_turn>, which ends a chat turn (or -1 if absent). */
  readonly endOfTurnId: number;

  /** The chat template (the model's own, or Gemma 3's official one). */
  readonly chatTemplate: ChatTemplate;

  /** A tokenizer over built data (see `loadTokenizer`, which is how one is normally made). */
  constructor(data: TokenizerData, chatTemplate?: ChatTemplate) {
    this.#d = data;
    this.chatTemplate = chatTemplate ?? ChatTemplate.gemma3();
    this.#mask = data.mergeTable.length - 1;
    this.vocabSize = data.pieceOffsets.length - 1;
    this.#bmp = new Int32Array(65536).fill(-1);
    for (let i = 0; i < data.singleChars.length; i += 2) {
      const cp = data.singleChars[i];
      if (cp < 65536) this.#bmp[cp] = data.singleChars[i + 1];
      else this.#astral.set(cp, data.singleChars[i + 1]);
    }
    // Added tokens are pieces of the vocabulary or come right after it (Gemma's tokenizer.json
    // puts <image_soft_token> at 262144): an id past that (a file could say 2^31) would size the
    // tables below, and two tokens with one id would make decode ambiguous.
    const limit = this.vocabSize + data.addedTokens.length;
    const seen = new Set<number>();
    let maxId = this.vocabSize - 1;
    for (const t of data.addedTokens) {
      if (!Number.isInteger(t.id) || t.id < 0 || t.id >= limit) {
        throw new RangeError(
          `added token ${quoteShort(t.content)} has id ${t.id}, outside the vocabulary and the ` +
            `added tokens after it (0 to ${limit - 1})`,
        );
      }
      if (seen.has(t.id)) {
        throw new RangeError(`added token ${quoteShort(t.content)}: id ${t.id} is used twice`);
      }
      seen.add(t.id);
      maxId = Math.max(maxId, t.id);
    }
    this.#special = new Uint8Array(maxId + 1);
    this.#pieceCache = new Array(maxId + 1);
    for (const t of data.addedTokens) {
      if (t.special) this.#special[t.id] = 1;
      this.#pieceCache[t.id] = t.content;
    }
    // Byte pieces <0x00>..<0xFF>, found by name.
    this.#byteIds = new Int32Array(256).fill(data.unkId);
    this.#byteOf = new Int16Array(this.vocabSize).fill(-1);
    for (let id = 0; id < this.vocabSize; id++) {
      const start = data.pieceOffsets[id];
      if (
        data.pieceOffsets[id + 1] - start === 6 && data.pieces.startsWith("<0x", start) &&
        data.pieces[start + 5] === ">"
      ) {
        const b = parseInt(data.pieces.slice(start + 3, start + 5), 16);
        if (b >= 0 && b < 256) {
          this.#byteIds[b] = id;
          this.#byteOf[id] = b;
        }
      }
    }
    this.#joiners = new Set([...data.joinersBeforeSpace].map((c) => c.codePointAt(0)!));
    const idOf = (s: string) => data.addedTokens.find((t) => t.content === s)?.id ?? -1;
    this.bosId = idOf("<bos>");
    this.eosId = idOf("<eos>");
    this.endOfTurnId = idOf("<end_of_turn>");
  }

  /** The piece of a token id as stored (e.g. "▁the", "<0x0A>", "<start_of_turn>"). */
  piece(id: number): string {
    let p = this.#pieceCache[id];
    if (p === undefined) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`token id ${id} is not in the vocabulary`);
      }
      p = this.#d.pieces.slice(this.#d.pieceOffsets[id], this.#d.pieceOffsets[id + 1]);
      this.#pieceCache[id] = p;
    }
    return p;
  }

  /** Whether `id` is a special token (as marked in tokenizer.json). */
  isSpecial(id: number): boolean {
    return this.#special[id] === 1;
  }

  /** Text → token ids. Invalid UTF-16 (lone surrogates) is replaced by U+FFFD first. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (typeof text !== "string") {
      throw new TypeError(`encode: text must be a string, got ${describeValue(text)}`);
    }
    options = optionsObject(options, "encode: options");
    if (options.addBos !== undefined && typeof options.addBos !== "boolean") {
      throw new TypeError(
        `encode: addBos must be true or false, got ${describeValue(options.addBos)}`,
      );
    }
    if (
      options.specialTokens !== undefined && !["parse", "plain"].includes(options.specialTokens)
    ) {
      throw new TypeError(
        `encode: specialTokens must be "parse" or "plain", got ${
          describeValue(options.specialTokens)
        }`,
      );
    }
    const addBos = options.addBos ?? true;
    if (addBos && this.bosId < 0) {
      throw new Error("encode: this tokenizer has no <bos> token; pass { addBos: false }");
    }
    const s = wellFormed(text);
    const out: number[] = [];
    if (addBos) out.push(this.bosId);
    const groups = this.#addedGroups(options.specialTokens === "plain");
    let segmentStart = 0;
    for (let i = 0; i < s.length;) {
      const g = groups.get(s.charCodeAt(i));
      const match = g ? matchAdded(g, s, i) : null;
      if (match) {
        if (i > segmentStart) this.#encodeSegment(s, segmentStart, i, out);
        out.push(match.id);
        i += match.length;
        segmentStart = i;
      } else i++;
    }
    if (s.length > segmentStart) this.#encodeSegment(s, segmentStart, s.length, out);
    return out;
  }

  #addedGroups(plain: boolean): Map<number, AddedGroup> {
    const key = plain ? 1 : 0;
    if (this.#groups[key]) return this.#groups[key];
    const groups = new Map<number, AddedGroup>();
    for (const t of this.#d.addedTokens) {
      if ((plain && t.special) || t.content === "") continue;
      const first = t.content.charCodeAt(0);
      let g = groups.get(first);
      if (!g) groups.set(first, g = { run: true, lengths: [], byText: new Map() });
      g.byText.set(t.content, t.id);
      if (![...t.content].every((c) => c.charCodeAt(0) === first && c.length === 1)) g.run = false;
    }
    for (const g of groups.values()) {
      g.lengths = [...new Set([...g.byText.keys()].map((k) => k.length))].sort((a, b) => b - a);
    }
    this.#groups[key] = groups;
    return groups;
  }

  /** Normalizes s[start, end) (" " → "▁"), cuts it into words, and encodes each. */
  #encodeSegment(s: string, start: number, end: number, out: number[]): void {
    let wordStart = start;
    let prev = -1;
    for (let i = start; i < end; i++) {
      let c = s.charCodeAt(i);
      if (c === SPACE) c = WORD_START;
      if (c === WORD_START && i > wordStart && prev !== WORD_START && !this.#joiners.has(prev)) {
        this.#encodeWord(normalize(s, wordStart, i), out);
        wordStart = i;
      }
      prev = c;
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < end) {
        prev = s.codePointAt(i)!;
        i++;
      }
    }
    if (end > wordStart) this.#encodeWord(normalize(s, wordStart, end), out);
  }

  #encodeWord(word: string, out: number[]): void {
    const cached = this.#wordCache.get(word);
    if (cached) {
      for (const id of cached) out.push(id);
      return;
    }
    const ids = this.#bpe(word);
    if (this.#wordCache.size > 200_000) this.#wordCache.clear();
    this.#wordCache.set(word, ids);
    for (const id of ids) out.push(id);
  }

  /** The rank of merging (left, right), or -1. */
  #rank(left: number, right: number): number {
    const { mergeTable, merges } = this.#d;
    let slot = pairHash(left, right, this.#mask);
    for (;;) {
      const m = mergeTable[slot];
      if (m === 0) return -1;
      const r = m - 1;
      if (merges[3 * r] === left && merges[3 * r + 1] === right) return r;
      slot = (slot + 1) & this.#mask;
    }
  }

  /** Byte-fallback BPE of one word, with a binary heap of candidate merges keyed (rank, pos). */
  #bpe(word: string): number[] {
    // Symbols: one per character, or one per UTF-8 byte of a character not in the vocabulary.
    const cap = word.length * 4 + 1;
    if (this.#sym.length < cap) {
      this.#sym = new Int32Array(cap);
      this.#prev = new Int32Array(cap);
      this.#next = new Int32Array(cap);
      this.#heap = new Float64Array(2 * cap);
    }
    const sym = this.#sym, prev = this.#prev, next = this.#next, heap = this.#heap;
    let n = 0;
    for (let i = 0; i < word.length; i++) {
      let cp = word.charCodeAt(i);
      if (cp >= 0xd800 && cp < 0xdc00 && i + 1 < word.length) {
        cp = word.codePointAt(i)!;
        i++;
      }
      const id = cp < 65536 ? this.#bmp[cp] : (this.#astral.get(cp) ?? -1);
      if (id >= 0) sym[n++] = id;
      else n = pushUtf8(cp, this.#byteIds, sym, n);
    }
    if (n === 1) return [sym[0]];
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    // Heap entries: rank * 2^26 + pos (positions below 2^26 = 67M symbols).
    const POS = 67108864;
    let size = 0;
    const push = (key: number) => {
      let i = size++;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p] <= key) break;
        heap[i] = heap[p];
        i = p;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0];
      const last = heap[--size];
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && heap[c + 1] < heap[c]) c++;
        if (heap[c] >= last) break;
        heap[i] = heap[c];
        i = c;
      }
      heap[i] = last;
      return top;
    };
    if (n > POS) throw new Error(`a single word of ${n} symbols is too long to encode`);
    for (let i = 0; i + 1 < n; i++) {
      const r = this.#rank(sym[i], sym[i + 1]);
      if (r >= 0) push(r * POS + i);
    }
    const merges = this.#d.merges;
    while (size > 0) {
      const key = pop();
      const rank = Math.floor(key / POS);
      const pos = key - rank * POS;
      const right = next[pos];
      // Skip entries made stale by earlier merges.
      if (
        sym[pos] < 0 || right < 0 || merges[3 * rank] !== sym[pos] ||
        merges[3 * rank + 1] !== sym[right]
      ) continue;
      sym[pos] = merges[3 * rank + 2];
      sym[right] = -1;
      next[pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = pos;
      if (prev[pos] >= 0) {
        const r = this.#rank(sym[prev[pos]], sym[pos]);
        if (r >= 0) push(r * POS + prev[pos]);
      }
      if (next[pos] >= 0) {
        const r = this.#rank(sym[pos], sym[next[pos]]);
        if (r >= 0) push(r * POS + pos);
      }
    }
    const ids: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) ids.push(sym[i]);
    return ids;
  }

  /** One token's bytes of text: a byte piece's byte, else its piece as UTF-8 ("▁" as " "). */
  tokenBytes(id: number): Uint8Array {
    const b = id >= 0 && id < this.vocabSize ? this.#byteOf[id] : -1;
    if (b >= 0) return Uint8Array.of(b);
    return new TextEncoder().encode(this.piece(id).replaceAll("▁", " "));
  }

  /** Token ids → text. Byte pieces are decoded as UTF-8; "▁" becomes " ". */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    if (ids === null || typeof ids !== "object" || typeof ids.length !== "number") {
      throw new TypeError(`decode: ids must be an array of token ids, got ${describeValue(ids)}`);
    }
    options = optionsObject(options, "decode: options");
    const skip = options.skipSpecialTokens ?? false;
    let text = "";
    const bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (typeof id !== "number" || !Number.isInteger(id)) {
        throw new TypeError(
          `decode: ids[${i}] is ${describeValue(id)}, not a token id (an integer)`,
        );
      }
      if (skip && this.#special[id] === 1) continue;
      const b = id < this.vocabSize && id >= 0 ? this.#byteOf[id] : -1;
      if (b >= 0) {
        bytes.push(b);
        continue;
      }
      if (bytes.length) {
        text += decodeByteRun(bytes);
        bytes.length = 0;
      }
      text += this.piece(id).replaceAll("▁", " ");
    }
    if (bytes.length) text += decodeByteRun(bytes);
    return text;
  }

  /**
   * Renders a conversation with the chat template. The result already starts with "<bos>": encode
   * it with `{ addBos: false }`.
   */
  applyChatTemplate(
    messages: ChatMessage[],
    options: { addGenerationPrompt?: boolean } = {},
  ): string {
    return this.chatTemplate.render(messages, { ...options, bosToken: "<bos>", eosToken: "<eos>" });
  }

  /** The token ids of a conversation rendered with the chat template and the prompt for the
   * model's answer: what `model.chat` and `cli.ts run` evaluate. */
  encodeChat(messages: ChatMessage[]): number[] {
    return this.encode(this.applyChatTemplate(messages, { addGenerationPrompt: true }), {
      addBos: false,
    });
  }

  /** A decoder for a stream of ids that never emits half a character. */
  streamDecoder(options: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, this.#byteOf, options.skipSpecialTokens ?? false);
  }
}

/**
 * Decodes ids one at a time. `push(id)` returns the text that is complete so far; bytes of a
 * character split over several byte tokens are held back until the character is whole. `flush()`
 * ends the stream (an unfinished character becomes U+FFFD per byte).
 */
export class StreamDecoder {
  #bytes: number[] = [];
  #need = 0;
  readonly #tok: Tokenizer;
  readonly #byteOf: Int16Array;
  readonly #skip: boolean;

  /** @internal Use `tokenizer.streamDecoder()`. */
  constructor(tok: Tokenizer, byteOf: Int16Array, skip: boolean) {
    this.#tok = tok;
    this.#byteOf = byteOf;
    this.#skip = skip;
  }

  /** Adds one token id; returns the newly complete text (possibly ""). */
  push(id: number): string {
    if (this.#skip && this.#tok.isSpecial(id)) return "";
    const b = id >= 0 && id < this.#byteOf.length ? this.#byteOf[id] : -1;
    if (b < 0) return this.flush() + this.#tok.piece(id).replaceAll("▁", " ");
    let out = "";
    if (this.#bytes.length === 0 || (b & 0xc0) !== 0x80) {
      // A lead byte (or a stray continuation): whatever was pending is incomplete.
      out = this.flush();
      this.#need = utf8Length(b);
    }
    this.#bytes.push(b);
    if (this.#bytes.length >= this.#need) out += this.flush();
    return out;
  }

  /** Ends the stream: returns pending bytes decoded (U+FFFD per byte if incomplete). */
  flush(): string {
    if (this.#bytes.length === 0) return "";
    const s = decodeByteRun(this.#bytes);
    this.#bytes = [];
    this.#need = 0;
    return s;
  }
}

/** Bytes a UTF-8 sequence with this lead byte has (1 for a byte that cannot lead). */
function utf8Length(lead: number): number {
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  return 1;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A run of byte tokens as text: valid UTF-8 as is, otherwise U+FFFD for every byte (as HF). */
function decodeByteRun(bytes: number[]): string {
  try {
    return strictUtf8.decode(new Uint8Array(bytes));
  } catch {
    return "\ufffd".repeat(bytes.length);
  }
}

function pushUtf8(cp: number, byteIds: Int32Array, out: Int32Array, n: number): number {
  if (cp < 0x80) out[n++] = byteIds[cp];
  else if (cp < 0x800) {
    out[n++] = byteIds[0xc0 | (cp >> 6)];
    out[n++] = byteIds[0x80 | (cp & 63)];
  } else if (cp < 0x10000) {
    out[n++] = byteIds[0xe0 | (cp >> 12)];
    out[n++] = byteIds[0x80 | ((cp >> 6) & 63)];
    out[n++] = byteIds[0x80 | (cp & 63)];
  } else {
    out[n++] = byteIds[0xf0 | (cp >> 18)];
    out[n++] = byteIds[0x80 | ((cp >> 12) & 63)];
    out[n++] = byteIds[0x80 | ((cp >> 6) & 63)];
    out[n++] = byteIds[0x80 | (cp & 63)];
  }
  return n;
}

function normalize(s: string, start: number, end: number): string {
  return s.slice(start, end).replaceAll(" ", "▁");
}

function matchAdded(g: AddedGroup, s: string, i: number): { id: number; length: number } | null {
  if (g.run) {
    const c = s.charCodeAt(i);
    let run = 1;
    while (i + run < s.length && s.charCodeAt(i + run) === c && run < g.lengths[0]) run++;
    for (const len of g.lengths) {
      if (len <= run) return { id: g.byText.get(s.slice(i, i + len))!, length: len };
    }
    return null;
  }
  for (const len of g.lengths) {
    if (i + len > s.length) continue;
    const id = g.byText.get(s.slice(i, i + len));
    if (id !== undefined) return { id, length: len };
  }
  return null;
}

/** Replaces lone surrogates by U+FFFD, as converting to UTF-8 does (see tokenizer README). */
/** An options argument: undefined as {}, else it must be a plain object. */
function optionsObject<T>(value: T | undefined, name: string): T {
  if (value === undefined) return {} as T;
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`${name} must be an object, got ${describeValue(value)}`);
  }
  return value;
}

function wellFormed(s: string): string {
  const f = (s as { toWellFormed?: () => string }).toWellFormed;
  if (f) return f.call(s);
  return s.replace(
    /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g,
    "\ufffd",
  );
}
