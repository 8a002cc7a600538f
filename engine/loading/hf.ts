// Loads a Hugging Face checkpoint folder (local path or URL): config.json plus model.safetensors,
// or shards listed by model.safetensors.index.json. Headers are validated and checked against
// the tensor-name map before any memory is committed; then each tensor is read straight into
// WebAssembly memory (no intermediate full copy in JS), in file order.

import { hfShapeFields, parseHfConfig } from "../gemma3/config.ts";
import { type ByteSource, exists, joinLocation, openSource, readJson } from "../io.ts";
import { readSafetensorsHeader, type TensorEntry } from "../formats/safetensors.ts";
import { nameShort, shortJson } from "../formats/quote.ts";
import type { QuantPlan } from "../formats/quant.ts";
import type { WasmRuntime } from "../backends/wasm/runtime.ts";
import { canonicalTensorName } from "../gemma3/weights.ts";
import {
  type LoadedCheckpoint,
  loadOpened,
  type LoadProgress,
  type OpenCheckpoint,
} from "./tensors.ts";

/** Lists the safetensors files of a folder: the single file, or the shards of the index. */
async function weightFiles(
  folder: string,
): Promise<{ files: string[]; weightMap?: Record<string, string> }> {
  const single = joinLocation(folder, "model.safetensors");
  const indexPath = joinLocation(folder, "model.safetensors.index.json");
  if (await exists(single)) return { files: [single] };
  if (!(await exists(indexPath))) {
    throw new Error(`${folder}: no model.safetensors or model.safetensors.index.json found`);
  }
  const index = await readJson(indexPath) as { weight_map?: unknown };
  const map = index.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw new Error(`${indexPath}: no weight_map object`);
  }
  const weightMap = map as Record<string, string>;
  const names = new Set<string>();
  for (const [tensor, file] of Object.entries(weightMap)) {
    if (typeof file !== "string" || !/^[\w.-]+\.safetensors$/.test(file)) {
      throw new Error(
        `${indexPath}: tensor ${nameShort(tensor)} maps to ${
          shortJson(file)
        }, not a .safetensors file name`,
      );
    }
    names.add(file);
  }
  return { files: [...names].sort().map((f) => joinLocation(folder, f)), weightMap };
}

/**
 * Opens a Hugging Face folder: its config and every tensor's place, checked, nothing read yet.
 * Close `sources` when done.
 */
export async function openHfCheckpoint(folder: string): Promise<OpenCheckpoint> {
  const configPath = joinLocation(folder, "config.json");
  if (!(await exists(configPath))) {
    throw new Error(`${folder}: no config.json (is this a Hugging Face model folder?)`);
  }
  const rawConfig = await readJson(configPath);
  const config = parseHfConfig(rawConfig, configPath);
  const multimodal = (rawConfig as { model_type?: string }).model_type === "gemma3";

  const { files, weightMap } = await weightFiles(folder);
  const sources: ByteSource[] = [];
  try {
    // Every tensor of every file, by canonical name.
    const found = new Map<string, TensorEntry>();
    for (const file of files) {
      const source = await openSource(file);
      sources.push(source);
      for (const entry of await readSafetensorsHeader(source)) {
        const name = canonicalTensorName(entry.name, multimodal);
        if (name === null) continue;
        const prev = found.get(name);
        if (prev) {
          throw new Error(`tensor ${entry.name} appears twice: in ${prev.source.name} and ${file}`);
        }
        if (
          weightMap && weightMap[entry.name] !== undefined &&
          joinLocation(folder, weightMap[entry.name]) !== file
        ) {
          throw new Error(
            `${file}: holds ${entry.name}, but the index puts it in ${weightMap[entry.name]}`,
          );
        }
        found.set(name, entry);
      }
    }
    const where = files.length === 1 ? files[0] : `${folder} (${files.length} shards)`;
    const configWhere = `${configPath} (${hfShapeFields(config)})`;
    return { config, found, sources, where, configWhere, quirks: {} };
  } catch (e) {
    for (const s of sources) await s.close().catch(() => {});
    throw e;
  }
}

/**
 * Reads config.json and the weights of a Hugging Face folder into the runtime's memory.
 * Throws, having freed everything, on any inconsistency; messages name the file and the tensor.
 */
export async function loadHfFolder(
  folder: string,
  rt: WasmRuntime,
  onProgress?: (p: LoadProgress) => void,
  quantize?: QuantPlan,
): Promise<LoadedCheckpoint> {
  return loadOpened(await openHfCheckpoint(folder), rt, onProgress, quantize);
}
