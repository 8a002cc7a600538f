// JSON Schema to GBNF: a grammar whose every sentence is JSON that validates against the schema.
// The grammar may be narrower than the schema (properties in the order given; no extra
// properties unless `additionalProperties` allows them; numbers without huge exponents), never
// wider. A keyword this compiler cannot enforce is an error that names it: a schema is a
// contract, and silently ignoring part of it would hand the caller JSON that fails validation.
// Whitespace between tokens is bounded (one optional newline and up to 20 spaces or tabs), so a
// model cannot loop on spaces.

import { GrammarError, MAX_NESTING } from "./gbnf.ts";
import { shortJson } from "../formats/quote.ts";
import { regexToGbnf } from "./regex.ts";

/** Keywords that only describe (ignored); everything else must be understood. */
const ANNOTATIONS = new Set([
  "$schema",
  "$id",
  "$comment",
  "$anchor",
  "title",
  "description",
  "examples",
  "default",
  "deprecated",
  "readOnly",
  "writeOnly",
  "$defs",
  "definitions",
]);

/** Keywords by the type they constrain (besides the ones every schema may have). */
const BY_TYPE: Record<string, string[]> = {
  object: ["properties", "required", "additionalProperties"],
  array: ["items", "prefixItems", "minItems", "maxItems"],
  string: ["minLength", "maxLength", "pattern", "format"],
  number: [],
  integer: [],
  boolean: [],
  null: [],
};
const GENERAL = ["type", "enum", "const", "anyOf", "oneOf", "$ref"];
const TYPES = Object.keys(BY_TYPE);

/** The string formats supported. */
export const JSON_SCHEMA_FORMATS = ["date", "time", "date-time", "uuid"];

/** Most characters, items or digits a bounded repetition may ask for (each is grammar states). */
const MAX_COUNT = 10_000;

/** Rules every grammar may use. */
const BASE: Record<string, string> = {
  ws: `| " " | "\\n" [ \\t]{0,20}`,
  char: `[^"\\\\\\x00-\\x1F\\x7F] | "\\\\" (["\\\\/bfnrt] | "u" unicode-escape)`,
  // \\u escapes of surrogates are left out: each char is then one code point, as minLength counts.
  "unicode-escape": `[0-9a-cA-Ce-fE-F] hex hex hex | [dD] [0-7] hex hex`,
  hex: `[0-9a-fA-F]`,
  string: `"\\"" char* "\\""`,
  integer: `"-"? ("0" | [1-9] [0-9]{0,15})`,
  number: `integer ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?`,
  boolean: `"true" | "false"`,
  null: `"null"`,
  value: `object | array | string | number | boolean | null`,
  object: `"{" ws (string ws ":" ws value ws ("," ws string ws ":" ws value ws)*)? "}"`,
  array: `"[" ws (value ws ("," ws value ws)*)? "]"`,
  "date": `year "-" month-day`,
  // Days per month; 29 February only in leap years (divisible by 4, centuries by 400).
  "year": `[0-9]{4}`,
  "leap-year":
    `[0-9] [0-9] ("0" [48] | [2468] [048] | [13579] [26]) | ([02468] [048] | [13579] [26]) "00"`,
  "month-day":
    `("01" | "03" | "05" | "07" | "08" | "10" | "12") "-" ("0" [1-9] | [12] [0-9] | "3" [01])` +
    ` | ("04" | "06" | "09" | "11") "-" ("0" [1-9] | [12] [0-9] | "30")` +
    ` | "02" "-" ("0" [1-9] | "1" [0-9] | "2" [0-8])`,
  "date-full": `year "-" month-day | leap-year "-02-29"`,
  "time": `([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})?` +
    ` ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])`,
  "date-time": `date-full "T" time`,
  "uuid": `hex{8} "-" hex{4} "-" hex{4} "-" hex{4} "-" hex{12}`,
};
// What each base rule needs.
const BASE_NEEDS: Record<string, string[]> = {
  char: ["unicode-escape"],
  "unicode-escape": ["hex"],
  string: ["char"],
  number: ["integer"],
  value: ["object", "array", "string", "number", "boolean", "null"],
  object: ["ws", "string", "value"],
  array: ["ws", "value"],
  date: ["year", "month-day"],
  "date-full": ["year", "month-day", "leap-year"],
  "date-time": ["date-full", "time"],
  uuid: ["hex"],
};

type Schema = Record<string, unknown>;

/** The GBNF grammar of JSON texts that validate against `schema` (root rule `root`). Throws
 * GrammarError naming the keyword and where it is for what is not supported. */
export function jsonSchemaToGbnf(schema: unknown): string {
  return new SchemaCompiler(schema).gbnf();
}

class SchemaCompiler {
  readonly #rules = new Map<string, string>();
  readonly #base = new Set<string>();
  readonly #refs = new Map<string, string>();
  readonly #root: unknown;
  #depth = 0;

  constructor(root: unknown) {
    this.#root = root;
    this.#rules.set("root", "");
    this.#rules.set("root", this.#visit(root, "#", "root"));
  }

  gbnf(): string {
    const lines = [...this.#rules].map(([name, body]) => `${name} ::= ${body}`);
    for (const name of this.#base) lines.push(`${name} ::= ${BASE[name]}`);
    return lines.join("\n") + "\n";
  }

  #use(name: string): string {
    if (!this.#base.has(name)) {
      this.#base.add(name);
      for (const n of BASE_NEEDS[name] ?? []) this.#use(n);
    }
    return name;
  }

  /** A new rule with this body; returns its name. */
  #rule(hint: string, body: string): string {
    let name = hint.replace(/[^a-zA-Z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "rule";
    name = `s-${name}`.slice(0, 60);
    let unique = name;
    for (let i = 2; this.#rules.has(unique); i++) unique = `${name}-${i}`;
    this.#rules.set(unique, body);
    return unique;
  }

  #fail(path: string, message: string): never {
    throw new GrammarError(`JSON Schema at ${path}: ${message}`);
  }

  /** A GBNF expression for the JSON values `s` accepts. */
  #visit(s: unknown, path: string, hint: string): string {
    if (++this.#depth > MAX_NESTING) {
      this.#fail(shortPath(path), `schemas nest deeper than ${MAX_NESTING} levels`);
    }
    try {
      return this.#visitSchema(s, path, hint);
    } finally {
      this.#depth--;
    }
  }

  #visitSchema(s: unknown, path: string, hint: string): string {
    if (s === true) return this.#use("value");
    if (s === false) this.#fail(path, "the schema false matches nothing");
    if (s === null || typeof s !== "object" || Array.isArray(s)) {
      this.#fail(path, `a schema must be an object or a boolean, got ${shortJson(s)}`);
    }
    const schema = s as Schema;
    const keys = Object.keys(schema).filter((k) => !ANNOTATIONS.has(k));
    const supported = new Set([...GENERAL, ...Object.values(BY_TYPE).flat()]);
    for (const k of keys) {
      if (!supported.has(k)) {
        this.#fail(
          `${path}/${k}`,
          `the keyword "${k}" is not supported (supported: ${[...supported].join(", ")})`,
        );
      }
    }
    if (keys.length === 0) return this.#use("value");

    if ("$ref" in schema) {
      const others = keys.filter((k) => k !== "$ref");
      if (others.length) {
        this.#fail(path, `"${others[0]}" beside "$ref" is not supported (put it in the target)`);
      }
      return this.#ref(schema.$ref, path);
    }
    for (const k of ["anyOf", "oneOf"]) {
      if (k in schema) {
        const others = keys.filter((x) => x !== k);
        if (others.length) this.#fail(path, `"${others[0]}" beside "${k}" is not supported`);
        const list = schema[k];
        if (!Array.isArray(list) || list.length === 0) {
          this.#fail(`${path}/${k}`, "must be a non-empty array of schemas");
        }
        // oneOf is generated as anyOf: its branches should not overlap (the grammar does not
        // check that a value matches only one).
        return this.#group(list.map((x, i) => this.#visit(x, `${path}/${k}/${i}`, `${hint}-${i}`)));
      }
    }
    let types = this.#types(schema, path);
    if ("const" in schema || "enum" in schema) {
      const values = "const" in schema ? [schema.const] : schema.enum;
      if (!Array.isArray(values) || values.length === 0) {
        this.#fail(`${path}/enum`, "must be a non-empty array");
      }
      const others = keys.filter((k) => k !== "enum" && k !== "const" && k !== "type");
      if (others.length) {
        this.#fail(path, `"${others[0]}" beside enum/const is not supported (list the values)`);
      }
      const kept = values.filter((v) => types === undefined || types.some((t) => isType(v, t)));
      if (kept.length === 0) this.#fail(path, "no value of enum/const has the type asked for");
      return this.#group(kept.map((v) => literal(JSON.stringify(v))));
    }
    if (types === undefined) {
      // No type: what the keywords imply, or any value.
      const implied = TYPES.filter((t) => BY_TYPE[t].some((k) => k in schema));
      types = implied.length ? implied : TYPES.filter((t) => t !== "integer");
    }
    for (const k of keys) {
      if (GENERAL.includes(k)) continue;
      if (!types.some((t) => BY_TYPE[t].includes(k))) {
        this.#fail(`${path}/${k}`, `"${k}" does not apply to type ${types.join(" or ")}`);
      }
    }
    return this.#group(types.map((t) => this.#typed(t, schema, path, hint)));
  }

  #types(schema: Schema, path: string): string[] | undefined {
    if (!("type" in schema)) return undefined;
    const t = schema.type;
    const list = Array.isArray(t) ? t : [t];
    if (list.length === 0) this.#fail(`${path}/type`, "must not be empty");
    for (const x of list) {
      if (typeof x !== "string" || !TYPES.includes(x)) {
        this.#fail(
          `${path}/type`,
          `unknown type ${shortJson(x)} (types: ${TYPES.join(", ")})`,
        );
      }
    }
    return list as string[];
  }

  #group(options: string[]): string {
    const unique = [...new Set(options)];
    return unique.length === 1 ? unique[0] : `(${unique.join(" | ")})`;
  }

  #typed(type: string, s: Schema, path: string, hint: string): string {
    switch (type) {
      case "object":
        return this.#object(s, path, hint);
      case "array":
        return this.#array(s, path, hint);
      case "string":
        return this.#string(s, path, hint);
      default:
        return this.#use(type);
    }
  }

  #object(s: Schema, path: string, hint: string): string {
    const props = (s.properties ?? {}) as Record<string, unknown>;
    if (typeof props !== "object" || props === null || Array.isArray(props)) {
      this.#fail(`${path}/properties`, "must be an object");
    }
    const required = (s.required ?? []) as unknown[];
    if (!Array.isArray(required) || !required.every((r) => typeof r === "string")) {
      this.#fail(`${path}/required`, "must be an array of property names");
    }
    const names = Object.keys(props);
    for (const r of required as string[]) {
      if (!names.includes(r)) {
        this.#fail(`${path}/required`, `"${r}" is required but not in properties`);
      }
    }
    const members = names.map((name) => {
      const value = this.#visit(props[name], `${path}/properties/${name}`, `${hint}-${name}`);
      return `${literal(JSON.stringify(name))} ws ":" ws ${value} ws`;
    });
    const extra = s.additionalProperties ?? false;
    let extraMember: string | undefined;
    if (extra !== false) {
      const value = this.#visit(extra, `${path}/additionalProperties`, `${hint}-additional`);
      extraMember = `${this.#use("string")} ws ":" ws ${value} ws`;
    }
    this.#use("ws");
    // Properties in the order given, the optional ones may be left out: rest(i, comma) is the
    // members from i on, after a member (comma) or not.
    const isRequired = names.map((n) => (required as string[]).includes(n));
    const rest = new Map<string, string>();
    const restRule = (i: number, comma: boolean): string => {
      const key = `${i},${comma}`;
      if (rest.has(key)) return rest.get(key)!;
      const sep = comma ? `"," ws ` : "";
      let body: string;
      if (i === names.length) {
        if (!extraMember) body = "";
        else body = `(${sep}${extraMember} ("," ws ${extraMember})*)?`;
      } else {
        const take = `${sep}${members[i]} ${restRule(i + 1, true)}`;
        body = isRequired[i] ? take : `${take} | ${restRule(i + 1, comma) || '""'}`;
      }
      // Bodies that are short or empty inline; others get a rule.
      const name = body === "" ? "" : this.#rule(`${hint}-rest-${i}${comma ? "c" : ""}`, body);
      rest.set(key, name);
      return name;
    };
    const inner = restRule(0, false);
    return `"{" ws ${inner} "}"`.replace(/ {2,}/g, " ");
  }

  #array(s: Schema, path: string, hint: string): string {
    // `items` as a list is the older drafts' tuple (2020-12's prefixItems), with no more items.
    const tuple = Array.isArray(s.items);
    if (tuple && "prefixItems" in s) this.#fail(`${path}/items`, "a list beside prefixItems");
    const prefix = (tuple ? s.items : s.prefixItems ?? []) as unknown[];
    if (!Array.isArray(prefix)) this.#fail(`${path}/prefixItems`, "must be an array of schemas");
    const min = count(s, "minItems", path, 0);
    const max = count(s, "maxItems", path, Infinity);
    if (max < min) this.#fail(`${path}/maxItems`, `is below minItems (${min})`);
    if (max < prefix.length) {
      this.#fail(`${path}/maxItems`, `is below the ${prefix.length} prefixItems`);
    }
    // After the prefix: items, or (when not given) nothing with a prefix, any value without one.
    let items: unknown = tuple ? false : s.items;
    if (items === undefined) items = prefix.length ? (min > prefix.length ? true : false) : true;
    const elements = prefix.map((x, i) =>
      this.#visit(x, `${path}/prefixItems/${i}`, `${hint}-${i}`)
    );
    this.#use("ws");
    const extraMin = Math.max(0, min - prefix.length);
    const extraMax = max - prefix.length;
    if (items === false && extraMin > 0) {
      this.#fail(`${path}/minItems`, "asks for more items than prefixItems allows");
    }
    const item = items === false || extraMax === 0
      ? undefined
      : this.#visit(items, `${path}/items`, `${hint}-item`);
    // [ e1 , e2 , ... ]: the first element has no comma before it.
    const parts: string[] = elements.map((e) => `${e} ws`);
    const out: string[] = [];
    parts.forEach((p, i) => out.push(i === 0 ? p : `"," ws ${p}`));
    if (item !== undefined) {
      const one = `${item} ws`;
      const comma = `"," ws ${item} ws`;
      if (parts.length === 0) {
        // n items: one, then n-1 with commas.
        const more = repeat(comma, Math.max(0, extraMin - 1), extraMax - 1);
        const list = `${one} ${more}`.trim();
        out.push(extraMin > 0 ? list : `(${list})?`);
      } else out.push(repeat(comma, extraMin, extraMax));
    }
    const body = out.filter((x) => x !== "").join(" ");
    return `"[" ws ${this.#rule(`${hint}-items`, body || `""`)} "]"`;
  }

  #string(s: Schema, path: string, hint: string): string {
    const minLength = count(s, "minLength", path, 0);
    const maxLength = count(s, "maxLength", path, Infinity);
    if (maxLength < minLength) this.#fail(`${path}/maxLength`, `is below minLength (${minLength})`);
    const bounded = "minLength" in s || "maxLength" in s;
    if ("format" in s) {
      if (bounded || "pattern" in s) {
        this.#fail(path, "format together with pattern or a length is not supported");
      }
      const f = s.format;
      if (typeof f !== "string" || !JSON_SCHEMA_FORMATS.includes(f)) {
        this.#fail(
          `${path}/format`,
          `the format ${shortJson(f)} is not supported (supported: ${
            JSON_SCHEMA_FORMATS.join(", ")
          })`,
        );
      }
      return `"\\"" ${this.#use(f === "date" ? "date-full" : f)} "\\""`;
    }
    if ("pattern" in s) {
      if (bounded) this.#fail(path, "pattern together with minLength/maxLength is not supported");
      if (typeof s.pattern !== "string") this.#fail(`${path}/pattern`, "must be a string");
      let body: string;
      try {
        body = regexToGbnf(s.pattern);
      } catch (e) {
        this.#fail(`${path}/pattern`, (e as Error).message);
      }
      return `"\\"" ${this.#rule(`${hint}-pattern`, body)} "\\""`;
    }
    if (!bounded) return this.#use("string");
    this.#use("char");
    const chars = maxLength === Infinity
      ? `char{${minLength},}`
      : `char{${minLength},${maxLength}}`;
    return `"\\"" ${chars} "\\""`;
  }

  #ref(ref: unknown, path: string): string {
    if (typeof ref !== "string" || !ref.startsWith("#")) {
      this.#fail(
        `${path}/$ref`,
        `only references inside the schema ("#/...") are supported, got ${shortJson(ref)}`,
      );
    }
    const known = this.#refs.get(ref);
    if (known) return known;
    if (ref === "#") {
      this.#refs.set(ref, "root");
      return "root";
    }
    if (!ref.startsWith("#/")) this.#fail(`${path}/$ref`, `${ref} is not a JSON pointer`);
    let target: unknown = this.#root;
    for (const raw of ref.slice(2).split("/")) {
      const key = decodeURIComponent(raw).replaceAll("~1", "/").replaceAll("~0", "~");
      if (target === null || typeof target !== "object" || !(key in target)) {
        this.#fail(`${path}/$ref`, `${ref} points to nothing`);
      }
      target = (target as Record<string, unknown>)[key];
    }
    // Name the rule first, so that a schema can refer to itself.
    const name = this.#rule(`ref-${ref.slice(2)}`, "");
    this.#refs.set(ref, name);
    this.#rules.set(name, this.#visit(target, ref, name.slice(2)));
    return name;
  }
}

/** A JSON pointer cut to its first and last parts when it is long (100 levels deep). */
function shortPath(path: string): string {
  return path.length > 120 ? `${path.slice(0, 40)}/…/${path.slice(-60)}` : path;
}

/** x{min,max} spelled in GBNF. */
function repeat(x: string, min: number, max: number): string {
  if (max === 0) return "";
  if (min === 0 && max === Infinity) return `(${x})*`;
  if (max === Infinity) return `(${x}){${min},}`;
  return `(${x}){${min},${max}}`;
}

function count(s: Schema, key: string, path: string, dflt: number): number {
  const v = s[key];
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_COUNT) {
    throw new GrammarError(
      `JSON Schema at ${path}/${key}: must be an integer from 0 to ${MAX_COUNT}`,
    );
  }
  return v;
}

function isType(v: unknown, t: string): boolean {
  switch (t) {
    case "null":
      return v === null;
    case "boolean":
      return typeof v === "boolean";
    case "integer":
      return Number.isInteger(v);
    case "number":
      return typeof v === "number";
    case "string":
      return typeof v === "string";
    case "array":
      return Array.isArray(v);
    default:
      return v !== null && typeof v === "object" && !Array.isArray(v);
  }
}

/** A GBNF literal matching exactly `text`. */
export function literal(text: string): string {
  let out = '"';
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += "\\" + ch;
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + '"';
}
