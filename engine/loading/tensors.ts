// The part of loading shared by every checkpoint format: check that a file holds exactly the
// tensors the config needs, with the right shapes, then read them into WebAssembly memory.

import type { Gemma3Config } from "../gemma3/config.ts";
import { bf16ToF32, type DType, f16ToF32 } from "../formats/dtypes.ts";
import type { ByteSource } from "../io.ts";
import {
  formatFor,
  isQuant,
  QUANT,
  quantBytes,
  type QuantPlan,
  weightBytes,
} from "../formats/quant.ts";
import type { WasmWeight } from "../backends/wasm/backend.ts";
import type { WasmRuntime } from "../backends/wasm/runtime.ts";
import type { TensorEntry } from "../formats/safetensors.ts";
import { assembleWeights, type ModelWeights, tensorSpecs } from "../gemma3/weights.ts";

/** Progress of a long load: downloading files (models by name), then reading the weights. */
export interface LoadProgress {
  /** "download": a file is coming from the Hub; "load": weights are being read into memory. */
  phase: "download" | "load";
  /** The file being downloaded (phase "download"). */
  file?: string;
  /** Bytes done so far (of this file, when downloading; of all tensor data, when loading). */
  loadedBytes: number;
  /** Bytes in all. */
  totalBytes: number;
}

/** A loaded checkpoint. */
export interface LoadedCheckpoint {
  config: Gemma3Config;
  weights: ModelWeights<WasmWeight>;
  /** Every allocation made, so that disposing the model frees them. */
  allocations: number[];
}

/** How a format stores things differently from Hugging Face checkpoints. */
export interface FormatQuirks {
  /** RMSNorm weights are stored as 1 + w (llama.cpp's converter adds the 1). */
  normsStoreOnePlusW?: boolean;
  /** Quantize float matrices while loading (those whose rows fill whole blocks; see formatFor). */
  quantize?: QuantPlan;
  /** A tensor's name as the format stores it, for messages (GGUF: blk.0.attn_q.weight). */
  storedName?: (canonical: string) => string;
}

/** A checkpoint opened but not read: its config and each tensor's place, by canonical name. */
export interface OpenCheckpoint {
  config: Gemma3Config;
  found: Map<string, TensorEntry>;
  /** The open files (close them when done). */
  sources: ByteSource[];
  /** Names the checkpoint in messages. */
  where: string;
  /** Names the config in messages about shapes: its file, and the values the shapes come from. */
  configWhere: string;
  quirks: FormatQuirks;
}

/** Reads an opened checkpoint into memory and closes its files (on failure, frees everything). */
export async function loadOpened(
  open: OpenCheckpoint,
  rt: WasmRuntime,
  onProgress?: (p: LoadProgress) => void,
  quantize?: QuantPlan,
): Promise<LoadedCheckpoint> {
  const allocations: number[] = [];
  try {
    return await loadTensors(
      rt,
      open.config,
      open.found,
      open.sources,
      open.where,
      open.configWhere,
      allocations,
      onProgress,
      { ...open.quirks, quantize },
    );
  } catch (e) {
    for (const p of allocations) rt.free(p);
    throw e;
  } finally {
    for (const s of open.sources) await s.close().catch(() => {});
  }
}

/**
 * Checks `found` (canonical name → entry) against the config's tensor list and reads every tensor
 * into memory, in file order. Allocations are recorded in `allocations` (the caller frees them on
 * failure). `where` names the checkpoint in messages, `configWhere` its config.
 */
export async function loadTensors(
  rt: WasmRuntime,
  config: Gemma3Config,
  found: Map<string, TensorEntry>,
  sources: ByteSource[],
  where: string,
  configWhere: string,
  allocations: number[],
  onProgress?: (p: LoadProgress) => void,
  quirks: FormatQuirks = {},
): Promise<LoadedCheckpoint> {
  // Exactly the tensors the config needs, with the right shapes.
  const specs = tensorSpecs(config);
  const stored = quirks.storedName ?? ((name: string) => name);
  const missing = specs.filter((s) => !found.has(s.name)).map((s) => stored(s.name));
  if (missing.length) {
    const hint = !config.tieWordEmbeddings && !found.has("lm_head.weight")
      ? " (tie_word_embeddings is false: a separate output matrix)"
      : "";
    throw new Error(
      `${where}: missing tensor${missing.length > 1 ? "s" : ""} ${list(missing)}, which ` +
        `${configWhere} needs${hint}`,
    );
  }
  const needed = new Set(specs.map((s) => s.name));
  const extra = [...found.keys()].filter((n) => !needed.has(n));
  if (extra.length) {
    const hint = extra.includes("lm_head.weight") && config.tieWordEmbeddings
      ? " (the config says tie_word_embeddings: true)"
      : "";
    throw new Error(
      `${where}: unexpected tensor${extra.length > 1 ? "s" : ""} ${list(extra)}${hint}`,
    );
  }
  for (const s of specs) {
    const e = found.get(s.name)!;
    if (e.shape.join() !== s.shape.join()) {
      throw new Error(
        `${e.source.name}: tensor ${e.name} has shape [${e.shape}], but ${configWhere} needs ` +
          `[${s.shape}]`,
      );
    }
  }

  // Memory for every tensor first: views of memory go stale when it grows.
  const placed = new Map<string, WasmWeight>();
  const jobs: { entry: TensorEntry; weight: WasmWeight; norm: boolean }[] = [];
  for (const s of specs) {
    const entry = found.get(s.name)!;
    // Matrices stay in their stored format where a kernel reads it (or are quantized, if asked);
    // norm vectors are f32.
    const [rows, cols] = s.shape.length === 2 ? s.shape : [1, s.shape[0]];
    let dtype: DType = "f32";
    if (s.kind === "matrix") {
      const planned = quirks.quantize
        ? formatFor(quirks.quantize, s.name === "model.embed_tokens.weight", cols)
        : null;
      if (isQuant(entry.dtype)) dtype = entry.dtype;
      else if (planned) dtype = planned;
      else if (entry.dtype === "bf16") dtype = "bf16";
    } else if (isQuant(entry.dtype)) {
      throw new Error(
        `${entry.source.name}: tensor ${entry.name} is a vector stored as ${entry.dtype.toUpperCase()}, which is not supported`,
      );
    }
    const ptr = rt.alloc(weightBytes(dtype, rows, cols));
    allocations.push(ptr);
    const weight = { ptr, dtype, rows, cols };
    placed.set(s.name, weight);
    jobs.push({ entry, weight, norm: s.kind === "vector" });
  }

  // Data, in file order so a URL streams once.
  jobs.sort((a, b) =>
    a.entry.source === b.entry.source
      ? a.entry.offset - b.entry.offset
      : sources.indexOf(a.entry.source) - sources.indexOf(b.entry.source)
  );
  const totalBytes = jobs.reduce((n, j) => n + j.entry.bytes, 0);
  let loadedBytes = 0;
  for (const { entry, weight, norm } of jobs) {
    await readTensor(rt, entry, weight);
    if (norm && quirks.normsStoreOnePlusW) {
      // The kernel applies (1 + w). For stored values g in [0.5, 2] (all of Gemma's norms in
      // practice) g - 1 is exact in f32 (Sterbenz), so 1 + (g - 1) gives back g exactly.
      const v = rt.f32(weight.ptr, weight.cols);
      for (let i = 0; i < v.length; i++) v[i] -= 1;
    }
    loadedBytes += entry.bytes;
    onProgress?.({ phase: "load", loadedBytes, totalBytes });
  }
  return { config, weights: assembleWeights(config, (n) => placed.get(n)!), allocations };
}

/** Elements converted per step when a tensor changes type on load (bounds the JS staging). */
const CONVERT_CHUNK = 1 << 20;

async function readTensor(rt: WasmRuntime, entry: TensorEntry, w: WasmWeight): Promise<void> {
  const numel = w.rows * w.cols;
  if (entry.dtype === w.dtype) {
    await entry.source.read(entry.offset, rt.u8(w.ptr, entry.bytes));
    return;
  }
  if (isQuant(w.dtype)) {
    // Float rows → blocks, a few rows at a time: the float copy is never held whole.
    const chunkRows = Math.max(1, Math.floor(CONVERT_CHUNK / w.cols));
    const f32 = new Float32Array(chunkRows * w.cols);
    const rowOut = weightBytes(w.dtype, 1, w.cols);
    for (let r = 0; r < w.rows; r += chunkRows) {
      const n = Math.min(chunkRows, w.rows - r);
      const values = f32.subarray(0, n * w.cols);
      await readRowsF32(entry, w.cols, r, values);
      QUANT[w.dtype].quantize(values, rt.u8(w.ptr + r * rowOut, n * rowOut));
    }
    return;
  }
  // f16 → f32, or a bf16 norm vector → f32: through a bounded staging buffer.
  const staging = new Uint16Array(Math.min(numel, CONVERT_CHUNK));
  for (let i = 0; i < numel; i += CONVERT_CHUNK) {
    const n = Math.min(CONVERT_CHUNK, numel - i);
    const part = staging.subarray(0, n);
    await entry.source.read(entry.offset + i * 2, new Uint8Array(part.buffer, 0, n * 2));
    (entry.dtype === "bf16" ? bf16ToF32 : f16ToF32)(part, rt.f32(w.ptr + i * 4, n));
  }
}

/** Reads rows [row0, row0 + out.length / cols) of a stored tensor as f32 values, whatever its
 * stored type (floats widened, blocks decoded). */
export async function readRowsF32(
  entry: TensorEntry,
  cols: number,
  row0: number,
  out: Float32Array,
): Promise<void> {
  const n = out.length / cols;
  if (isQuant(entry.dtype)) {
    const rowBytes = quantBytes(entry.dtype, 1, cols);
    const raw = new Uint8Array(n * rowBytes);
    await entry.source.read(entry.offset + row0 * rowBytes, raw);
    QUANT[entry.dtype].dequantize(raw, out);
    return;
  }
  const inBytes = entry.dtype === "f32" ? 4 : 2;
  const raw = new Uint8Array(out.length * inBytes);
  await entry.source.read(entry.offset + row0 * cols * inBytes, raw);
  if (entry.dtype === "f32") out.set(new Float32Array(raw.buffer));
  else (entry.dtype === "bf16" ? bf16ToF32 : f16ToF32)(new Uint16Array(raw.buffer), out);
}

function list(names: string[]): string {
  const shown = names.slice(0, 5).join(", ");
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}
