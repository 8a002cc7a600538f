// Loads a Hugging Face checkpoint folder (local path or URL): config.json plus model.safetensors,
// or shards listed by model.safetensors.index.json. Headers are validated and checked against
// the tensor-name map before any memory is committed; then each tensor is read straight into
// WebAssembly memory (no intermediate full copy in JS), in file order.

import { type Gemma3Config, parseHfConfig } from "./config.ts";
import { bf16ToF32, type DType, f16ToF32 } from "./dtypes.ts";
import { type ByteSource, exists, joinLocation, openSource, readText } from "./io.ts";
import { readSafetensorsHeader, type TensorEntry } from "./safetensors.ts";
import type { WasmRuntime } from "./runtime.ts";
import { assembleWeights, canonicalTensorName, type ModelWeights, tensorSpecs } from "./weights.ts";

/** A weight in WebAssembly memory: matrices as stored (f32 or bf16), norm vectors as f32. */
export interface WasmWeight {
  /** Byte address in the runtime's memory. */
  ptr: number;
  /** Element type in memory. */
  dtype: DType;
  /** Rows (output features); 1 for a vector. */
  rows: number;
  /** Columns (input features); the length for a vector. */
  cols: number;
}

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

/** Lists the safetensors files of a folder: the single file, or the shards of the index. */
async function weightFiles(folder: string): Promise<{ files: string[]; weightMap?: Record<string, string> }> {
  const single = joinLocation(folder, "model.safetensors");
  const indexPath = joinLocation(folder, "model.safetensors.index.json");
  if (await exists(single)) return { files: [single] };
  if (!(await exists(indexPath))) {
    throw new Error(`${folder}: no model.safetensors or model.safetensors.index.json found`);
  }
  let index: { weight_map?: unknown };
  try {
    index = JSON.parse(await readText(indexPath));
  } catch (e) {
    throw new Error(`${indexPath}: not valid JSON (${(e as Error).message})`);
  }
  const map = index.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new Error(`${indexPath}: no weight_map object`);
  }
  const weightMap = map as Record<string, string>;
  const names = new Set<string>();
  for (const [tensor, file] of Object.entries(weightMap)) {
    if (typeof file !== "string" || !/^[\w.-]+\.safetensors$/.test(file)) {
      throw new Error(`${indexPath}: tensor ${tensor} maps to ${JSON.stringify(file)}, not a .safetensors file name`);
    }
    names.add(file);
  }
  return { files: [...names].sort().map((f) => joinLocation(folder, f)), weightMap };
}

/**
 * Reads config.json and the weights of a Hugging Face folder into the runtime's memory.
 * Throws, having freed everything, on any inconsistency; messages name the file and the tensor.
 */
export async function loadHfFolder(
  folder: string,
  rt: WasmRuntime,
  onProgress?: (p: LoadProgress) => void,
): Promise<LoadedCheckpoint> {
  const configPath = joinLocation(folder, "config.json");
  if (!(await exists(configPath))) throw new Error(`${folder}: no config.json (is this a Hugging Face model folder?)`);
  let rawConfig: unknown;
  try {
    rawConfig = JSON.parse(await readText(configPath));
  } catch (e) {
    throw new Error(`${configPath}: not valid JSON (${(e as Error).message})`);
  }
  const config = parseHfConfig(rawConfig, configPath);
  const multimodal = (rawConfig as { model_type?: string }).model_type === "gemma3";

  const { files, weightMap } = await weightFiles(folder);
  const sources: ByteSource[] = [];
  const allocations: number[] = [];
  try {
    // 1. Headers: every tensor of every file, by canonical name.
    const found = new Map<string, TensorEntry>();
    for (const file of files) {
      const source = await openSource(file);
      sources.push(source);
      for (const entry of await readSafetensorsHeader(source)) {
        const name = canonicalTensorName(entry.name, multimodal);
        if (name === null) continue;
        const prev = found.get(name);
        if (prev) throw new Error(`tensor ${entry.name} appears twice: in ${prev.source.name} and ${file}`);
        if (weightMap && weightMap[entry.name] !== undefined && joinLocation(folder, weightMap[entry.name]) !== file) {
          throw new Error(`${file}: holds ${entry.name}, but the index puts it in ${weightMap[entry.name]}`);
        }
        found.set(name, entry);
      }
    }

    // 2. Exactly the tensors the config needs, with the right shapes.
    const specs = tensorSpecs(config);
    const where = files.length === 1 ? files[0] : `${folder} (${files.length} shards)`;
    const missing = specs.filter((s) => !found.has(s.name)).map((s) => s.name);
    if (missing.length) {
      throw new Error(`${where}: missing tensor${missing.length > 1 ? "s" : ""} ${list(missing)}`);
    }
    const needed = new Set(specs.map((s) => s.name));
    const extra = [...found.keys()].filter((n) => !needed.has(n));
    if (extra.length) {
      const hint = extra.includes("lm_head.weight") && config.tieWordEmbeddings
        ? " (the config says tie_word_embeddings: true)"
        : "";
      throw new Error(`${where}: unexpected tensor${extra.length > 1 ? "s" : ""} ${list(extra)}${hint}`);
    }
    for (const s of specs) {
      const e = found.get(s.name)!;
      if (e.shape.join() !== s.shape.join()) {
        throw new Error(`${e.source.name}: tensor ${e.name} has shape [${e.shape}], the config needs [${s.shape}]`);
      }
    }

    // 3. Memory for every tensor first: views of memory go stale when it grows.
    const placed = new Map<string, WasmWeight>();
    const jobs: { entry: TensorEntry; weight: WasmWeight }[] = [];
    for (const s of specs) {
      const entry = found.get(s.name)!;
      // Matrices stay in their stored format where a kernel reads it; everything else is f32.
      const dtype: DType = s.kind === "matrix" && entry.dtype === "bf16" ? "bf16" : "f32";
      const [rows, cols] = s.shape.length === 2 ? s.shape : [1, s.shape[0]];
      const ptr = rt.alloc(rows * cols * (dtype === "bf16" ? 2 : 4));
      allocations.push(ptr);
      const weight = { ptr, dtype, rows, cols };
      placed.set(s.name, weight);
      jobs.push({ entry, weight });
    }

    // 4. Data, in file order so a URL streams once.
    jobs.sort((a, b) =>
      a.entry.source === b.entry.source
        ? a.entry.offset - b.entry.offset
        : sources.indexOf(a.entry.source) - sources.indexOf(b.entry.source)
    );
    const totalBytes = jobs.reduce((n, j) => n + j.entry.bytes, 0);
    let loadedBytes = 0;
    for (const { entry, weight } of jobs) {
      await readTensor(rt, entry, weight);
      loadedBytes += entry.bytes;
      onProgress?.({ phase: "load", loadedBytes, totalBytes });
    }
    return { config, weights: assembleWeights(config, (n) => placed.get(n)!), allocations };
  } catch (e) {
    for (const p of allocations) rt.free(p);
    throw e;
  } finally {
    for (const s of sources) await s.close().catch(() => {});
  }
}

/** Elements converted per step when a tensor changes type on load (bounds the JS staging). */
const CONVERT_CHUNK = 1 << 20;

async function readTensor(rt: WasmRuntime, entry: TensorEntry, w: WasmWeight): Promise<void> {
  const numel = w.rows * w.cols;
  if (entry.dtype === w.dtype) {
    await entry.source.read(entry.offset, rt.u8(w.ptr, entry.bytes));
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

function list(names: string[]): string {
  const shown = names.slice(0, 5).join(", ");
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}
