// Loads a GGUF file (architecture gemma3): the config from its metadata, the tensors through the
// same checks as a Hugging Face checkpoint. Float tensors (F32, F16, BF16) are supported; the
// quantized types need kernels of their own and are refused by name for now.

import { configFromGguf } from "./config.ts";
import type { StoredDType } from "./dtypes.ts";
import { GGML_TYPES, readGgufHeader } from "./gguf.ts";
import { openSource } from "./io.ts";
import type { LoadedCheckpoint, LoadProgress } from "./load_hf.ts";
import { loadTensors } from "./load_tensors.ts";
import type { WasmRuntime } from "./runtime.ts";
import type { TensorEntry } from "./safetensors.ts";
import { canonicalGgufName } from "./weights.ts";

const FLOAT_TYPES: Record<number, StoredDType> = { 0: "f32", 1: "f16", 30: "bf16" };

/** Reads a .gguf file (path or URL) into the runtime's memory. */
export async function loadGguf(location: string, rt: WasmRuntime, onProgress?: (p: LoadProgress) => void): Promise<LoadedCheckpoint> {
  const source = await openSource(location);
  const allocations: number[] = [];
  try {
    const file = await readGgufHeader(source);
    const found = new Map<string, TensorEntry>();
    for (const t of file.tensors) {
      const name = canonicalGgufName(t.name);
      if (name === null) throw new Error(`${location}: unexpected tensor ${t.name} (not part of a Gemma 3 text model)`);
      const dtype = FLOAT_TYPES[t.type];
      if (!dtype) {
        throw new Error(`${location}: tensor ${t.name} is ${GGML_TYPES[t.type].name}; quantized GGUF types are not supported yet (F32, F16 and BF16 are)`);
      }
      // GGUF lists dimensions innermost first; the tensor map uses [rows, cols].
      found.set(name, { name: t.name, dtype, shape: [...t.dims].reverse(), offset: t.offset, bytes: t.bytes, source });
    }
    const embed = found.get("model.embed_tokens.weight");
    if (!embed) throw new Error(`${location}: missing tensor token_embd.weight`);
    const config = configFromGguf(file.metadata, embed.shape[0], !found.has("lm_head.weight"), location);
    return await loadTensors(rt, config, found, [source], location, allocations, onProgress, { normsStoreOnePlusW: true });
  } catch (e) {
    for (const p of allocations) rt.free(p);
    throw e;
  } finally {
    await source.close().catch(() => {});
  }
}
