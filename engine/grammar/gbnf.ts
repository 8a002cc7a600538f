// GBNF, llama.cpp's grammar notation, read into a small tree of expressions. A grammar is rules
// `name ::= expression`; expressions are "literals", [character classes], [^negated ones], `.`
// (any character), rule names, ( groups ), alternatives with |, and the repetitions *, +, ?,
// {m}, {m,} and {m,n}. `#` starts a comment. Rule `root` is where matching starts.
//
//   root   ::= answer ("," ws answer)*
//   answer ::= "yes" | "no"
//   ws     ::= [ \t\n]{0,3}

/** A grammar expression. Character classes hold inclusive code-point ranges. */
export type Expr =
  | { kind: "literal"; text: string }
  | { kind: "chars"; ranges: [number, number][]; negated: boolean }
  | { kind: "ref"; name: string }
  | { kind: "seq"; items: Expr[] }
  | { kind: "alt"; options: Expr[] }
  | { kind: "repeat"; item: Expr; min: number; max: number };

/** Rules by name, in the order they were written. */
export type Rules = Map<string, Expr>;

/** A GBNF syntax error, with the line and column where it was found. */
export class GrammarError extends Error {
  /** `message` says what is wrong and where. */
  constructor(message: string) {
    super(message);
    this.name = "GrammarError";
  }
}

/** Repetition counts above this are refused: each count becomes its own grammar state. */
export const MAX_REPEAT = 10_000;

/** Groups nested deeper than this are refused, in a grammar, a JSON Schema or a pattern: the
 * parsers and the compiler recurse once per level, and a request body of 1 MiB could nest
 * 100,000 deep (V8's stack ends at a few thousand). No real grammar or schema comes near it
 * (OpenAI's structured outputs allow 10 levels of objects). */
export const MAX_NESTING = 100;

/** Parses GBNF text into rules. Throws GrammarError naming the line and column of a mistake. */
export function parseGbnf(text: string): Rules {
  if (typeof text !== "string") throw new TypeError("a grammar must be GBNF text (a string)");
  const p = new Parser(text);
  const rules: Rules = new Map();
  p.skip(true);
  while (!p.done()) {
    const at = p.pos;
    const name = p.name();
    if (!name) p.fail("expected a rule name");
    p.skip(false);
    if (!p.eat("::=")) p.fail(`expected ::= after the rule name ${name}`);
    p.skip(true);
    const expr = p.alternatives(false);
    if (rules.has(name)) p.fail(`rule ${name} is defined twice`, at);
    rules.set(name, expr);
    p.skip(true);
  }
  if (!rules.has("root")) throw new GrammarError("the grammar has no rule named root");
  for (const [name, expr] of rules) {
    for (const r of refs(expr)) {
      if (!rules.has(r)) {
        throw new GrammarError(`rule ${name} refers to ${r}, which is not defined`);
      }
    }
  }
  return rules;
}

/** The rule names an expression refers to. */
export function refs(e: Expr, out = new Set<string>()): Set<string> {
  if (e.kind === "ref") out.add(e.name);
  else if (e.kind === "seq") e.items.forEach((x) => refs(x, out));
  else if (e.kind === "alt") e.options.forEach((x) => refs(x, out));
  else if (e.kind === "repeat") refs(e.item, out);
  return out;
}

class Parser {
  pos = 0;
  #depth = 0;
  constructor(readonly src: string) {}

  done(): boolean {
    return this.pos >= this.src.length;
  }

  fail(message: string, at = this.pos): never {
    const before = this.src.slice(0, at);
    const line = before.split("\n").length;
    const col = at - before.lastIndexOf("\n");
    const near = JSON.stringify(this.src.slice(at, at + 20));
    throw new GrammarError(`grammar line ${line}, column ${col}: ${message} (at ${near})`);
  }

  /** Skips spaces and comments; newlines too when `newlines` (inside groups, between rules). */
  skip(newlines: boolean): void {
    const s = this.src;
    while (this.pos < s.length) {
      const c = s[this.pos];
      if (c === "#") {
        while (this.pos < s.length && s[this.pos] !== "\n") this.pos++;
      } else if (c === " " || c === "\t" || c === "\r" || (newlines && c === "\n")) this.pos++;
      else break;
    }
  }

  eat(token: string): boolean {
    if (!this.src.startsWith(token, this.pos)) return false;
    this.pos += token.length;
    return true;
  }

  name(): string {
    const m = /^[a-zA-Z0-9_-]+/.exec(this.src.slice(this.pos, this.pos + 200));
    if (!m) return "";
    this.pos += m[0].length;
    return m[0];
  }

  /** a | b | c. As in llama.cpp, a line break ends a rule, except inside ( ) and after | or ::=. */
  alternatives(nested: boolean): Expr {
    const options = [this.sequence(nested)];
    while (this.eat("|")) {
      this.skip(true);
      options.push(this.sequence(nested));
    }
    return options.length === 1 ? options[0] : { kind: "alt", options };
  }

  sequence(nested: boolean): Expr {
    const items: Expr[] = [];
    for (;;) {
      const c = this.src[this.pos];
      if (c === undefined || c === "|" || c === ")" || c === "\n") break;
      items.push(this.postfix(this.primary()));
      this.skip(nested);
    }
    if (this.src[this.pos] === ")" && !nested) this.fail("unmatched )");
    return items.length === 1 ? items[0] : { kind: "seq", items };
  }

  primary(): Expr {
    const s = this.src;
    const c = s[this.pos];
    if (c === '"') {
      this.pos++;
      let text = "";
      while (s[this.pos] !== '"') {
        if (this.done() || s[this.pos] === "\n") this.fail("unterminated string literal");
        text += String.fromCodePoint(this.char());
      }
      this.pos++;
      return { kind: "literal", text };
    }
    if (c === "[") {
      this.pos++;
      const negated = this.eat("^");
      const ranges: [number, number][] = [];
      while (s[this.pos] !== "]") {
        if (this.done()) this.fail("unterminated character class");
        const lo = this.char();
        let hi = lo;
        if (s[this.pos] === "-" && s[this.pos + 1] !== "]" && this.pos + 1 < s.length) {
          this.pos++;
          hi = this.char();
          if (hi < lo) this.fail(`character range out of order`);
        }
        ranges.push([lo, hi]);
      }
      this.pos++;
      return { kind: "chars", ranges, negated };
    }
    if (c === ".") {
      this.pos++;
      return { kind: "chars", ranges: [], negated: true };
    }
    if (c === "(") {
      this.pos++;
      this.skip(true);
      if (this.eat(")")) return { kind: "seq", items: [] };
      if (++this.#depth > MAX_NESTING) {
        this.fail(`groups nest deeper than ${MAX_NESTING} levels`, this.pos - 1);
      }
      const inner = this.alternatives(true);
      this.#depth--;
      this.skip(true);
      if (!this.eat(")")) this.fail("expected )");
      return inner;
    }
    if (c === "<") this.fail("token references (<...>) are not supported; write the text");
    const name = this.name();
    if (!name) this.fail("expected a literal, a character class, a rule name or (");
    return { kind: "ref", name };
  }

  postfix(item: Expr): Expr {
    for (;;) {
      const c = this.src[this.pos];
      let min: number, max: number;
      if (c === "*") [min, max] = [0, Infinity];
      else if (c === "+") [min, max] = [1, Infinity];
      else if (c === "?") [min, max] = [0, 1];
      else if (c === "{") {
        const m = /^\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}/.exec(this.src.slice(this.pos, this.pos + 40));
        if (!m) this.fail("expected {m}, {m,} or {m,n}");
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
        if (max < min) this.fail(`repetition {${min},${max}} has its maximum below its minimum`);
        if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) {
          this.fail(`repetition counts above ${MAX_REPEAT} are not supported`);
        }
        this.pos += m[0].length - 1;
      } else return item;
      this.pos++;
      item = { kind: "repeat", item, min, max };
    }
  }

  /** One character of a literal or class, escapes decoded; returns its code point. */
  char(): number {
    const s = this.src;
    const c = s.codePointAt(this.pos)!;
    if (c !== 0x5c) {
      this.pos += c > 0xffff ? 2 : 1;
      return c;
    }
    const e = s[this.pos + 1];
    this.pos += 2;
    const simple: Record<string, number> = {
      n: 10,
      r: 13,
      t: 9,
      "\\": 0x5c,
      '"': 0x22,
      "[": 0x5b,
      "]": 0x5d,
      "-": 0x2d,
      "^": 0x5e,
      "/": 0x2f,
    };
    if (e in simple) return simple[e];
    const digits = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
    if (!digits) this.fail(`unknown escape \\${e}`, this.pos - 2);
    const hex = s.slice(this.pos, this.pos + digits);
    if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== digits) {
      this.fail(`\\${e} needs ${digits} hex digits`, this.pos - 2);
    }
    this.pos += digits;
    const cp = parseInt(hex, 16);
    if (cp > 0x10ffff) this.fail(`\\${e}${hex} is beyond Unicode`, this.pos - digits - 2);
    return cp;
  }
}
