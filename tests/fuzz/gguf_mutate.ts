// Structure-aware mutation of GGUF files. The file is read into its parts (metadata entries,
// tensor records, data) with a reader of the fuzzer's own (written from the GGUF spec, not the
// engine's parser, so that a mistake there is not shared), changed part by part, and written
// back; the writer notes where each count, length, type and offset lies, so that one of them
// can then be made to lie about the rest.

import { EDGE_INTEGERS, edgeString, type Random } from "./random.ts";

type Scalar = number | bigint | boolean | string;
/** A metadata value: a scalar, or an array of one element type. */
type Value = Scalar | { elementType: number; items: Value[] };

interface Entry {
  key: string;
  type: number;
  value: Value;
}
interface TensorRecord {
  name: string;
  dims: bigint[];
  type: number;
  offset: bigint;
}
interface GgufParts {
  version: number;
  entries: Entry[];
  tensors: TensorRecord[];
  data: Uint8Array;
}

// Value types (GGUF spec): widths of the scalar ones.
const U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12;
const WIDTH: Record<number, number> = {
  [U8]: 1,
  [I8]: 1,
  [U16]: 2,
  [I16]: 2,
  [U32]: 4,
  [I32]: 4,
  [F32]: 4,
  [BOOL]: 1,
  [U64]: 8,
  [I64]: 8,
  [F64]: 8,
};

/** Reads a well-formed GGUF (the fixture) into its parts. */
export function readParts(bytes: Uint8Array): GgufParts {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder();
  let p = 4;
  const u32 = () => (p += 4, view.getUint32(p - 4, true));
  const u64 = () => (p += 8, view.getBigUint64(p - 8, true));
  const str = () => {
    const n = Number(u64());
    p += n;
    return utf8.decode(bytes.subarray(p - n, p));
  };
  const value = (type: number): Value => {
    switch (type) {
      case U8:
        return (p += 1, view.getUint8(p - 1));
      case I8:
        return (p += 1, view.getInt8(p - 1));
      case U16:
        return (p += 2, view.getUint16(p - 2, true));
      case I16:
        return (p += 2, view.getInt16(p - 2, true));
      case U32:
        return u32();
      case I32:
        return (p += 4, view.getInt32(p - 4, true));
      case F32:
        return (p += 4, view.getFloat32(p - 4, true));
      case BOOL:
        return (p += 1, view.getUint8(p - 1) !== 0);
      case STRING:
        return str();
      case U64:
        return u64();
      case I64:
        return (p += 8, view.getBigInt64(p - 8, true));
      case F64:
        return (p += 8, view.getFloat64(p - 8, true));
      case ARRAY: {
        const elementType = u32();
        const n = Number(u64());
        const items: Value[] = [];
        for (let i = 0; i < n; i++) items.push(value(elementType));
        return { elementType, items };
      }
    }
    throw new Error(`fixture GGUF: value type ${type}`);
  };
  const version = u32();
  const nTensors = Number(u64());
  const nEntries = Number(u64());
  const entries: Entry[] = [];
  for (let i = 0; i < nEntries; i++) {
    const key = str();
    const type = u32();
    entries.push({ key, type, value: value(type) });
  }
  const tensors: TensorRecord[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const dims = Array.from({ length: u32() }, () => u64());
    tensors.push({ name, dims, type: u32(), offset: u64() });
  }
  const alignment = Number(entries.find((e) => e.key === "general.alignment")?.value ?? 32);
  return { version, entries, tensors, data: bytes.slice(Math.ceil(p / alignment) * alignment) };
}

/** A field of the written header: where it lies, how wide, and what it is (for labels). */
interface Field {
  at: number;
  width: 4 | 8;
  label: string;
}

/** Writes the parts back as a GGUF file, noting the fields that count, size, type or place. */
function writeParts(g: GgufParts): { bytes: Uint8Array; fields: Field[] } {
  const chunks: Uint8Array[] = [];
  const fields: Field[] = [];
  let size = 0;
  const put = (b: Uint8Array) => (chunks.push(b), size += b.length);
  const num = (width: 1 | 2 | 4 | 8, set: (v: DataView) => void, label?: string) => {
    const b = new Uint8Array(width);
    set(new DataView(b.buffer));
    if (label && (width === 4 || width === 8)) fields.push({ at: size, width, label });
    put(b);
  };
  const u32 = (v: number, label?: string) => num(4, (d) => d.setUint32(0, v >>> 0, true), label);
  const u64 = (v: bigint | number, label?: string) =>
    num(8, (d) => d.setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true), label);
  const str = (s: string, label: string) => {
    const b = new TextEncoder().encode(s);
    u64(b.length, `length of ${label}`);
    put(b);
  };
  // Items of an array are not noted (a count or length inside a 262,144-item vocabulary would
  // crowd out the header's own fields), except the first string's length.
  const value = (type: number, v: Value, label: string, item = -1) => {
    const noted = item <= 0 ? label : undefined;
    if (type === ARRAY) {
      const a = v as { elementType: number; items: Value[] };
      u32(a.elementType, noted && `element type of ${label}`);
      u64(a.items.length, noted && `count of ${label}`);
      a.items.forEach((x, i) => value(a.elementType, x, label, i));
    } else if (type === STRING) {
      const b = new TextEncoder().encode(String(v));
      u64(b.length, noted && `length of ${label}`);
      put(b);
    } else if (type === U64 || type === I64) {
      u64(typeof v === "bigint" ? v : BigInt(Math.trunc(Number(v) || 0)), noted);
    } else if (type === F32) num(4, (d) => d.setFloat32(0, Number(v), true));
    else if (type === F64) num(8, (d) => d.setFloat64(0, Number(v), true));
    else if (type === BOOL) num(1, (d) => d.setUint8(0, typeof v === "number" ? v : v ? 1 : 0));
    else if (WIDTH[type] === 4) u32(Number(v), noted);
    else if (WIDTH[type] === 2) num(2, (d) => d.setUint16(0, Number(v) & 0xffff, true));
    else num(1, (d) => d.setUint8(0, Number(v) & 0xff));
  };
  put(new TextEncoder().encode("GGUF"));
  u32(g.version, "version");
  u64(g.tensors.length, "tensor count");
  u64(g.entries.length, "metadata count");
  for (const e of g.entries) {
    str(e.key, `key ${e.key}`);
    u32(e.type, `type of ${e.key}`);
    value(e.type, e.value, e.key);
  }
  for (const t of g.tensors) {
    str(t.name, `name of ${t.name}`);
    u32(t.dims.length, `dimension count of ${t.name}`);
    for (const d of t.dims) u64(d, `dimension of ${t.name}`);
    u32(t.type, `type of ${t.name}`);
    u64(t.offset, `offset of ${t.name}`);
  }
  const alignment = Number(g.entries.find((e) => e.key === "general.alignment")?.value ?? 32);
  const padded = alignment > 0 && alignment < 1 << 20
    ? Math.ceil(size / alignment) * alignment
    : size;
  put(new Uint8Array(padded - size));
  put(g.data);
  const bytes = new Uint8Array(size);
  let p = 0;
  for (const c of chunks) (bytes.set(c, p), p += c.length);
  return { bytes, fields };
}

/** A value of the same type, at an edge, or one of another type. */
function edgeValue(r: Random, type: number, old: Value): { type: number; value: Value } {
  if (r.chance(0.15)) {
    // Another type altogether.
    const t = r.pick([U8, I32, U32, F32, BOOL, STRING, U64, I64, F64, ARRAY, 13, 255]);
    if (t === ARRAY) return { type: t, value: { elementType: r.pick([U32, STRING]), items: [] } };
    return { type: t, value: t === STRING ? edgeString(r) : 1 };
  }
  if (type === STRING) return { type, value: edgeString(r) };
  if (type === BOOL) return { type, value: r.pick([0, 1, 2, 255]) as unknown as Value };
  if (type === F32 || type === F64) {
    return { type, value: r.pick([NaN, Infinity, -Infinity, 0, -0, 1e38, 1e-45, -1]) };
  }
  if (type === ARRAY) return { type, value: old };
  const n = r.pick(EDGE_INTEGERS);
  return { type, value: type === U64 || type === I64 ? BigInt(Math.trunc(n)) : n };
}

/** Changes one array entry (a vocabulary, its scores or token types). */
function mutateArray(r: Random, a: { elementType: number; items: Value[] }): void {
  const i = r.int(Math.max(1, a.items.length));
  switch (r.int(7)) {
    case 0: // one item at an edge
      if (a.items.length) a.items[i] = edgeValue(r, a.elementType, a.items[i]).value;
      break;
    case 1: // a long item: a very long vocabulary piece
      if (a.elementType === STRING) a.items[i] = "ab".repeat(r.size(1 << 19));
      break;
    case 2: // duplicates of one item
      if (a.items.length) a.items[r.int(a.items.length)] = a.items[i];
      break;
    case 3: // cut short
      a.items.length = r.int(a.items.length + 1);
      break;
    case 4: // grown with copies
      for (let n = r.size(100_000); n > 0; n--) a.items.push(a.items[i] ?? 0);
      break;
    case 5: // another element type, the items kept
      a.elementType = r.pick([U8, U32, I32, F32, STRING, U64, ARRAY, 99]);
      if (a.elementType === ARRAY || a.elementType === 99) a.items = a.items.slice(0, 4);
      if (a.elementType === ARRAY) {
        a.items = a.items.map(() => ({ elementType: U8, items: [1, 2] }));
      }
      break;
    default: // emptied
      a.items = [];
  }
}

/** Removes a random item of `list`, repeats it, or renames it; the label names it (and, renamed,
 * its new name too, which is what a message about it can say). */
function removeRepeatOrRename<T>(
  r: Random,
  list: T[],
  labels: string[],
  how: { name: (x: T) => string; copy: (x: T) => T; rename: (x: T) => void },
): void {
  const i = r.int(list.length);
  const item = list[i];
  labels.push(how.name(item));
  const what = r.int(3);
  if (what === 0) list.splice(i, 1);
  else if (what === 1) list.push(how.copy(item));
  else {
    how.rename(item);
    labels.push(how.name(item));
  }
}

/** The fixture's parts with 1-3 structural changes, written back, then perhaps a field made to
 * lie or the bytes cut. Returns the file and a label naming what was changed. */
export function mutateGguf(base: GgufParts, r: Random): { bytes: Uint8Array; labels: string[] } {
  const g: GgufParts = {
    version: base.version,
    entries: base.entries.map((e) => ({ ...e, value: cloneValue(e.value) })),
    tensors: base.tensors.map((t) => ({ ...t, dims: [...t.dims] })),
    data: base.data,
  };
  const labels: string[] = [];
  for (let n = 1 + r.size(2); n > 0; n--) {
    const op = r.int(12);
    if (op <= 3 && g.entries.length) {
      // A metadata value.
      const e = r.pick(g.entries);
      if (e.type === ARRAY && r.chance(0.8)) {
        mutateArray(r, e.value as { elementType: number; items: Value[] });
      } else Object.assign(e, edgeValue(r, e.type, e.value));
      labels.push(e.key);
    } else if (op === 4 && g.entries.length) {
      // A key removed, repeated or renamed.
      removeRepeatOrRename(r, g.entries, labels, {
        name: (e) => e.key,
        copy: (e) => ({ ...e, value: cloneValue(e.value) }),
        rename: (e) => e.key = r.chance(0.5) ? edgeString(r).slice(0, 1 << 16) : `${e.key}\u0000`,
      });
    } else if (op <= 7 && g.tensors.length) {
      // A tensor record: a dimension, the type, the offset.
      const t = r.pick(g.tensors);
      labels.push(t.name);
      const what = r.int(4);
      if (what === 0 && t.dims.length) {
        t.dims[r.int(t.dims.length)] = BigInt.asUintN(
          64,
          BigInt(Math.trunc(r.pick(EDGE_INTEGERS))),
        );
      } else if (what === 1) t.dims = Array.from({ length: r.pick([0, 3, 4, 5, 64]) }, () => 2n);
      else if (what === 2) t.type = r.pick([1, 2, 3, 8, 12, 14, 30, 31, 39, 99, 2 ** 31]);
      else t.offset = r.pick([0n, 1n, 7n, 2n ** 32n, 2n ** 63n, t.offset + 32n, t.offset - 32n]);
    } else if (op === 8 && g.tensors.length) {
      // A tensor removed, repeated, or renamed (to another's name, or to something odd).
      removeRepeatOrRename(r, g.tensors, labels, {
        name: (t) => t.name,
        copy: (t) => ({ ...t, dims: [...t.dims] }),
        rename: (t) =>
          t.name = r.chance(0.5) ? r.pick(g.tensors).name : edgeString(r).slice(0, 1 << 16),
      });
    } else if (op === 9) {
      g.version = r.pick([0, 1, 2, 4, 2 ** 31]);
      labels.push("version");
    } else if (op === 10) {
      // Data cut short (the weights end early).
      g.data = g.data.subarray(0, r.int(g.data.length));
      labels.push("tensor data");
    } else {
      // The tokenizer taken out, or its model named as something else.
      const key = r.pick(["tokenizer.ggml.tokens", "tokenizer.ggml.model", "general.architecture"]);
      const i = g.entries.findIndex((e) => e.key === key);
      if (i >= 0) {
        if (r.chance(0.5)) g.entries.splice(i, 1);
        else g.entries[i] = { key, type: STRING, value: edgeString(r) };
      }
      labels.push(key);
    }
  }
  let { bytes, fields } = writeParts(g);
  if (r.chance(0.3) && fields.length) {
    // A count, length, type or offset that lies about what follows.
    const f = r.pick(fields);
    const v = new DataView(bytes.buffer);
    const n = r.pick(EDGE_INTEGERS);
    if (f.width === 4) v.setUint32(f.at, n >>> 0, true);
    else v.setBigUint64(f.at, BigInt.asUintN(64, BigInt(Math.trunc(n))), true);
    labels.push(f.label);
  }
  if (r.chance(0.1)) {
    // Cut anywhere, often inside the header.
    bytes = bytes.slice(
      0,
      r.chance(0.5) ? r.int(Math.min(bytes.length, 20_000)) : r.int(bytes.length),
    );
    labels.push("(truncated)");
  }
  if (r.chance(0.05)) {
    // A few bytes of the header changed at random.
    for (let k = r.size(8); k >= 0; k--) bytes[r.int(Math.min(bytes.length, 16_384))] = r.int(256);
    labels.push("(bytes)");
  }
  return { bytes, labels };
}

function cloneValue(v: Value): Value {
  return typeof v === "object" && v !== null
    ? { elementType: v.elementType, items: v.items.slice() }
    : v;
}

export type { GgufParts };
