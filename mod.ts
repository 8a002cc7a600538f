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

// --- Load and run a model ---
export { Gemma3Model, loadModel } from "./engine/model.ts";
export type { ChatOptions, LoadOptions, SessionOptions } from "./engine/model.ts";
export type { LoadProgress } from "./engine/loading/tensors.ts";
export type { DecodeBatchStats } from "./engine/decode_batcher.ts";
export { BACKEND_CHOICES } from "./engine/backends/select.ts";
export type { BackendChoice, BackendName } from "./engine/backends/select.ts";
export { LOAD_QUANT_TYPES } from "./engine/formats/quant.ts";
export type { LoadQuantType } from "./engine/formats/quant.ts";
export type { Gemma3Config, LayerType } from "./engine/gemma3/config.ts";

// --- Sessions and sampling ---
export { CHECKPOINT_DEFAULTS, Session } from "./engine/session.ts";
export type {
  CheckpointOptions,
  EvalOptions,
  FinishReason,
  GenerateOptions,
  GenerationEnd,
} from "./engine/session.ts";
export type { SamplingOptions, TokenLogprob } from "./engine/sampling.ts";
export { lookupSettings, MAX_DRAFT } from "./engine/prompt_lookup.ts";
export type { LookupOptions, SpeculativeOptions } from "./engine/prompt_lookup.ts";
export { StopStrings } from "./engine/stop_strings.ts";
export { generateText } from "./engine/generate_text.ts";
export type {
  TextGenerationEnd,
  TextGenerationOptions,
  TextLogprob,
  TextPiece,
} from "./engine/generate_text.ts";

// --- Constrained output: JSON Schema and GBNF grammars ---
export { compileConstraint } from "./engine/grammar/constraint.ts";
export type { ConstraintOptions } from "./engine/grammar/constraint.ts";
export { Grammar } from "./engine/grammar/automaton.ts";
export { GrammarError } from "./engine/grammar/gbnf.ts";
export { JSON_SCHEMA_FORMATS, jsonSchemaToGbnf } from "./engine/grammar/json_schema.ts";

// --- An OpenAI-compatible HTTP API, as one fetch handler (cli.ts serve mounts it) ---
export { createHandler } from "./engine/server/handler.ts";
export type { FetchHandler, HandlerOptions } from "./engine/server/handler.ts";

// --- Tokenizer and chat ---
export { loadTokenizer } from "./engine/tokenizer/load.ts";
export type { TokenizerLoadOptions } from "./engine/tokenizer/load.ts";
export { StreamDecoder, Tokenizer } from "./engine/tokenizer/tokenizer.ts";
export type { DecodeOptions, EncodeOptions } from "./engine/tokenizer/tokenizer.ts";
// The template a tokenizer renders (`tokenizer.chatTemplate`): Gemma 3's built in, or the model's.
export { type ChatMessage, ChatTemplate } from "./engine/tokenizer/chat_template.ts";

// --- Hugging Face Hub ---
export { downloadModel, hubCacheDir } from "./engine/loading/hub.ts";
export type { DownloadProgress, HubOptions } from "./engine/loading/hub.ts";

// --- GGUF export ---
export { EXPORT_TYPES, exportGguf } from "./engine/export_gguf.ts";
export type { ExportOptions, ExportType } from "./engine/export_gguf.ts";
export type { QuantType } from "./engine/formats/dtypes.ts";
