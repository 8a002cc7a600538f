// A JSON Schema `pattern` as GBNF for the inside of a JSON string. The grammar generates strings
// the whole regular expression matches, so they satisfy the pattern whether or not it is anchored
// (a pattern matches if it matches anywhere). Characters JSON must escape are written escaped.
// The subset: literals and escapes (\d \w \s \D \W \S \. \n \t \uXXXX ...), ".", classes
// [a-z] [^...], groups ( ) (?: ) (?<name> ), alternation |, quantifiers * + ? {n} {n,} {n,m}
// (lazy ones too), and ^ $ at the ends. Back-references, lookaround and \b are errors.

import { GrammarError, MAX_NESTING } from "./gbnf.ts";
import { quoteShort, shortJson } from "../formats/quote.ts";
import { complement, normalize, type Ranges, subtract } from "./code_points.ts";

const DIGIT: Ranges = [[0x30, 0x39]];
const WORD: Ranges = [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]];
const SPACE: Ranges = [
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
];
const NOT_NEWLINE: Ranges = complement([[0x0a, 0x0a], [0x0d, 0x0d], [0x2028, 0x2029]]);

/** GBNF for the JSON-string contents that `pattern` matches in full. */
export function regexToGbnf(pattern: string): string {
  const p = new RegexParser(pattern);
  const out = p.alternation();
  if (p.pos < pattern.length) p.fail(`unexpected ${shortJson(pattern[p.pos])}`);
  return out || '""';
}

class RegexParser {
  pos = 0;
  #depth = 0;
  constructor(readonly src: string) {}

  fail(message: string): never {
    throw new GrammarError(`pattern ${quoteShort(this.src)} at ${this.pos}: ${message}`);
  }

  alternation(): string {
    const options = [this.sequence()];
    while (this.src[this.pos] === "|") {
      this.pos++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : `(${options.map((o) => o || '""').join(" | ")})`;
  }

  sequence(): string {
    const items: string[] = [];
    while (this.pos < this.src.length) {
      const c = this.src[this.pos];
      if (c === "|" || c === ")") break;
      if (c === "^") {
        if (this.pos !== 0) this.fail("^ is supported only at the start");
        this.pos++;
        continue;
      }
      if (c === "$") {
        this.pos++;
        if (this.pos !== this.src.length) this.fail("$ is supported only at the end");
        continue;
      }
      items.push(this.quantified(this.atom()));
    }
    return items.join(" ");
  }

  atom(): string {
    const s = this.src;
    const c = s[this.pos];
    if (c === "(") {
      this.pos++;
      if (s.startsWith("?:", this.pos)) this.pos += 2;
      else if (s.startsWith("?<", this.pos) && !/^\?<[=!]/.test(s.slice(this.pos))) {
        const close = s.indexOf(">", this.pos);
        if (close < 0) this.fail("unterminated group name");
        this.pos = close + 1;
      } else if (s[this.pos] === "?") {
        this.fail("lookaround and other (?...) groups are not supported");
      }
      if (++this.#depth > MAX_NESTING) this.fail(`groups nest deeper than ${MAX_NESTING} levels`);
      const inner = this.alternation();
      this.#depth--;
      if (s[this.pos] !== ")") this.fail("expected )");
      this.pos++;
      return `(${inner || '""'})`;
    }
    if (c === "[") return jsonChars(this.charClass());
    if (c === ".") {
      this.pos++;
      return jsonChars(NOT_NEWLINE);
    }
    if (c === "*" || c === "+" || c === "?" || c === "{") {
      this.fail(`nothing to repeat before ${c}`);
    }
    if (c === "\\") {
      const r = this.escape(false);
      return jsonChars(r);
    }
    const cp = s.codePointAt(this.pos)!;
    this.pos += cp > 0xffff ? 2 : 1;
    return jsonChars([[cp, cp]]);
  }

  quantified(atom: string): string {
    const s = this.src;
    const c = s[this.pos];
    let q = "";
    if (c === "*" || c === "+" || c === "?") {
      q = c;
      this.pos++;
    } else if (c === "{") {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(s.slice(this.pos));
      if (!m) return atom; // a literal "{", as JavaScript reads it
      const min = Number(m[1]);
      const max = m[2] === undefined ? min : m[3] === "" ? Infinity : Number(m[3]);
      if (max < min) this.fail(`{${min},${max}} has its maximum below its minimum`);
      q = max === Infinity ? `{${min},}` : `{${min},${max}}`;
      this.pos += m[0].length;
    } else return atom;
    if (s[this.pos] === "?") this.pos++; // lazy: the same strings
    if (/^[*+?{]/.test(s[this.pos] ?? "")) this.fail("a quantifier cannot follow a quantifier");
    const wrapped = /^[("[]|^[a-z-]+$/.test(atom) && balanced(atom) ? atom : `(${atom})`;
    return `${wrapped}${q}`;
  }

  charClass(): Ranges {
    const s = this.src;
    this.pos++; // [
    const negated = s[this.pos] === "^";
    if (negated) this.pos++;
    let ranges: Ranges = [];
    while (s[this.pos] !== "]") {
      if (this.pos >= s.length) this.fail("unterminated character class");
      let lo: Ranges;
      if (s[this.pos] === "\\") lo = this.escape(true);
      else {
        const cp = s.codePointAt(this.pos)!;
        this.pos += cp > 0xffff ? 2 : 1;
        lo = [[cp, cp]];
      }
      if (s[this.pos] === "-" && s[this.pos + 1] !== "]" && this.pos + 1 < s.length) {
        this.pos++;
        let hi: Ranges;
        if (s[this.pos] === "\\") hi = this.escape(true);
        else {
          const cp = s.codePointAt(this.pos)!;
          this.pos += cp > 0xffff ? 2 : 1;
          hi = [[cp, cp]];
        }
        if (lo.length !== 1 || hi.length !== 1 || lo[0][0] !== lo[0][1] || hi[0][0] !== hi[0][1]) {
          this.fail("a range needs single characters at both ends");
        }
        if (hi[0][0] < lo[0][0]) this.fail("character range out of order");
        ranges.push([lo[0][0], hi[0][0]]);
      } else ranges.push(...lo);
    }
    this.pos++; // ]
    ranges = normalize(ranges);
    return negated ? complement(ranges) : ranges;
  }

  /** An escape at this.pos, as ranges of code points. */
  escape(inClass: boolean): Ranges {
    const s = this.src;
    const e = s[this.pos + 1];
    if (e === undefined) this.fail("the pattern ends in a backslash");
    this.pos += 2;
    switch (e) {
      case "d":
        return DIGIT;
      case "D":
        return complement(DIGIT);
      case "w":
        return WORD;
      case "W":
        return complement(WORD);
      case "s":
        return SPACE;
      case "S":
        return complement(SPACE);
      case "n":
        return [[10, 10]];
      case "r":
        return [[13, 13]];
      case "t":
        return [[9, 9]];
      case "f":
        return [[12, 12]];
      case "v":
        return [[11, 11]];
      case "0":
        return [[0, 0]];
      case "x":
      case "u": {
        const n = e === "x" ? 2 : 4;
        const hex = s.slice(this.pos, this.pos + n);
        if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== n) {
          this.fail(`\\${e} needs ${n} hex digits`);
        }
        this.pos += n;
        const cp = parseInt(hex, 16);
        return [[cp, cp]];
      }
      case "b":
        if (inClass) return [[8, 8]];
        this.fail("\\b (word boundary) is not supported");
        break;
      case "B":
        this.fail("\\B is not supported");
        break;
      default:
        if (/[1-9k]/.test(e)) this.fail("back-references are not supported");
        if (/[a-zA-Z]/.test(e)) this.fail(`the escape \\${e} is not supported`);
    }
    const cp = s.codePointAt(this.pos - 1)!;
    if (cp > 0xffff) this.pos++;
    return [[cp, cp]];
  }
}

function balanced(atom: string): boolean {
  // A group or class that spans the whole atom, or one rule name: safe to quantify as is.
  if (atom.startsWith("(")) {
    let depth = 0, inStr = false, inClass = false;
    for (let i = 0; i < atom.length; i++) {
      const c = atom[i];
      if (c === "\\") {
        i++;
        continue;
      }
      if (inStr) inStr = c !== '"';
      else if (inClass) inClass = c !== "]";
      else if (c === '"') inStr = true;
      else if (c === "[") inClass = true;
      else if (c === "(") depth++;
      else if (c === ")" && --depth === 0 && i !== atom.length - 1) return false;
    }
    return true;
  }
  return !atom.includes(" ");
}

const hex = (c: number) => c.toString(16).toUpperCase().padStart(c > 0xffff ? 8 : 4, "0");
const classChar = (c: number) => (c > 0xffff ? `\\U${hex(c)}` : `\\u${hex(c)}`);

/** GBNF for one character from `ranges`, as it is written inside a JSON string: `"` and `\` and
 * control characters escaped; surrogates (not characters) left out. */
function jsonChars(ranges: Ranges): string {
  const plain: Ranges = [];
  const escaped: string[] = [];
  const named: Record<number, string> = { 8: "b", 9: "t", 10: "n", 12: "f", 13: "r" };
  for (const [a, b] of normalize(ranges)) {
    for (let c = a; c <= Math.min(b, 0x1f); c++) {
      escaped.push(named[c] ? `"\\\\${named[c]}"` : `"\\\\u00${c.toString(16).padStart(2, "0")}"`);
    }
    let lo = Math.max(a, 0x20);
    const pieces: Ranges = [];
    for (const special of [0x22, 0x5c]) {
      if (lo <= special && special <= b) {
        if (lo < special) pieces.push([lo, special - 1]);
        escaped.push(special === 0x22 ? `"\\\\\\""` : `"\\\\\\\\"`);
        lo = special + 1;
      }
    }
    if (lo <= b) pieces.push([lo, b]);
    // Surrogates are not characters.
    for (const piece of pieces) plain.push(...subtract([piece], [0xd800, 0xdfff]));
  }
  const options = [...escaped];
  if (plain.length) {
    options.unshift(
      "[" +
        plain.map(([a, b]) => (a === b ? classChar(a) : `${classChar(a)}-${classChar(b)}`)).join(
          "",
        ) + "]",
    );
  }
  if (options.length === 0) {
    throw new GrammarError("a character class in the pattern matches nothing");
  }
  return options.length === 1 ? options[0] : `(${options.join(" | ")})`;
}
