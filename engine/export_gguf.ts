// Writes a model as a GGUF file that llama.cpp and this engine both load: the config as gemma3.*
// metadata, the tokenizer as tokenizer.ggml.*, and every tensor under its llama.cpp name in the
// chosen format (float, or a block format quantized here, streaming: the model is never held
// whole in memory).

import { configFromGguf, type Gemma3Config } from "./gemma3/config.ts";
import { type DType, f32ToBF16 } from "./formats/dtypes.ts";
import {
  encodeGgufHeader,
  GGUF_VALUE as V,
  type GgufMetaEntry,
  type GgufTensorOut,
} from "./formats/gguf.ts";
import {
  createFileWriter,
  exists,
  isGgufLocation,
  joinLocation,
  readJson,
  TOKENIZER_JSON_VALUES,
} from "./io.ts";
import { openGgufCheckpoint } from "./loading/gguf.ts";
import { openHfCheckpoint } from "./loading/hf.ts";
import { resolveModelSource } from "./loading/source.ts";
import { type OpenCheckpoint, readRowsF32 } from "./loading/tensors.ts";
import type { TensorEntry } from "./formats/safetensors.ts";
import { defaultHeadFormat, formatFor, isQuant, QUANT, quantBytes } from "./formats/quant.ts";
import type { TokenizerData } from "./tokenizer/tokenizer.ts";
import { fromTokenizerJson, toGgufTokenizer } from "./tokenizer/format.ts";
import { ggufName, tensorSpecs } from "./gemma3/weights.ts";

/** Formats a GGUF export can write weight matrices in: every format the engine holds. */
export type ExportType = DType;

/** Options of `exportGguf`. */
export interface ExportOptions {
  /** Format of the weight matrices. Rows that do not fill a block fall back as llama-quantize does
   * (Q4_K → Q5_0, Q6_K → Q8_0; to f32 when not even 32 fit). */
  type: ExportType;
  /** Format of the embedding (and tied output head). Default: as llama-quantize picks it (Q8_0
   * for q4_0; Q6_K for the K-quants; otherwise `type`). */
  headType?: ExportType;
  /** Where the tokenizer comes from when `source` has none (a tokenizer.json, a folder holding
   * one, or a .gguf file whose tokenizer metadata is copied). */
  tokenizer?: string;
  /** Model name to record (general.name). */
  name?: string;
  /** Called as tensors are written. */
  onProgress?: (p: { writtenBytes: number; totalBytes: number }) => void;
  /** For a Hub repository name as `source`: the branch, tag or commit (default "main"). */
  revision?: string;
}

/** llama.cpp's file-type numbers (general.file_type) for the formats written here. */
const FILE_TYPE: Record<ExportType, number> = {
  f32: 0,
  bf16: 32,
  q8_0: 7,
  q4_0: 2,
  q5_0: 8,
  q4_k: 15,
  q6_k: 18,
};

/** The config as gemma3.* metadata: what configFromGguf reads back (checked before writing). */
export function ggufConfigMetadata(c: Gemma3Config): GgufMetaEntry[] {
  const u32 = (key: string, value: number): GgufMetaEntry => ({
    key: `gemma3.${key}`,
    type: V.u32,
    value,
  });
  const f32 = (key: string, value: number): GgufMetaEntry => ({
    key: `gemma3.${key}`,
    type: V.f32,
    value,
  });
  const meta: GgufMetaEntry[] = [
    { key: "general.architecture", type: V.string, value: "gemma3" },
    u32("context_length", c.maxPositionEmbeddings),
    u32("embedding_length", c.hiddenSize),
    u32("block_count", c.numLayers),
    u32("feed_forward_length", c.intermediateSize),
    u32("attention.head_count", c.numHeads),
    u32("attention.head_count_kv", c.numKvHeads),
    u32("attention.key_length", c.headDim),
    u32("attention.value_length", c.headDim),
    f32("attention.layer_norm_rms_epsilon", c.rmsNormEps),
    u32("attention.sliding_window", c.slidingWindow),
    f32("rope.freq_base", c.ropeTheta),
    f32("rope.freq_base_swa", c.ropeLocalBaseFreq),
  ];
  if (c.ropeScalingFactor !== 1) {
    meta.push(
      { key: "gemma3.rope.scaling.type", type: V.string, value: "linear" },
      f32("rope.scaling.factor", c.ropeScalingFactor),
    );
  }
  const periodSix = c.layerTypes.every((t, i) => (t === "full_attention") === ((i + 1) % 6 === 0));
  if (!periodSix) {
    meta.push({
      key: "gemma3.attention.sliding_window_pattern",
      type: V.array,
      itemType: V.bool,
      value: c.layerTypes.map((t) => t === "sliding_attention"),
    });
  }
  return meta;
}

/** Tokenizer metadata for tokenizer data (Gemma's ids for the special tokens from the config). */
function tokenizerMetadata(d: TokenizerData, c: Gemma3Config): GgufMetaEntry[] {
  const { tokens, scores, types } = toGgufTokenizer(d);
  const id = (key: string, value: number): GgufMetaEntry => ({
    key: `tokenizer.ggml.${key}`,
    type: V.u32,
    value,
  });
  const meta: GgufMetaEntry[] = [
    { key: "tokenizer.ggml.model", type: V.string, value: "llama" },
    { key: "tokenizer.ggml.tokens", type: V.array, itemType: V.string, value: tokens },
    { key: "tokenizer.ggml.scores", type: V.array, itemType: V.f32, value: scores },
    { key: "tokenizer.ggml.token_type", type: V.array, itemType: V.i32, value: types },
    id("bos_token_id", c.bosTokenId),
    id("eos_token_id", c.eosTokenIds[0]),
    id("unknown_token_id", d.unkId),
    id("padding_token_id", c.padTokenId),
    { key: "tokenizer.ggml.add_bos_token", type: V.bool, value: true },
    { key: "tokenizer.ggml.add_eos_token", type: V.bool, value: false },
    // Gemma's tokenizer adds no space before the text; llama.cpp assumes one unless told.
    { key: "tokenizer.ggml.add_space_prefix", type: V.bool, value: false },
  ];
  if (c.eosTokenIds.length > 1) meta.push(id("eot_token_id", c.eosTokenIds[1]));
  return meta;
}

/** The tokenizer metadata: copied from a GGUF file, else built from a tokenizer.json. */
async function tokenizerFor(
  from: string,
  open: {
    where: string;
    metadata?: Map<string, unknown>;
    metadataTypes?: Map<string, { type: number; itemType?: number }>;
  },
  config: Gemma3Config,
): Promise<GgufMetaEntry[]> {
  const copy = (
    metadata: Map<string, unknown>,
    types: Map<string, { type: number; itemType?: number }>,
  ) =>
    [...metadata].filter(([key]) => key.startsWith("tokenizer.")).map(([key, value]) => ({
      key,
      value,
      ...types.get(key)!,
    }));
  if (isGgufLocation(from)) {
    if (!open.metadata || from !== open.where) {
      const other = await openGgufCheckpoint(from).catch((e) => {
        throw new Error(`tokenizer from ${from}: ${(e as Error).message}`);
      });
      for (const s of other.sources) await s.close().catch(() => {});
      open = other;
    }
    const entries = copy(open.metadata!, open.metadataTypes!);
    if (!entries.some((e) => e.key === "tokenizer.ggml.tokens")) {
      throw new Error(`${from}: has no tokenizer (tokenizer.ggml.tokens)`);
    }
    return entries;
  }
  const json = /\.json$/i.test(from) ? from : joinLocation(from, "tokenizer.json");
  if (!(await exists(json))) {
    throw new Error(
      `${from}: no tokenizer.json (a GGUF file needs the tokenizer: llama.cpp cannot run without it; pass one with the tokenizer option)`,
    );
  }
  const data = fromTokenizerJson(await readJson(json, TOKENIZER_JSON_VALUES), json);
  if (data.pieceOffsets.length - 1 !== config.vocabSize) {
    throw new Error(
      `${json}: ${
        data.pieceOffsets.length - 1
      } pieces, but the model's vocabulary has ${config.vocabSize}`,
    );
  }
  return tokenizerMetadata(data, config);
}

/** The tensor format for one tensor under the options (vectors are always f32). */
function tensorType(
  options: ExportOptions,
  isHead: boolean,
  kind: "matrix" | "vector",
  cols: number,
): ExportType {
  if (kind === "vector") return "f32";
  const want = isHead ? (options.headType ?? defaultHead(options.type)) : options.type;
  if (!isQuant(want)) return want;
  return formatFor({ matrices: want, head: want }, isHead, cols) ?? "f32";
}

function defaultHead(type: ExportType): ExportType {
  return isQuant(type) ? defaultHeadFormat(type) : type;
}

const GGML_OF: Record<ExportType, number> = {
  f32: 0,
  bf16: 30,
  ...Object.fromEntries(Object.values(QUANT).map((f) => [f.name, f.ggmlType])),
} as Record<ExportType, number>;

/** Every ExportType, for validating options and flags. */
export const EXPORT_TYPES = Object.keys(FILE_TYPE) as readonly ExportType[];

/**
 * Writes the model at `source` (a Hugging Face folder, a .gguf file, or a Hub repository name,
 * downloaded first) to `out` as GGUF. The
 * tokenizer comes from the folder's tokenizer.json, or from the source GGUF's metadata.
 */
export async function exportGguf(
  source: string,
  out: string,
  options: ExportOptions,
): Promise<{ bytes: number; tensors: number }> {
  for (const t of [options.type, options.headType]) {
    if (t !== undefined && !Object.hasOwn(FILE_TYPE, t)) {
      throw new Error(
        `cannot write ${JSON.stringify(t)}; formats: ${EXPORT_TYPES.join(", ")}`,
      );
    }
  }
  const resolved = await resolveModelSource(source, { revision: options.revision });
  source = resolved.location;
  const isGguf = resolved.gguf;
  const open: OpenCheckpoint & {
    metadata?: Map<string, unknown>;
    metadataTypes?: Map<string, { type: number; itemType?: number }>;
  } = isGguf ? await openGgufCheckpoint(source) : await openHfCheckpoint(source);
  try {
    const config = open.config;
    const meta: GgufMetaEntry[] = [
      ...ggufConfigMetadata(config),
      {
        key: "general.name",
        type: V.string,
        value: options.name ??
          source.replace(/[\\/]+$/, "").split(/[\\/]/).pop()!.replace(/\.gguf$/i, ""),
      },
      { key: "general.file_type", type: V.u32, value: FILE_TYPE[options.type] },
    ];
    // Round trip: what we write must read back as the same config.
    const check = configFromGguf(
      new Map(meta.map((m) => [m.key, m.value])),
      config.vocabSize,
      config.tieWordEmbeddings,
      out,
    );
    if (check.queryPreAttnScalar !== config.queryPreAttnScalar) {
      throw new Error(
        `${source}: query_pre_attn_scalar ${config.queryPreAttnScalar} cannot be expressed in GGUF (llama.cpp derives ${check.queryPreAttnScalar})`,
      );
    }
    meta.push(...await tokenizerFor(options.tokenizer ?? source, open, config));

    const specs = tensorSpecs(config);
    const plan = specs.map((s) => {
      const cols = s.shape[s.shape.length - 1];
      const rows = s.shape.length === 2 ? s.shape[0] : 1;
      const type = tensorType(options, s.name === "model.embed_tokens.weight", s.kind, cols);
      return { spec: s, entry: open.found.get(s.name)!, rows, cols, type };
    });
    for (const p of plan) {
      if (!p.entry) throw new Error(`${open.where}: missing tensor ${p.spec.name}`);
    }
    const tensors: GgufTensorOut[] = plan.map((p) => ({
      name: ggufName(p.spec.name),
      type: GGML_OF[p.type],
      dims: [...p.spec.shape].reverse(),
    }));
    const { header, offsets, dataBytes } = encodeGgufHeader(meta, tensors);

    const writer = await createFileWriter(out);
    try {
      await writer.write(header);
      let at = 0;
      const total = dataBytes;
      for (let i = 0; i < plan.length; i++) {
        if (offsets[i] > at) await writer.write(new Uint8Array(offsets[i] - at));
        at = offsets[i];
        at += await writeTensor(plan[i], isGguf, (b) => writer.write(b));
        options.onProgress?.({ writtenBytes: at, totalBytes: total });
      }
      await writer.commit();
      return { bytes: header.length + at, tensors: plan.length };
    } catch (e) {
      await writer.abort();
      throw e;
    }
  } finally {
    for (const s of open.sources) await s.close().catch(() => {});
  }
}

/** Rows converted per step (bounds the memory a tensor's conversion takes). */
const CHUNK_FLOATS = 1 << 20;

async function writeTensor(
  p: {
    spec: { kind: string };
    entry: TensorEntry;
    rows: number;
    cols: number;
    type: ExportType;
  },
  fromGguf: boolean,
  write: (b: Uint8Array) => Promise<void>,
): Promise<number> {
  const { entry, rows, cols, type } = p;
  const norm = p.spec.kind === "vector";
  // Same format and nothing to change: copy the bytes.
  if (entry.dtype === type && !(norm && !fromGguf)) {
    for (let o = 0; o < entry.bytes; o += 16 << 20) {
      const part = new Uint8Array(Math.min(16 << 20, entry.bytes - o));
      await entry.source.read(entry.offset + o, part);
      await write(part);
    }
    return entry.bytes;
  }
  const chunkRows = Math.max(1, Math.floor(CHUNK_FLOATS / cols));
  const values = new Float32Array(chunkRows * cols);
  let written = 0;
  for (let r = 0; r < rows; r += chunkRows) {
    const n = Math.min(chunkRows, rows - r);
    const v = values.subarray(0, n * cols);
    await readRowsF32(entry, cols, r, v);
    // llama.cpp stores RMSNorm weights as 1 + w (Hugging Face stores w).
    if (norm && !fromGguf) { for (let i = 0; i < v.length; i++) v[i] += 1; }
    let bytes: Uint8Array;
    if (type === "f32") bytes = new Uint8Array(v.slice().buffer);
    else if (type === "bf16") {
      const h = new Uint16Array(v.length);
      f32ToBF16(v, h);
      bytes = new Uint8Array(h.buffer);
    } else {
      bytes = new Uint8Array(quantBytes(type, n, cols));
      QUANT[type].quantize(v, bytes);
    }
    await write(bytes);
    written += bytes.length;
  }
  return written;
}
