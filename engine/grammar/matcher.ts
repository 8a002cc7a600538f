// Which tokens a grammar allows next. The vocabulary is a byte trie laid out in preorder (each
// node knows where its subtree ends), walked once per mask with the grammar's state: a byte the
// grammar refuses skips the whole subtree, so the work is the part of the trie the grammar
// allows, not the vocabulary times a parser (llguidance's design). A state's mask is kept, since
// the same state comes back often (inside a string, between items). And most steps need no mask
// at all: the sampled token is checked alone first, and the mask is built only when the grammar
// refuses it (llama.cpp's fast path).

import { DEAD, type Grammar } from "./automaton.ts";

/** The vocabulary as the grammar sees it: each token's bytes; special tokens are never text. */
export interface Vocabulary {
  readonly vocabSize: number;
  tokenBytes(id: number): Uint8Array;
  isSpecial(id: number): boolean;
}

/** The tokens of a vocabulary as a byte trie in preorder. */
export class TokenTrie {
  /** Per node: its byte, its depth (1 = first byte), the node after its subtree, and its tokens
   * (tokens[tokenStart[i]] .. tokens[tokenStart[i + 1] - 1]). */
  readonly byte: Uint8Array;
  readonly depth: Uint8Array;
  readonly end: Int32Array;
  readonly tokenStart: Int32Array;
  readonly tokens: Int32Array;
  /** Each token's bytes (empty for special tokens). */
  readonly bytesOf: Uint8Array[];
  readonly vocabSize: number;

  constructor(vocab: Vocabulary) {
    const n = vocab.vocabSize;
    this.vocabSize = n;
    const bytes: Uint8Array[] = new Array(n);
    const ids: number[] = [];
    const empty: Uint8Array = new Uint8Array(0);
    for (let id = 0; id < n; id++) {
      const b = vocab.isSpecial(id) ? empty : vocab.tokenBytes(id);
      bytes[id] = b.length > 255 ? empty : b; // depth fits a byte; no real token is this long
      if (bytes[id].length > 0) ids.push(id);
    }
    this.bytesOf = bytes;
    // Sorted by bytes (as Latin-1 strings, which compare byte by byte; the sort is stable, so
    // tokens with the same bytes stay in id order).
    const keys = new Array<string>(n);
    for (const id of ids) keys[id] = String.fromCharCode(...bytes[id]);
    ids.sort((a, b) => (keys[a] < keys[b] ? -1 : keys[a] > keys[b] ? 1 : 0));
    // Preorder nodes from the sorted list: each token adds the nodes past its common prefix with
    // the token before it.
    const nodeByte: number[] = [], nodeDepth: number[] = [], nodeEnd: number[] = [];
    const open: number[] = []; // open[d - 1]: the node at depth d on the current path
    // Tokens sit at the node of their last byte.
    const tokenNode = new Int32Array(ids.length);
    let prev: Uint8Array = empty;
    for (let i = 0; i < ids.length; i++) {
      const b = bytes[ids[i]];
      let common = 0;
      while (common < prev.length && common < b.length && prev[common] === b[common]) common++;
      for (let d = open.length; d > common; d--) nodeEnd[open.pop()!] = nodeByte.length;
      for (let d = common; d < b.length; d++) {
        open.push(nodeByte.length);
        nodeByte.push(b[d]);
        nodeDepth.push(d + 1);
      }
      tokenNode[i] = open[b.length - 1];
      prev = b;
    }
    for (const node of open) nodeEnd[node] = nodeByte.length;
    // Nodes are in the same order as tokens, so each node's tokens are a run of the sorted list.
    const count = nodeByte.length;
    const starts = new Int32Array(count + 1);
    for (let i = 0; i < ids.length; i++) starts[tokenNode[i] + 1]++;
    for (let i = 0; i < count; i++) starts[i + 1] += starts[i];
    this.byte = Uint8Array.from(nodeByte);
    this.depth = Uint8Array.from(nodeDepth);
    this.end = Int32Array.from(nodeEnd);
    this.tokenStart = starts;
    this.tokens = Int32Array.from(ids);
  }

  get nodes(): number {
    return this.byte.length;
  }
}

const tries = new WeakMap<Vocabulary, TokenTrie>();

/** The trie of a vocabulary, built once per vocabulary object (about a second for 262k tokens). */
export function tokenTrie(vocab: Vocabulary): TokenTrie {
  let t = tries.get(vocab);
  if (!t) tries.set(vocab, t = new TokenTrie(vocab));
  return t;
}

/** Masks kept per grammar state, most recent last; each is vocab/8 bytes (32 KiB for Gemma). */
const MASK_CACHE = 64;

/** Follows one generation through a grammar: which tokens may come next, and the state after
 * each token. End tokens (`endTokens`) are allowed exactly where the grammar may end. */
export class GrammarMatcher {
  readonly grammar: Grammar;
  readonly trie: TokenTrie;
  readonly #end: Set<number>;
  /** The end tokens, as a cache key. */
  readonly endKey: string;
  #state: number;
  /** How many full masks were asked for (the bench reports it). */
  stats = { masks: 0 };

  constructor(grammar: Grammar, trie: TokenTrie, endTokens: Iterable<number>) {
    this.grammar = grammar;
    this.trie = trie;
    this.#end = new Set(endTokens);
    this.endKey = [...this.#end].sort((a, b) => a - b).join(",");
    this.#state = grammar.initial;
  }

  /** The automaton's state (for tests and tools: `grammar.move` from it). */
  get state(): number {
    return this.#state;
  }

  /** Whether the grammar has been matched to a point where it may end. */
  get canEnd(): boolean {
    return this.grammar.accepting(this.#state);
  }

  /** Whether the grammar has been matched to its end: only an end token may follow. */
  get mustEnd(): boolean {
    return this.grammar.complete(this.#state);
  }

  /** Whether `id` may come next. */
  allows(id: number): boolean {
    const bytes = this.trie.bytesOf[id];
    return this.#end.has(id) ? this.canEnd : bytes !== undefined && bytes.length > 0 &&
      this.grammar.moveAll(this.#state, bytes) !== DEAD;
  }

  /** Takes `id` as the next token; throws if the grammar does not allow it. */
  accept(id: number): void {
    if (this.#end.has(id)) {
      if (!this.canEnd) throw new Error(`token ${id} ends the text where the grammar cannot end`);
      return;
    }
    const bytes = this.trie.bytesOf[id];
    const next = bytes?.length ? this.grammar.moveAll(this.#state, bytes) : DEAD;
    if (next === DEAD) throw new Error(`token ${id} is not allowed by the grammar here`);
    this.#state = next;
  }

  /** Every token allowed next, as a bitset (bit i of word i >> 5); end tokens where the grammar
   * may end. The array is shared: read it before the next call. */
  mask(): Uint32Array {
    this.stats.masks++;
    const state = this.#state;
    const cache = maskCache(this);
    let bits = cache.get(state);
    if (bits) cache.delete(state); // to be put back as the most recently used
    else bits = this.#walk(state);
    cache.set(state, bits);
    if (cache.size > MASK_CACHE) cache.delete(cache.keys().next().value!);
    return bits;
  }

  #walk(start: number): Uint32Array {
    const { byte, depth, end, tokenStart, tokens } = this.trie;
    const g = this.grammar;
    const bits = new Uint32Array((this.trie.vocabSize + 31) >>> 5);
    const stateAt = new Int32Array(257);
    stateAt[0] = start;
    const n = byte.length;
    for (let i = 0; i < n;) {
      const d = depth[i];
      const from = stateAt[d - 1];
      const row = g.row(from);
      let s = row[byte[i]];
      if (s < 0) s = g.move(from, byte[i]);
      if (s === DEAD) {
        i = end[i];
        continue;
      }
      stateAt[d] = s;
      for (let t = tokenStart[i]; t < tokenStart[i + 1]; t++) {
        const id = tokens[t];
        bits[id >>> 5] |= 1 << (id & 31);
      }
      i++;
    }
    if (g.accepting(start)) { for (const id of this.#end) bits[id >>> 5] |= 1 << (id & 31); }
    return bits;
  }
}

const maskCaches = new WeakMap<
  Grammar,
  WeakMap<TokenTrie, Map<string, Map<number, Uint32Array>>>
>();

/** Masks depend only on the grammar's state, the vocabulary and the end tokens, so matchers
 * that share those share masks. */
function maskCache(m: GrammarMatcher): Map<number, Uint32Array> {
  let byTrie = maskCaches.get(m.grammar);
  if (!byTrie) maskCaches.set(m.grammar, byTrie = new WeakMap());
  let byEnd = byTrie.get(m.trie);
  if (!byEnd) byTrie.set(m.trie, byEnd = new Map());
  let c = byEnd.get(m.endKey);
  if (!c) byEnd.set(m.endKey, c = new Map());
  return c;
}
