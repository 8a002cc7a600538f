/**
 * gemma3-wasm: Google's Gemma 3 text models in TypeScript, on WebAssembly SIMD kernels.
 *
 * ```ts
 * import { loadModel } from "./mod.ts";
 *
 * const model = await loadModel("path/to/gemma-3-270m-it");   // Hugging Face folder or URL
 * const session = model.createSession({ contextLength: 4096 });
 * const logits = await session.eval([2, 17, 42]);              // last token's logits
 * for await (const id of session.generate([], { maxTokens: 16, temperature: 0 })) {
 *   console.log(id);
 * }
 * await model.dispose();
 * ```
 *
 * @module
 */

export { Gemma3Model, loadModel } from "./engine/gemma3.ts";
export type { ChatOptions, LoadOptions, SessionOptions } from "./engine/gemma3.ts";
export { Session } from "./engine/session.ts";
export type { EvalOptions, GenerateOptions } from "./engine/session.ts";
export type { SamplingOptions } from "./engine/sampling.ts";
export type { Gemma3Config, LayerType } from "./engine/config.ts";
export { parseHfConfig } from "./engine/config.ts";
export type { LoadProgress } from "./engine/load_tensors.ts";
export { downloadModel, hubCacheDir } from "./engine/hub.ts";
export type { DownloadProgress, HubOptions } from "./engine/hub.ts";
export { loadTokenizer } from "./engine/tokenizer_load.ts";
export type { TokenizerLoadOptions } from "./engine/tokenizer_load.ts";
export { StreamDecoder, Tokenizer } from "./engine/tokenizer.ts";
export type { ChatMessage, DecodeOptions, EncodeOptions } from "./engine/tokenizer.ts";
export { ChatTemplate } from "./engine/chat.ts";
export { exportGguf } from "./engine/gguf_export.ts";
export type { ExportOptions, ExportType } from "./engine/gguf_export.ts";
export type { QuantType } from "./engine/quant.ts";
