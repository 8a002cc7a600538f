// The safetensors format: an 8-byte little-endian header length, a JSON header mapping tensor
// names to {dtype, shape, data_offsets}, then the raw data. Everything in the header is checked
// against the file before a single weight is read, so a truncated or corrupt file is an error
// that names the file and the problem, never a wrong read.

import { floatBytes, type FloatDType, type StoredDType } from "./dtypes.ts";
import { type ByteSource, parseJsonText } from "../io.ts";
import { nameShort, shortJson } from "./quote.ts";

/** One tensor's place in a safetensors file. */
export interface TensorEntry {
  /** Tensor name as stored. */
  name: string;
  /** Element type (block formats only from GGUF files). */
  dtype: StoredDType;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  /** Byte length of the data. */
  bytes: number;
  /** The file it lives in. */
  source: ByteSource;
}

const DTYPES: Record<string, FloatDType> = { F32: "f32", BF16: "bf16", F16: "f16" };
/** Dtypes of the format that this engine does not load. */
const OTHER_DTYPES = [
  "F64",
  "F8_E4M3",
  "F8_E5M2",
  "I64",
  "I32",
  "I16",
  "I8",
  "U64",
  "U32",
  "U16",
  "U8",
  "BOOL",
];
/** A header larger than this is not a checkpoint header (the format's own limit is 100 MB). */
const MAX_HEADER = 100_000_000;

/** Reads and validates the header of a safetensors file. */
export async function readSafetensorsHeader(source: ByteSource): Promise<TensorEntry[]> {
  const fail = (msg: string): never => {
    throw new Error(`${source.name}: ${msg}`);
  };
  if (source.size < 8) fail(`${source.size} bytes is too short for a safetensors file`);
  const lenBytes = new Uint8Array(8);
  await source.read(0, lenBytes);
  const headerLen = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
  if (headerLen > MAX_HEADER || headerLen < 2) {
    fail(`header length ${headerLen} is not plausible (not a safetensors file, or corrupt)`);
  }
  if (8 + headerLen > source.size) {
    fail(
      `header of ${headerLen} bytes runs past the end of the ${source.size}-byte file (truncated?)`,
    );
  }
  const headerBytes = new Uint8Array(headerLen);
  await source.read(8, headerBytes);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    return fail(`header (${headerLen} bytes from byte 8) is not valid UTF-8 text`);
  }
  // A checkpoint of 1,000 tensors holds ~10,000 values: the limit readJson keeps (a million)
  // is plenty, and keeps JSON.parse from 100 MB of tiny values (seconds, gigabytes).
  const header = parseJsonText(text, `${source.name}: header`);
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    fail("header is not a JSON object");
  }
  const dataStart = 8 + headerLen;
  const dataSize = source.size - dataStart;
  const entries: TensorEntry[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t !== "object" || t === null) {
      fail(`tensor ${nameShort(name)}: entry is not an object`);
    }
    // Own keys only: "toString" or "constructor" must not find Object's.
    const dtype = typeof t.dtype === "string" && Object.hasOwn(DTYPES, t.dtype)
      ? DTYPES[t.dtype]
      : undefined;
    if (!dtype) {
      const known = OTHER_DTYPES.includes(t.dtype as string);
      return fail(
        `tensor ${nameShort(name)}: dtype ${shortJson(t.dtype)} ${
          known ? "is not supported" : "is unknown"
        }` +
          " (supported: F32, BF16, F16)",
      );
    }
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(
        `tensor ${nameShort(name)}: shape ${
          shortJson(shape)
        } is not a list of non-negative integers`,
      );
    }
    const offs = t.data_offsets;
    if (
      !Array.isArray(offs) || offs.length !== 2 ||
      !offs.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      fail(
        `tensor ${nameShort(name)}: data_offsets ${
          shortJson(offs)
        } is not a pair of non-negative integers`,
      );
    }
    const [begin, end] = offs as number[];
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const want = numel * floatBytes[dtype];
    if (end < begin || end - begin !== want) {
      fail(
        `tensor ${nameShort(name)}: data_offsets [${begin}, ${end}] hold ${
          end - begin
        } bytes, but ` +
          `${t.dtype} ${shortJson(shape)} needs ${want}`,
      );
    }
    if (end > dataSize) {
      fail(
        `tensor ${nameShort(name)}: data ends at byte ${dataStart + end}, past the end of the ` +
          `${source.size}-byte file (truncated?)`,
      );
    }
    entries.push({
      name,
      dtype,
      shape: shape as number[],
      offset: dataStart + begin,
      bytes: want,
      source,
    });
  }
  // Empty tensors take no bytes, so they overlap nothing.
  const sorted = entries.filter((e) => e.bytes > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (sorted[i].offset < prev.offset + prev.bytes) {
      fail(
        `tensors ${nameShort(prev.name)} and ${nameShort(sorted[i].name)} overlap in the file`,
      );
    }
  }
  return entries;
}
