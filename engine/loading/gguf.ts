// Loads a GGUF file (architecture gemma3): the config from its metadata, the tensors through the
// same checks as a Hugging Face checkpoint. F32, F16 and BF16 tensors, and the block formats of
// quant.ts (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K); other ggml types are refused by name.

import { nameShort } from "../formats/quote.ts";
import { configFromGguf, ggufShapeFields } from "../gemma3/config.ts";
import type { StoredDType } from "../formats/dtypes.ts";
import { GGML_TYPES, type GgufFile, readGgufHeader } from "../formats/gguf.ts";
import { isUrl, openSource } from "../io.ts";
import {
  type LoadedCheckpoint,
  loadOpened,
  type LoadProgress,
  type OpenCheckpoint,
} from "./tensors.ts";
import type { WasmRuntime } from "../backends/wasm/runtime.ts";
import type { TensorEntry } from "../formats/safetensors.ts";
import { canonicalGgufName, ggufName } from "../gemma3/weights.ts";
import { QUANT, type QuantPlan } from "../formats/quant.ts";

/** ggml types this engine reads, as its own element types. */
const SUPPORTED_TYPES: Record<number, StoredDType> = {
  0: "f32",
  1: "f16",
  30: "bf16",
  ...Object.fromEntries(Object.values(QUANT).map((f) => [f.ggmlType, f.name])),
};
const SUPPORTED_NAMES = Object.keys(SUPPORTED_TYPES).map((t) => GGML_TYPES[+t].name).join(", ");

/** Opens a .gguf file (path or URL): its config and every tensor's place, checked, nothing read
 * yet; `metadata` keeps the file's metadata (the tokenizer lives there; with `lazyArrays` its big
 * arrays are left undecoded, see parseGguf). Close `sources` when done. */
export async function openGgufCheckpoint(
  location: string,
  options: { lazyArrays?: boolean } = {},
): Promise<OpenCheckpoint & Pick<GgufFile, "metadata" | "metadataTypes">> {
  const source = await openSource(location);
  try {
    // A local file is read in one piece big enough for a 262k vocabulary (a URL grows its reads,
    // so that the weights right after the header come from the same stream).
    const file = await readGgufHeader(source, {
      ...options,
      firstRead: isUrl(location) ? undefined : 16 << 20,
    });
    const found = new Map<string, TensorEntry>();
    for (const t of file.tensors) {
      const name = canonicalGgufName(t.name);
      if (name === null) {
        throw new Error(
          `${location}: unexpected tensor ${nameShort(t.name)} (not part of a Gemma 3 text model)`,
        );
      }
      const dtype = SUPPORTED_TYPES[t.type];
      if (!dtype) {
        throw new Error(
          `${location}: tensor ${nameShort(t.name)} is ${
            GGML_TYPES[t.type].name
          }, which is not supported (${SUPPORTED_NAMES} are)`,
        );
      }
      // GGUF lists dimensions innermost first; the tensor map uses [rows, cols].
      found.set(name, {
        name: t.name,
        dtype,
        shape: [...t.dims].reverse(),
        offset: t.offset,
        bytes: t.bytes,
        source,
      });
    }
    const embed = found.get("model.embed_tokens.weight");
    if (!embed) throw new Error(`${location}: missing tensor token_embd.weight`);
    const config = configFromGguf(
      file.metadata,
      embed.shape[0],
      !found.has("lm_head.weight"),
      location,
    );
    return {
      config,
      found,
      sources: [source],
      where: location,
      configWhere: `its metadata (${ggufShapeFields(config)})`,
      quirks: { normsStoreOnePlusW: true, storedName: ggufName },
      metadata: file.metadata,
      metadataTypes: file.metadataTypes,
    };
  } catch (e) {
    await source.close().catch(() => {});
    throw e;
  }
}

/** Reads a .gguf file (path or URL) into the runtime's memory. `beforeWeights` runs once the
 * header is read and checked, before any weight is: work with a large passing peak of memory
 * (building the tokenizer without its cache) then peaks before the weights take theirs.
 * `vocabularyCached` says the tokenizer has a cache it may find this file's vocabulary in. */
export async function loadGguf(
  location: string,
  rt: WasmRuntime,
  onProgress?: (p: LoadProgress) => void,
  quantize?: QuantPlan,
  beforeWeights?: (metadata: Map<string, unknown>) => Promise<void>,
  vocabularyCached = true,
): Promise<LoadedCheckpoint> {
  // From a file whose tokenizer may be cached, the vocabulary arrays stay undecoded: the
  // tokenizer reads them again only if its cache misses. A URL, or a file where no cache can be
  // used (an edge function that may not write), has them decoded now, in the one header read.
  const open = await openGgufCheckpoint(location, {
    lazyArrays: !isUrl(location) && vocabularyCached,
  });
  try {
    await beforeWeights?.(open.metadata);
  } catch (e) {
    for (const s of open.sources) await s.close().catch(() => {});
    throw e;
  }
  return await loadOpened(open, rt, onProgress, quantize);
}
