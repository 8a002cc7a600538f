// The GGUF format (llama.cpp's single-file models), versions 2 and 3:
//
//   "GGUF" · u32 version · u64 tensor count · u64 metadata count
//   metadata: { string key, u32 type, value }*        (strings are u64 length + UTF-8 bytes)
//   tensor infos: { string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset }*
//   padding to general.alignment (default 32), then the tensor data (offsets are relative to it)
//
// dims are innermost first: a matrix of `rows` rows of `cols` is dims [cols, rows].
// Everything read from the file is bounds-checked before it is used: counts, string and array
// lengths against the bytes that remain, tensor sizes and offsets against the file, so a hostile
// or truncated file is an error, never a giant allocation or an out-of-bounds read.

import { nameShort } from "./quote.ts";
import type { ByteSource } from "../io.ts";

/** ggml tensor types, by number (the ones a Gemma GGUF may hold). */
export const GGML_TYPES: Record<number, { name: string; blockElems: number; blockBytes: number }> =
  {
    0: { name: "F32", blockElems: 1, blockBytes: 4 },
    1: { name: "F16", blockElems: 1, blockBytes: 2 },
    2: { name: "Q4_0", blockElems: 32, blockBytes: 18 },
    3: { name: "Q4_1", blockElems: 32, blockBytes: 20 },
    6: { name: "Q5_0", blockElems: 32, blockBytes: 22 },
    7: { name: "Q5_1", blockElems: 32, blockBytes: 24 },
    8: { name: "Q8_0", blockElems: 32, blockBytes: 34 },
    10: { name: "Q2_K", blockElems: 256, blockBytes: 84 },
    11: { name: "Q3_K", blockElems: 256, blockBytes: 110 },
    12: { name: "Q4_K", blockElems: 256, blockBytes: 144 },
    13: { name: "Q5_K", blockElems: 256, blockBytes: 176 },
    14: { name: "Q6_K", blockElems: 256, blockBytes: 210 },
    30: { name: "BF16", blockElems: 1, blockBytes: 2 },
  };

/** One tensor of a GGUF file. */
export interface GgufTensor {
  name: string;
  /** ggml type number (see GGML_TYPES). */
  type: number;
  /** Dimensions, innermost first (as stored). */
  dims: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  /** Byte length of the data. */
  bytes: number;
}

/** A parsed GGUF header. */
export interface GgufFile {
  version: number;
  metadata: Map<string, unknown>;
  /** Each metadata value's stored type (and item type, for arrays), so it can be copied as is. */
  metadataTypes: Map<string, GgufValueType>;
  tensors: GgufTensor[];
}

/** A metadata value's type: a GGUF value type number, and for arrays (9) the item type. */
export interface GgufValueType {
  type: number;
  itemType?: number;
}

/** GGUF metadata value types by name (the numbers the format stores). */
export const GGUF_VALUE = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
} as const;

/** Metadata value types. */
const SCALAR: Record<number, [number, (v: DataView, o: number) => number | bigint | boolean]> = {
  0: [1, (v, o) => v.getUint8(o)],
  1: [1, (v, o) => v.getInt8(o)],
  2: [2, (v, o) => v.getUint16(o, true)],
  3: [2, (v, o) => v.getInt16(o, true)],
  4: [4, (v, o) => v.getUint32(o, true)],
  5: [4, (v, o) => v.getInt32(o, true)],
  6: [4, (v, o) => v.getFloat32(o, true)],
  7: [1, (v, o) => v.getUint8(o) !== 0],
  10: [8, (v, o) => v.getBigUint64(o, true)],
  11: [8, (v, o) => v.getBigInt64(o, true)],
  12: [8, (v, o) => v.getFloat64(o, true)],
};
const STRING = 8;
const ARRAY = 9;

/** A metadata array left undecoded (see readGgufHeader's `lazyArrays`): its length and type. */
export class GgufSkippedArray {
  constructor(readonly itemType: number, readonly length: number) {}
}

/** Bytes of header read at most (metadata with a 262k-token vocabulary is ~10 MB). */
const MAX_HEADER = 256 << 20;

/**
 * Reads a GGUF header from a file: the header is read in growing pieces (vocabulary arrays make it
 * large), never more than the file holds or MAX_HEADER. `firstRead` (default 1 MiB) is the first
 * piece: a local file can take one that holds a whole vocabulary at once.
 */
export async function readGgufHeader(
  source: ByteSource,
  options: { lazyArrays?: boolean; firstRead?: number } = {},
): Promise<GgufFile> {
  const fail = (msg: string): never => {
    throw new Error(`${source.name}: ${msg}`);
  };
  if (source.size < 24) fail(`${source.size} bytes is too short for a GGUF file`);
  let have = Math.min(source.size, MAX_HEADER, options.firstRead ?? 1 << 20);
  let buf = new Uint8Array(have);
  await source.read(0, buf);
  for (;;) {
    try {
      // Until the whole header is in, parse skipping the big arrays (cheap); then once, as asked.
      const skimmed = parseGguf(buf, source.size, source.name, true);
      return options.lazyArrays ? skimmed : parseGguf(buf, source.size, source.name, false);
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
      if (have >= source.size || have >= MAX_HEADER) {
        fail(
          have >= source.size
            ? `the header runs past the end of the file in ${e.field}, at byte ${e.at} ` +
              "(truncated?)"
            : "header larger than 256 MiB",
        );
      }
      // Doubling keeps the last piece no larger than what came before it, so the bytes read past
      // the header's end stay few (a URL source keeps its last small read, and the tensor data
      // right after the header comes from it instead of a second request).
      const next = Math.min(source.size, MAX_HEADER, have * 2);
      const bigger = new Uint8Array(next);
      bigger.set(buf);
      await source.read(have, bigger.subarray(have));
      buf = bigger;
      have = next;
    }
  }
}

/** The bytes read so far end inside the header: `field` is what was being read, at byte `at`. */
class NeedMore extends Error {
  constructor(readonly field: string, readonly at: number) {
    super(`need more bytes for ${field}`);
  }
}

/**
 * A long array of strings (a vocabulary) as one string and where each item begins in it, in
 * UTF-16 units (item i is joined[offsets[i], offsets[i + 1])). Iterable like the array it stands
 * for.
 */
export class GgufStrings implements Iterable<string> {
  constructor(readonly joined: string, readonly offsets: Uint32Array) {}
  get length(): number {
    return this.offsets.length - 1;
  }
  /** Item i. */
  at(i: number): string {
    return this.joined.slice(this.offsets[i], this.offsets[i + 1]);
  }
  *[Symbol.iterator](): Iterator<string> {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }
}

/**
 * The UTF-16 length of bytes[start, end) decoded, or -1 if they are not well-formed UTF-8 (then a
 * decoder puts U+FFFD in, and what it does at the edges depends on the bytes around them).
 */
export function utf16Length(bytes: Uint8Array, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end;) {
    const b = bytes[i];
    if (b < 0x80) {
      n++;
      i++;
      continue;
    }
    // Lead byte: how many continuation bytes follow.
    const more = b >= 0xc2 && b < 0xe0
      ? 1
      : b >= 0xe0 && b < 0xf0
      ? 2
      : b >= 0xf0 && b < 0xf5
      ? 3
      : -1;
    if (more < 0 || i + more >= end) return -1; // not a lead byte, or cut short
    let cp = b & (0x3f >> more);
    for (let k = 1; k <= more; k++) {
      const c = bytes[i + k];
      if ((c & 0xc0) !== 0x80) return -1;
      cp = (cp << 6) | (c & 0x3f);
    }
    // Overlong, a surrogate, or past U+10FFFF.
    if (cp < MIN_CODE_POINT[more] || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) return -1;
    n += cp >= 0x10000 ? 2 : 1;
    i += more + 1;
  }
  return n;
}
/** By continuation bytes: the smallest code point that many may encode (less is overlong). */
const MIN_CODE_POINT = [0, 0x80, 0x800, 0x10000];

/**
 * Parses a GGUF header from its first bytes; throws NeedMore if they are not enough. With
 * `lazyArrays`, arrays of more than 1024 items (the vocabulary's pieces, scores and types: tens
 * of MB as JS values) are checked and skipped, and stand as GgufSkippedArray in the metadata.
 */
export function parseGguf(
  bytes: Uint8Array,
  fileSize: number,
  where: string,
  lazyArrays = false,
): GgufFile {
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${msg}`);
  };
  // Where the field being read began: errors in the header's structure say it (a lying length
  // makes everything after it garbage, and the byte is what a hex dump needs).
  let fieldStart = 0;
  const failHere = (msg: string): never => fail(`${msg} (header byte ${fieldStart})`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = 0;
  let reading = "the header";
  const need = (n: number) => {
    if (o + n > bytes.length) throw new NeedMore(reading, fieldStart);
  };
  const u32 = () => (fieldStart = o, need(4), o += 4, view.getUint32(o - 4, true));
  const u64 = (what: string): number => {
    fieldStart = o;
    need(8);
    const lo = view.getUint32(o, true), hi = view.getUint32(o + 4, true);
    o += 8;
    // Read as two halves: a BigInt per value was most of the time spent on a vocabulary.
    if (hi >= 0x200000) failHere(`${what} ${view.getBigUint64(o - 8, true)} is too large`);
    return hi * 0x100000000 + lo;
  };
  const dec = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  const str = (what: string): string => {
    const n = u64(`length of ${what}`);
    if (n > fileSize) failHere(`${what} claims ${n} bytes, more than the file holds`);
    need(n);
    o += n;
    return dec.decode(bytes.subarray(o - n, o));
  };
  /**
   * `n` strings in a row (a vocabulary: 262,144 of them). A TextDecoder call each costs most of
   * the header's time, so the well-formed ones are copied together and decoded in one call, then
   * cut by their UTF-16 lengths; an ill-formed one is decoded on its own, as `str` does. A long
   * array stays one string (GgufStrings): a JS string per item would cost ~10 MB of small objects.
   */
  const strings = (n: number, what: string): string[] | GgufStrings => {
    const starts = new Float64Array(n), ends = new Float64Array(n);
    const cuts = new Uint32Array(n + 1), wellFormed = new Uint8Array(n);
    let total = 0, illFormed = 0;
    for (let i = 0; i < n; i++) {
      const len = u64(`length of ${what} ${i}`);
      if (len > fileSize) failHere(`${what} ${i} claims ${len} bytes, more than the file holds`);
      need(len);
      starts[i] = o;
      ends[i] = o += len;
      const units = utf16Length(bytes, starts[i], ends[i]);
      wellFormed[i] = units >= 0 ? 1 : 0;
      cuts[i + 1] = cuts[i] + Math.max(units, 0);
      if (units >= 0) total += len;
      else illFormed++;
    }
    const together = new Uint8Array(total);
    for (let i = 0, at = 0; i < n; i++) {
      if (!wellFormed[i]) continue;
      together.set(bytes.subarray(starts[i], ends[i]), at);
      at += ends[i] - starts[i];
    }
    const decoded = dec.decode(together);
    const item = (i: number) =>
      wellFormed[i]
        ? decoded.slice(cuts[i], cuts[i + 1])
        : dec.decode(bytes.subarray(starts[i], ends[i]));
    if (n <= 1024) return Array.from({ length: n }, (_, i) => item(i));
    if (illFormed === 0) return new GgufStrings(decoded, cuts);
    const parts = Array.from({ length: n }, (_, i) => item(i));
    const offsets = new Uint32Array(n + 1);
    for (let i = 0; i < n; i++) offsets[i + 1] = offsets[i] + parts[i].length;
    return new GgufStrings(parts.join(""), offsets);
  };

  need(8);
  if (view.getUint32(0, true) !== 0x46554747) failHere("not a GGUF file (bad magic)");
  o = 4;
  const version = u32();
  if (version !== 2 && version !== 3) {
    failHere(`GGUF version ${version} is not supported (2 and 3 are)`);
  }
  const tensorCount = u64("tensor count");
  const kvCount = u64("metadata count");
  // Every entry takes at least 8 bytes: larger counts cannot be honest.
  if (tensorCount > fileSize / 8 || kvCount > fileSize / 8) {
    fail(
      `implausible counts (${tensorCount} tensors at header byte 8, ${kvCount} metadata ` +
        "entries at byte 16)",
    );
  }

  // `key` is escaped and cut (a lying key length makes it raw bytes).
  const value = (type: number, key: string): unknown => {
    if (type === STRING) return str(`value of ${key}`);
    if (type === ARRAY) {
      const itemType = u32();
      const n = u64(`array length of ${key}`);
      if (n > fileSize) failHere(`${key}: array of ${n} items is larger than the file`);
      const skip = lazyArrays && n > 1024;
      if (itemType === STRING) {
        if (!skip) return strings(n, `item of ${key}`);
        for (let i = 0; i < n; i++) {
          const len = u64(`length of item ${i} of ${key}`);
          if (len > fileSize) {
            failHere(`item ${i} of ${key} claims ${len} bytes, more than the file holds`);
          }
          need(len);
          o += len;
        }
        return new GgufSkippedArray(itemType, n);
      }
      const s = SCALAR[itemType];
      if (!s) failHere(`${key}: unknown array item type ${itemType}`);
      need(n * s[0]);
      if (skip) {
        o += n * s[0];
        return new GgufSkippedArray(itemType, n);
      }
      const out = new Array(n);
      for (let i = 0; i < n; i++) out[i] = s[1](view, o + i * s[0]);
      o += n * s[0];
      return out;
    }
    const s = SCALAR[type];
    if (!s) return failHere(`${key}: unknown value type ${type}`);
    need(s[0]);
    o += s[0];
    return s[1](view, o - s[0]);
  };
  const metadata = new Map<string, unknown>();
  const metadataTypes = new Map<string, GgufValueType>();
  for (let i = 0; i < kvCount; i++) {
    reading = `metadata entry ${i}`;
    const key = str(`key of metadata entry ${i}`);
    const shown = nameShort(key);
    reading = `metadata ${shown}`;
    const type = u32();
    if (type === ARRAY) {
      need(4);
      metadataTypes.set(key, { type, itemType: view.getUint32(o, true) });
    } else metadataTypes.set(key, { type });
    metadata.set(key, value(type, shown));
  }

  const infos: { name: string; dims: number[]; type: number; rel: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    reading = `tensor ${i}'s entry`;
    const name = str(`name of tensor ${i}`);
    const shown = `tensor ${i} (${nameShort(name)})`;
    reading = `${shown}'s entry`;
    const nDims = u32();
    if (nDims < 1 || nDims > 4) failHere(`${shown}: ${nDims} dimensions`);
    const dims = Array.from({ length: nDims }, () => u64(`dimension of ${shown}`));
    const type = u32();
    const rel = u64(`offset of ${shown}`);
    infos.push({ name, dims, type, rel });
  }
  const align = Number(metadata.get("general.alignment") ?? 32);
  if (!Number.isInteger(align) || align < 1 || align > 65536 || (align & (align - 1)) !== 0) {
    fail(`general.alignment ${align} is not a power of two`);
  }
  const dataStart = Math.ceil(o / align) * align;
  const tensors: GgufTensor[] = infos.map((t) => {
    const info = GGML_TYPES[t.type];
    if (!info) fail(`tensor ${nameShort(t.name)}: unknown ggml type ${t.type}`);
    const numel = t.dims.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(numel) || numel > fileSize * 8) {
      fail(`tensor ${nameShort(t.name)}: ${t.dims.join("×")} elements cannot fit the file`);
    }
    if (t.dims[0] % info.blockElems !== 0) {
      fail(
        `tensor ${nameShort(t.name)}: rows of ${
          t.dims[0]
        } are not a multiple of the ${info.name} block (${info.blockElems})`,
      );
    }
    const bytes = (numel / info.blockElems) * info.blockBytes;
    const offset = dataStart + t.rel;
    if (t.rel % align !== 0) {
      fail(`tensor ${nameShort(t.name)}: offset ${t.rel} is not aligned to ${align}`);
    }
    if (offset + bytes > fileSize) {
      fail(
        `tensor ${nameShort(t.name)}: data ends at byte ${
          offset + bytes
        }, past the end of the ${fileSize}-byte file (truncated?)`,
      );
    }
    return { name: t.name, type: t.type, dims: t.dims, offset, bytes };
  });
  // Empty tensors take no bytes, so they overlap nothing.
  const sorted = tensors.filter((t) => t.bytes > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].offset < sorted[i - 1].offset + sorted[i - 1].bytes) {
      fail(`tensors ${nameShort(sorted[i - 1].name)} and ${nameShort(sorted[i].name)} overlap`);
    }
  }
  return { version, metadata, metadataTypes, tensors };
}

// ---- writing ----------------------------------------------------------------------------------

/** One metadata entry to write. Numbers go as `type`; arrays as `type` 9 with `itemType`. */
export interface GgufMetaEntry extends GgufValueType {
  key: string;
  value: unknown;
}

/** One tensor to write: its place in the data section is assigned by encodeGgufHeader. */
export interface GgufTensorOut {
  name: string;
  /** ggml type number. */
  type: number;
  /** Dimensions, innermost first. */
  dims: number[];
}

/** Bytes of a tensor's data. */
export function ggmlBytes(type: number, dims: number[]): number {
  const info = GGML_TYPES[type];
  const numel = dims.reduce((a, b) => a * b, 1);
  if (dims[0] % info.blockElems !== 0) {
    throw new Error(
      `rows of ${dims[0]} are not a multiple of the ${info.name} block (${info.blockElems})`,
    );
  }
  return (numel / info.blockElems) * info.blockBytes;
}

/**
 * Encodes a GGUF (version 3) header: metadata, tensor infos and the padding up to the data. Each
 * tensor's data goes at `offsets[i]` bytes after the header (aligned to `alignment`; pad between
 * tensors with zeros); `dataBytes` is the size of the data section.
 */
export function encodeGgufHeader(
  meta: GgufMetaEntry[],
  tensors: GgufTensorOut[],
  alignment = 32,
): { header: Uint8Array; offsets: number[]; dataBytes: number } {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  const u32 = (v: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    parts.push(b);
  };
  const u64 = (v: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    parts.push(b);
  };
  const str = (s: string) => {
    const b = enc.encode(s);
    u64(b.length);
    parts.push(b);
  };
  const scalar = (type: number, v: unknown, key: string) => {
    if (type === STRING) {
      if (typeof v !== "string") throw new Error(`GGUF metadata ${key}: expected a string`);
      return str(v);
    }
    const s = SCALAR[type];
    if (!s) throw new Error(`GGUF metadata ${key}: unknown value type ${type}`);
    const b = new Uint8Array(s[0]);
    const view = new DataView(b.buffer);
    const n = typeof v === "boolean" ? (v ? 1 : 0) : v;
    if (typeof n !== "number" && typeof n !== "bigint") {
      throw new Error(`GGUF metadata ${key}: expected a number`);
    }
    if (type === 10 || type === 11) {
      view[type === 10 ? "setBigUint64" : "setBigInt64"](0, BigInt(n), true);
    } else if (type === 6) view.setFloat32(0, Number(n), true);
    else if (type === 12) view.setFloat64(0, Number(n), true);
    else setInt(view, s[0], Number(n), type);
    parts.push(b);
  };
  u32(0x46554747);
  u32(3);
  u64(tensors.length);
  // The alignment the data is laid out with is the one recorded.
  const entries = [
    ...meta.filter((m) => m.key !== "general.alignment"),
    { key: "general.alignment", type: GGUF_VALUE.u32, value: alignment },
  ];
  u64(entries.length);
  for (const m of entries) {
    str(m.key);
    u32(m.type);
    if (m.type === ARRAY) {
      const items = Array.from(m.value as Iterable<unknown>); // an array, typed array, GgufStrings
      u32(m.itemType!);
      u64(items.length);
      for (const item of items) scalar(m.itemType!, item, m.key);
    } else scalar(m.type, m.value, m.key);
  }
  const offsets: number[] = [];
  let at = 0;
  for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    for (const d of t.dims) u64(d);
    u32(t.type);
    u64(at);
    offsets.push(at);
    at = Math.ceil((at + ggmlBytes(t.type, t.dims)) / alignment) * alignment;
  }
  const size = parts.reduce((n, p) => n + p.length, 0);
  const header = new Uint8Array(Math.ceil(size / alignment) * alignment);
  let o = 0;
  for (const p of parts) {
    header.set(p, o);
    o += p.length;
  }
  const last = tensors.length
    ? offsets[offsets.length - 1] +
      ggmlBytes(tensors[tensors.length - 1].type, tensors[tensors.length - 1].dims)
    : 0;
  return { header, offsets, dataBytes: last };
}

function setInt(view: DataView, bytes: number, n: number, type: number): void {
  if (!Number.isInteger(n)) throw new Error(`GGUF metadata: ${n} is not an integer`);
  const signed = type === 1 || type === 3 || type === 5;
  if (bytes === 1) signed ? view.setInt8(0, n) : view.setUint8(0, n);
  else if (bytes === 2) signed ? view.setInt16(0, n, true) : view.setUint16(0, n, true);
  else signed ? view.setInt32(0, n, true) : view.setUint32(0, n, true);
}
