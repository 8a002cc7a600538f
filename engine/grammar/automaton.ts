// A grammar compiled for matching bytes: a pushdown automaton over UTF-8 bytes, and the lazily
// built table of its states that makes token masks cheap.
//
// Rules become flat arrays of elements: a byte set (256 bits), a reference to a rule, or the end
// of an alternative. Characters become UTF-8 byte sequences here, so that a token, which is bytes
// (Gemma's byte-fallback tokens are single bytes of a character), is matched byte by byte with
// no decoding state on the side. A parse position is a stack of element positions (the top is a
// byte set to match next, those below it are where to return); the parser's state is the set of
// all stacks still possible, as in llama.cpp's grammar engine. Stacks are interned (shared tails,
// one id each) and so are sets of them, so a state is one number, and the move from a state on a
// byte is computed once and remembered: walking a token's bytes is then a table lookup per byte.

import { type Expr, GrammarError, parseGbnf, type Rules } from "./gbnf.ts";
import { complement, normalize, subtract } from "./code_points.ts";

const END = 0, BYTES = 1, REF = 2;

/** The empty stack: the grammar has been matched to its end (also state ids' accepting mark). */
const EMPTY_STACK = 0;
/** The state with no stacks: nothing can follow. */
export const DEAD = 0;

/** A GBNF grammar compiled to a byte-level pushdown automaton (immutable; shared by matchers). */
export class Grammar {
  /** The GBNF text it was compiled from. */
  readonly source: string;
  readonly #kind: number[] = [];
  readonly #arg: number[] = [];
  /** 256-bit sets, 8 words each. */
  readonly #sets: Uint32Array[] = [];
  readonly #ruleAlts: number[][] = [];
  readonly #ruleNames: string[] = [];

  // Interned stacks: node i is (position #nodePos[i], below it #nodeNext[i]); node 0 is empty.
  #nodePos: number[] = [-1];
  #nodeNext: number[] = [-1];
  #nodeIds = new Map<number, number>();
  // Interned states: sorted stack ids; state 0 is dead.
  #states: Int32Array[] = [new Int32Array(0)];
  #stateIds = new Map<string, number>();
  /** #moves[state][byte]: the next state, -1 not computed yet. */
  #moves: Int32Array[] = [];
  /** The state before any byte. */
  readonly initial: number;

  /** Compiles GBNF text (see gbnf.ts). Throws GrammarError for a mistake, naming where. */
  constructor(gbnf: string) {
    this.source = gbnf;
    const rules = parseGbnf(gbnf);
    new Lowering(rules, this.#kind, this.#arg, this.#sets, this.#ruleAlts, this.#ruleNames);
    checkProductive(this.#kind, this.#arg, this.#ruleAlts, this.#ruleNames);
    checkLeftRecursion(this.#kind, this.#arg, this.#ruleAlts, this.#ruleNames);
    this.initial = this.#startState();
  }

  #startState(): number {
    const out: number[] = [];
    for (const a of this.#ruleAlts[0]) this.#expand(a, EMPTY_STACK, out, new Set());
    return this.#intern(out);
  }

  #node(pos: number, next: number): number {
    const key = pos * 4294967296 + next;
    let id = this.#nodeIds.get(key);
    if (id === undefined) {
      id = this.#nodePos.length;
      this.#nodePos.push(pos);
      this.#nodeNext.push(next);
      this.#nodeIds.set(key, id);
    }
    return id;
  }

  /** Adds to `out` every stack that continues at element `pos` with `next` below, each with a
   * byte set on top (or the empty stack where the grammar ends). */
  #expand(pos: number, next: number, out: number[], seen: Set<number>): void {
    const key = pos * 4294967296 + next;
    if (seen.has(key)) return; // a loop through rules that match nothing adds nothing new
    seen.add(key);
    const kind = this.#kind[pos];
    if (kind === BYTES) out.push(this.#node(pos, next));
    else if (kind === END) {
      if (next === EMPTY_STACK) out.push(EMPTY_STACK);
      else this.#expand(this.#nodePos[next], this.#nodeNext[next], out, seen);
    } else {
      // A rule reference: where to return, unless the reference ends its alternative (a tail
      // call: `x ::= "a" x |` then loops without growing the stack).
      const ret = this.#kind[pos + 1] === END ? next : this.#node(pos + 1, next);
      for (const a of this.#ruleAlts[this.#arg[pos]]) this.#expand(a, ret, out, seen);
    }
  }

  #intern(stacks: number[]): number {
    if (stacks.length === 0) return DEAD;
    const sorted = Int32Array.from(new Set(stacks)).sort();
    const key = sorted.join(",");
    let id = this.#stateIds.get(key);
    if (id === undefined) {
      id = this.#states.length;
      this.#states.push(sorted);
      this.#stateIds.set(key, id);
    }
    return id;
  }

  /** The state after `byte` in `state` (DEAD: the byte cannot come next). */
  move(state: number, byte: number): number {
    let row = this.#moves[state];
    if (row === undefined) row = this.#moves[state] = new Int32Array(256).fill(-1);
    const known = row[byte];
    if (known >= 0) return known;
    const out: number[] = [];
    const seen = new Set<number>();
    for (const stack of this.#states[state]) {
      if (stack === EMPTY_STACK) continue;
      const pos = this.#nodePos[stack];
      const set = this.#sets[this.#arg[pos]];
      if ((set[byte >>> 5] >>> (byte & 31)) & 1) {
        this.#expand(pos + 1, this.#nodeNext[stack], out, seen);
      }
    }
    return row[byte] = this.#intern(out);
  }

  /** The state after `bytes` from `state`, or DEAD. */
  moveAll(state: number, bytes: Uint8Array): number {
    for (let i = 0; i < bytes.length && state !== DEAD; i++) {
      const row = this.#moves[state];
      const known = row === undefined ? -1 : row[bytes[i]];
      state = known >= 0 ? known : this.move(state, bytes[i]);
    }
    return state;
  }

  /** The next-state row of `state` (filled lazily, -1 where not computed): for the mask walk. */
  row(state: number): Int32Array {
    return this.#moves[state] ??= new Int32Array(256).fill(-1);
  }

  /** Whether the grammar may end in `state`. */
  accepting(state: number): boolean {
    const s = this.#states[state];
    return s.length > 0 && s[0] === EMPTY_STACK;
  }

  /** Whether the grammar must end in `state` (nothing more can follow). */
  complete(state: number): boolean {
    const s = this.#states[state];
    return s.length === 1 && s[0] === EMPTY_STACK;
  }

  /** Whether `text` is a complete sentence of the grammar. */
  matches(text: string): boolean {
    return this.accepting(this.moveAll(this.initial, new TextEncoder().encode(text)));
  }

  /** States and stacks made so far (they are kept for the grammar's life). */
  get cacheSize(): { states: number; stacks: number } {
    return { states: this.#states.length, stacks: this.#nodePos.length };
  }
}

/** Turns rule expressions into flat element arrays; rule 0 is root. */
class Lowering {
  readonly #ids = new Map<string, number>();
  readonly #setIds = new Map<string, number>();
  readonly #classRules = new Map<string, number>();
  readonly #pending: [number, number[][]][] = [];

  constructor(
    readonly rules: Rules,
    readonly kind: number[],
    readonly arg: number[],
    readonly sets: Uint32Array[],
    readonly ruleAlts: number[][],
    readonly ruleNames: string[],
  ) {
    this.#ruleId("root");
    for (const name of rules.keys()) this.#ruleId(name);
    for (const [name, expr] of rules) {
      this.#define(this.#ruleId(name), this.#alternatives(expr));
    }
    // Flatten: each alternative's elements, then END.
    for (const [rule, alts] of this.#pending) {
      this.ruleAlts[rule] = alts.map((elements) => {
        const start = this.kind.length;
        for (const e of elements) {
          this.kind.push(e >= 0 ? BYTES : REF);
          this.arg.push(e >= 0 ? e : -e - 1);
        }
        this.kind.push(END);
        this.arg.push(0);
        return start;
      });
    }
  }

  #ruleId(name: string): number {
    let id = this.#ids.get(name);
    if (id === undefined) {
      id = this.ruleNames.length;
      this.ruleNames.push(name);
      this.ruleAlts.push([]);
      this.#ids.set(name, id);
    }
    return id;
  }

  #newRule(hint: string, alts: number[][]): number {
    const id = this.ruleNames.length;
    this.ruleNames.push(`${hint}#${id}`);
    this.ruleAlts.push([]);
    this.#define(id, alts);
    return id;
  }

  #define(rule: number, alts: number[][]): void {
    this.#pending.push([rule, alts]);
  }

  /** Elements are numbers: >= 0 a byte set id, < 0 a rule reference (-id - 1). */
  #alternatives(e: Expr): number[][] {
    if (e.kind === "alt") return e.options.map((o) => this.#sequence(o));
    if (e.kind === "chars") return this.#classAlternatives(e);
    return [this.#sequence(e)];
  }

  #sequence(e: Expr): number[] {
    switch (e.kind) {
      case "literal":
        return [...new TextEncoder().encode(e.text)].map((b) => this.#set([[b, b]]));
      case "ref":
        return [-this.#ruleId(e.name) - 1];
      case "seq":
        return e.items.flatMap((x) => this.#sequence(x));
      case "alt":
        return [-this.#newRule("group", this.#alternatives(e)) - 1];
      case "chars": {
        const alts = this.#classAlternatives(e);
        if (alts.length === 1) return alts[0];
        const key = JSON.stringify(e);
        let id = this.#classRules.get(key);
        if (id === undefined) this.#classRules.set(key, id = this.#newRule("class", alts));
        return [-id - 1];
      }
      case "repeat": {
        const item = this.#sequence(e.item);
        const out: number[] = [];
        for (let i = 0; i < e.min; i++) out.push(...item);
        if (e.max === Infinity) {
          // star ::= item star | (empty), a tail call
          const id = this.#newRule("star", []);
          this.#define(id, [[...item, -id - 1], []]);
          out.push(-id - 1);
        } else if (e.max > e.min) {
          // up to k more: opt_k ::= item opt_(k-1) | (empty)
          let inner = -1;
          for (let k = 1; k <= e.max - e.min; k++) {
            const alt = inner < 0 ? [...item] : [...item, -inner - 1];
            inner = this.#newRule("upto", [alt, []]);
          }
          out.push(-inner - 1);
        }
        return out;
      }
    }
  }

  /** A character class as alternatives of UTF-8 byte-set sequences. */
  #classAlternatives(e: { ranges: [number, number][]; negated: boolean }): number[][] {
    let ranges = normalize(e.ranges);
    if (e.negated) ranges = complement(ranges);
    // Surrogates are not characters: UTF-8 cannot encode them.
    ranges = subtract(ranges, [0xd800, 0xdfff]);
    if (ranges.length === 0) throw new GrammarError("a character class matches no character");
    const seqs: [number, number][][] = [];
    for (const [lo, hi] of ranges) utf8Sequences(lo, hi, seqs);
    // Sequences of one byte share one set; longer ones stay separate.
    const single: [number, number][] = [];
    const alts: number[][] = [];
    for (const s of seqs) {
      if (s.length === 1) single.push(s[0]);
      else alts.push(s.map((r) => this.#set([r])));
    }
    if (single.length) alts.unshift([this.#set(single)]);
    return alts;
  }

  #set(ranges: [number, number][]): number {
    const key = ranges.map(([a, b]) => `${a}-${b}`).join(",");
    let id = this.#setIds.get(key);
    if (id === undefined) {
      const bits = new Uint32Array(8);
      for (const [a, b] of ranges) for (let x = a; x <= b; x++) bits[x >>> 5] |= 1 << (x & 31);
      id = this.sets.length;
      this.sets.push(bits);
      this.#setIds.set(key, id);
    }
    return id;
  }
}

const UTF8_MAX = [0x7f, 0x7ff, 0xffff, 0x10ffff];

function utf8Encode(cp: number): number[] {
  return [...new TextEncoder().encode(String.fromCodePoint(cp))];
}

/** Splits code points lo..hi into byte-range sequences, each a product of byte ranges (the
 * method of Russ Cox's RE2 and Rust's regex-syntax). */
export function utf8Sequences(lo: number, hi: number, out: [number, number][][]): void {
  for (const max of UTF8_MAX) {
    if (lo <= max && hi > max) {
      utf8Sequences(lo, max, out);
      utf8Sequences(max + 1, hi, out);
      return;
    }
  }
  if (hi <= 0x7f) {
    out.push([[lo, hi]]);
    return;
  }
  for (let i = 1; i < 4; i++) {
    const m = (1 << (6 * i)) - 1;
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) {
        utf8Sequences(lo, lo | m, out);
        utf8Sequences((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) !== m) {
        utf8Sequences(lo, (hi & ~m) - 1, out);
        utf8Sequences(hi & ~m, hi, out);
        return;
      }
    }
  }
  const a = utf8Encode(lo), b = utf8Encode(hi);
  out.push(a.map((x, i) => [x, b[i]]));
}

/** Refuses a rule that can never finish (every alternative refers back to it, as `x ::= "a" x`):
 * with none, every state the automaton reaches can still be completed, so generation never runs
 * into a dead end. */
function checkProductive(kind: number[], arg: number[], ruleAlts: number[][], names: string[]) {
  const done = new Array(ruleAlts.length).fill(false);
  for (let changed = true; changed;) {
    changed = false;
    for (let r = 0; r < ruleAlts.length; r++) {
      if (done[r]) continue;
      const can = ruleAlts[r].some((start) => {
        for (let p = start; kind[p] !== END; p++) {
          if (kind[p] === REF && !done[arg[p]]) return false;
        }
        return true;
      });
      if (can) done[r] = changed = true;
    }
  }
  const r = done.indexOf(false);
  if (r >= 0) {
    throw new GrammarError(
      `rule ${names[r]} can never finish: each of its alternatives needs ${
        names[r]
      } again (give it one that does not)`,
    );
  }
}

/** Refuses left recursion (a rule that can reach itself before matching a byte): the stack
 * would grow without end. */
function checkLeftRecursion(
  kind: number[],
  arg: number[],
  ruleAlts: number[][],
  names: string[],
): void {
  const nullable = new Array(ruleAlts.length).fill(false);
  for (let changed = true; changed;) {
    changed = false;
    for (let r = 0; r < ruleAlts.length; r++) {
      if (nullable[r]) continue;
      const can = ruleAlts[r].some((start) => {
        for (let p = start; kind[p] !== END; p++) {
          if (kind[p] === BYTES || !nullable[arg[p]]) return false;
        }
        return true;
      });
      if (can) nullable[r] = changed = true;
    }
  }
  // Edges r -> s where s can start r; a tail edge (s ends its alternative) pushes no return
  // position, so a cycle of tail edges revisits the same stacks and #expand stops it. A cycle
  // with any other edge grows the stack without end.
  const edges = ruleAlts.map((alts) => {
    const out: { to: number; tail: boolean }[] = [];
    for (const start of alts) {
      for (let p = start; kind[p] === REF; p++) {
        out.push({ to: arg[p], tail: kind[p + 1] === END });
        if (!nullable[arg[p]]) break;
      }
    }
    return out;
  });
  /** A path of rules from `from` to `to`, or undefined. */
  const path = (from: number, to: number): number[] | undefined => {
    const prev = new Map<number, number>([[from, -1]]);
    const queue = [from];
    while (queue.length) {
      const r = queue.shift()!;
      if (r === to) {
        const out: number[] = [];
        for (let x = r; x >= 0; x = prev.get(x)!) out.unshift(x);
        return out;
      }
      for (const e of edges[r]) {
        if (!prev.has(e.to)) {
          prev.set(e.to, r);
          queue.push(e.to);
        }
      }
    }
    return undefined;
  };
  for (let r = 0; r < ruleAlts.length; r++) {
    for (const e of edges[r]) {
      if (e.tail) continue;
      const back = path(e.to, r);
      if (back) {
        const cycle = [r, ...back].map((i) => names[i]);
        throw new GrammarError(
          `the grammar is left-recursive (${cycle.join(" -> ")}): write the repetition with * or +`,
        );
      }
    }
  }
}
