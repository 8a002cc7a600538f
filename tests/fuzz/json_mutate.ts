// Structure-aware mutation of JSON documents (config.json, tokenizer.json, a safetensors header,
// chat messages): walk down to a random place, preferring the keys a kind cares about, and change
// it the way a careless writer or an attacker would. The label says where, for the check that an
// error names the field.

import { edgeNumber, edgeString, type Random } from "./random.ts";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One mutation applied: where (a path like `model.merges[3]`) and the object keys on it. */
export interface Mutation {
  path: string;
  keys: string[];
}

/** A value of any JSON type, sized anywhere from empty to large. */
export function edgeJson(r: Random, near?: Json): Json {
  switch (r.int(9)) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
    case 3:
      return edgeNumber(r, typeof near === "number" ? near : undefined);
    case 4:
      return edgeString(r);
    case 5:
      // Deep nesting, arrays inside arrays: a marker here, made real by jsonBytes or deepen
      // (a nested value this deep would overflow JSON.stringify and structuredClone).
      return `\u0000deep:${r.size(100_000)}\u0000`;
    case 6:
      // A long list of copies of what was there (or of nulls), up to ~16 MB of JSON.
      // Copies, not one object many times: a later mutation inside one must not grow them all.
      return Array.from(
        { length: copies(r.size(200_000), near ?? null) },
        () => near !== null && typeof near === "object" ? structuredClone(near) : near ?? null,
      );
    case 7:
      return {};
    default:
      return [];
  }
}

/** Copies of `item` to make, at most `wanted`, so that they come to at most ~16 MB of JSON text
 * (copies of a whole vocabulary would pass V8's longest string, and 64 MB of small arrays took
 * the fuzzer's own 1 GiB heap: a test of the fuzzer, not the engine, which refuses JSON of more
 * than a million values long before that size). */
function copies(wanted: number, item: Json): number {
  const json = JSON.stringify(item) ?? "null";
  // A deep-nesting marker is short here but becomes 2 × depth brackets in jsonText.
  let bytes = json.length + 1;
  for (const [, depth] of json.matchAll(DEEP_JSON)) bytes += 2 * Number(depth);
  return Math.min(wanted, Math.floor(16e6 / bytes));
}

/**
 * Applies 1-4 mutations to a copy of `doc` (or to `doc` itself) and says where. `focus` lists object keys to prefer
 * while walking down (the fields that size things or name things).
 */
export function mutateJson(
  doc: Json,
  r: Random,
  focus: readonly string[] = [],
  copy = true,
): { doc: Json; mutations: Mutation[] } {
  const root = { v: copy ? structuredClone(doc) : doc } as { v: Json };
  const mutations: Mutation[] = [];
  for (let n = 1 + r.size(3); n > 0; n--) mutations.push(mutateOnce(root, r, focus));
  return { doc: root.v, mutations };
}

function mutateOnce(root: { v: Json }, r: Random, focus: readonly string[]): Mutation {
  // Walk down from the root, stopping at a leaf or, with some chance, at a container.
  let parent: Record<string, Json> | Json[] = root as unknown as Record<string, Json>;
  let key: string | number = "v";
  let path = "";
  const onPath: string[] = [];
  for (let depth = 0; depth < 64; depth++) {
    const v: Json = (parent as Record<string, Json>)[key as string];
    if (v === null || typeof v !== "object") break;
    const keys: (string | number)[] = Array.isArray(v) ? [] : Object.keys(v);
    const size = Array.isArray(v) ? v.length : keys.length;
    if (size === 0 || (depth > 0 && r.chance(0.25))) break;
    const preferred = keys.filter((k) => focus.includes(k as string));
    const next: string | number = Array.isArray(v)
      ? r.int(v.length)
      : preferred.length > 0 && r.chance(0.75)
      ? r.pick(preferred)
      : r.pick(keys);
    parent = v;
    key = next;
    if (typeof next === "number") path += `[${next}]`;
    else {
      path += path ? `.${next}` : next;
      onPath.push(next);
    }
  }
  const holder = parent as Record<string, Json>;
  const old = holder[key as string];
  const op = r.int(10);
  if (op <= 3) holder[key as string] = edgeJson(r, old);
  else if (op === 4 && typeof old === "number") {
    holder[key as string] = edgeNumber(r, old);
  } else if (op === 5 && parent !== root) {
    // Remove it.
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete holder[key as string];
  } else if (op === 6 && Array.isArray(old) && old.length > 0) {
    // Repeat an item many times, or cut the list short.
    if (r.chance(0.5)) {
      const item = old[r.int(old.length)];
      for (let i = copies(r.size(20_000), item); i > 0; i--) old.push(structuredClone(item));
    } else old.length = r.int(old.length);
  } else if (op === 7 && old !== null && typeof old === "object" && !Array.isArray(old)) {
    // A new key, sometimes one that shadows Object.prototype's.
    old[r.chance(0.5) ? edgeString(r).slice(0, 64) : "__proto__"] = edgeJson(r);
  } else if (op === 8 && typeof old === "string") {
    holder[key as string] = r.chance(0.5)
      ? old + edgeString(r)
      : old.slice(0, r.int(old.length + 1));
  } else if (op === 9 && Array.isArray(parent) && parent.length > 1) {
    // Swap with a sibling.
    const j = r.int(parent.length);
    [parent[key as number], parent[j]] = [parent[j], parent[key as number]];
  } else holder[key as string] = edgeJson(r, old);
  return { path: path || "(root)", keys: onPath };
}

/** The marker for a deep nesting, as a string in a document and as JSON text. */
// deno-lint-ignore no-control-regex -- the marker is delimited by NULs, which JSON never holds raw
const DEEP = /^\u0000deep:(\d+)\u0000$/;
const DEEP_JSON = /"\\u0000deep:(\d+)\\u0000"/g;

/** JSON text with the deep-nesting markers made real. */
export function jsonText(doc: Json): string {
  return JSON.stringify(doc).replace(
    DEEP_JSON,
    (_, depth) => "[".repeat(Number(depth)) + "]".repeat(Number(depth)),
  );
}

/** A JS value with the deep-nesting markers made real (built without recursion). One nesting is
 * made per depth and shared by every marker of that depth: 200,000 copies of a marker 100,000
 * deep would be 2e10 arrays (as text, the copies were sized to fit). */
export function deepen(doc: Json, made = new Map<number, unknown[]>()): unknown {
  const deep = typeof doc === "string" ? DEEP.exec(doc) : null;
  if (deep) {
    const depth = Number(deep[1]);
    let v = made.get(depth);
    if (!v) {
      v = [];
      for (let d = depth; d > 1; d--) v = [v];
      made.set(depth, v);
    }
    return v;
  }
  if (Array.isArray(doc)) return doc.map((x) => deepen(x, made));
  if (doc !== null && typeof doc === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc)) {
      Object.defineProperty(out, k, { value: deepen(v, made), enumerable: true, writable: true });
    }
    return out;
  }
  return doc;
}

/** JSON text, sometimes damaged as bytes: cut short, a byte changed, invalid UTF-8, a BOM. */
export function jsonBytes(doc: Json, r: Random): { bytes: Uint8Array; damaged: boolean } {
  const bytes = new TextEncoder().encode(jsonText(doc));
  if (!r.chance(0.15)) return { bytes, damaged: false };
  switch (r.int(4)) {
    case 0:
      return { bytes: bytes.slice(0, r.int(bytes.length)), damaged: true };
    case 1: {
      const b = bytes.slice();
      b[r.int(b.length)] = r.int(256);
      return { bytes: b, damaged: true };
    }
    case 2: {
      const at = r.int(bytes.length);
      const b = new Uint8Array(bytes.length + 2);
      b.set(bytes.subarray(0, at));
      b.set([0xff, 0xfe], at);
      b.set(bytes.subarray(at), at + 2);
      return { bytes: b, damaged: true };
    }
    default: {
      const b = new Uint8Array(bytes.length + 3);
      b.set([0xef, 0xbb, 0xbf]);
      b.set(bytes, 3);
      return { bytes: b, damaged: true };
    }
  }
}
