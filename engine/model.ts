// loadModel and the model object: owns the runtime, the weights and the shared activations, and
// makes sessions. Reading a checkpoint is engine/loading/, where it runs is engine/backends/, the
// forward pass itself is engine/gemma3/forward.ts.

import type { Gemma3Config } from "./gemma3/config.ts";
import { type Activations, allocActivations, freeActivations } from "./gemma3/forward.ts";
import { DecodeBatcher, type DecodeBatchStats } from "./decode_batcher.ts";
import { exists, joinLocation, readJson } from "./io.ts";
import { LOAD_QUANT_TYPES, type LoadQuantType, quantPlan } from "./formats/quant.ts";
import { loadHfFolder } from "./loading/hf.ts";
import { loadGguf } from "./loading/gguf.ts";
import { resolveModelSource } from "./loading/source.ts";
import type { LoadedCheckpoint, LoadProgress } from "./loading/tensors.ts";
import {
  BACKEND_CHOICES,
  type BackendChoice,
  type BackendName,
  chooseBackend,
  type PlacedModel,
  placeWeights,
} from "./backends/select.ts";
import { WasmRuntime } from "./backends/wasm/runtime.ts";
import {
  type CheckpointOptions,
  type GenerateOptions,
  Session,
  type SessionHost,
} from "./session.ts";
import type { Tokenizer } from "./tokenizer/tokenizer.ts";
import type { ChatMessage } from "./tokenizer/chat_template.ts";
import {
  generateText,
  type TextGenerationEnd,
  type TextGenerationOptions,
} from "./generate_text.ts";
import { loadTokenizer, tokenizerCacheUsable, tokenizerFromGguf } from "./tokenizer/load.ts";

/** Options of `loadModel`. */
export interface LoadOptions {
  /** For a model by name: the branch, tag or commit (default "main"). */
  revision?: string;
  /** Where to run: "wasm" (WebAssembly SIMD on the CPU), "webgpu" (the GPU, where the runtime
   * has WebGPU: Deno, browsers), or "auto" (the default): WebGPU when a hardware adapter exists
   * and the model fits its limits, else wasm. `model.backend` and `model.backendReason` say
   * which and why. */
  backend?: BackendChoice;
  /** Quantize float weight matrices while loading, streaming (the float copy is never held):
   * "q8_0" (about half the memory of bf16) or "q4_0" (about a quarter; the embedding/head stays
   * Q8_0 unless `headWeights` says otherwise, as llama.cpp's llama-quantize does). Products with
   * quantized weights quantize the activations per 32-block to int8 first, as llama.cpp does.
   * Matrices already quantized (GGUF) stay as stored. Default: keep the stored format. */
  weights?: LoadQuantType;
  /** With `weights`: the format of the embedding/head (default: "q8_0"). */
  headWeights?: LoadQuantType;
  /** Called as files download (models by name) and as weight data is read. */
  onProgress?: (progress: LoadProgress) => void;
  /** Tokens evaluated per forward call when a prompt is long (default 64); also the most
   * sessions decoded together in one batched step. */
  maxChunk?: number;
  /** Threads, this one included (default: navigator.hardwareConcurrency). Needs
   * SharedArrayBuffer and workers; without them the model runs on one thread, with the same
   * results (`model.threads` and `model.threadsFallbackReason` say what happened). */
  threads?: number;
}

/** Options of `model.createSession`. */
export interface SessionOptions {
  /** Most tokens the session can hold; sets the size of the full-attention layers' cache.
   * Default: 4096, or the model's maximum if smaller. */
  contextLength?: number;
  /** Snapshots of the sliding layers, so that going back (regenerating an answer, editing the
   * last message, another prompt sharing the start) re-evaluates only what follows the nearest
   * one instead of everything (Session.truncate). */
  checkpoints?: CheckpointOptions;
}

/** Options of `model.chat`: sampling, constraints and stopping, and which session keeps the
 * conversation. */
export interface ChatOptions extends TextGenerationOptions {
  /** The session that holds the conversation's KV cache (default: one the model keeps). */
  session?: Session;
}

/** A loaded Gemma 3 model. Create sessions to evaluate and generate. */
export class Gemma3Model {
  /** The parsed configuration. */
  readonly config: Gemma3Config;
  /** The backend the model runs on. */
  readonly backend: BackendName;
  /** Why this backend: what "auto" found (or that it was asked for). */
  readonly backendReason: string;
  readonly #rt: WasmRuntime;
  readonly #host: SessionHost<unknown, unknown>;
  readonly #batcher: DecodeBatcher<unknown, unknown>;
  readonly #release: () => void;
  readonly #sessions = new Set<Session>();
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #tokenizer: Tokenizer | undefined;
  #noTokenizerReason: string;
  #chatSession: Session | undefined;
  /** Sampling settings from the model's generation_config.json (empty if it has none). */
  readonly generationDefaults: GenerateOptions;

  /** @internal Use `loadModel()`. */
  constructor(
    rt: WasmRuntime,
    config: Gemma3Config,
    run: PlacedModel,
    maxChunk: number,
    tokenizer?: Tokenizer,
    generationDefaults: GenerateOptions = {},
    noTokenizerReason = "its folder has no tokenizer.json",
    source?: string,
  ) {
    this.#noTokenizerReason = noTokenizerReason;
    this.config = config;
    this.#tokenizer = tokenizer;
    this.generationDefaults = generationDefaults;
    this.backend = run.name;
    this.backendReason = run.reason;
    this.#rt = rt;
    this.#release = run.release;
    const backend = run.backend;
    const activations: Activations<unknown> = allocActivations(backend, config, maxChunk);
    const forwardContext = { backend, config, weights: run.weights, activations };
    const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
      const run = this.#queue.then(fn);
      this.#queue = run.catch(() => {});
      return run;
    };
    const batcher = new DecodeBatcher(
      forwardContext,
      exclusive,
      backend.batchesSequences ? maxChunk : 1,
    );
    this.#batcher = batcher;
    this.#host = {
      ...forwardContext,
      exclusive,
      decode: (step) => batcher.step(step),
      othersDecoding: (cache) => batcher.othersDecoding(cache),
      release: (s) => this.#sessions.delete(s),
      vocabulary: tokenizer,
      source,
    };
  }

  /** The model's tokenizer (from tokenizer.json in the model folder); throws if it had none. */
  get tokenizer(): Tokenizer {
    if (!this.#tokenizer) {
      throw new Error(`this model was loaded without a tokenizer (${this.#noTokenizerReason})`);
    }
    return this.#tokenizer;
  }

  /** Whether the model came with a tokenizer. */
  get hasTokenizer(): boolean {
    return this.#tokenizer !== undefined;
  }

  /** The tokens that end an answer by default: <end_of_turn> and <eos> where the tokenizer has
   * them, and the config's EOS ids. */
  get defaultStopTokens(): number[] {
    const tok = this.#tokenizer;
    const ids = [tok?.endOfTurnId ?? -1, tok?.eosId ?? -1, ...this.config.eosTokenIds];
    return [...new Set(ids)].filter((id) => id >= 0);
  }

  /**
   * Continues a conversation: renders `messages` with the chat template, evaluates only the
   * tokens the session does not hold yet (the KV cache is kept across turns), and streams the
   * answer as text. Stops at `defaultStopTokens` unless `stopTokens` says otherwise, where the
   * text reaches one of `stop`, or where a grammar (`jsonSchema`, `grammar`) is complete.
   * Returns (as the generator's return value) why it ended and, with `logprobs`, each token's
   * log-probabilities:
   *
   * ```ts
   * const answer = model.chat(messages, { jsonSchema, maxTokens: 200 });
   * let text = "", r;
   * while (!(r = await answer.next()).done) text += r.value;
   * console.log(JSON.parse(text), r.value.finishReason); // "end_of_turn", "stop" or "length"
   * ```
   */
  async *chat(
    messages: ChatMessage[],
    options: ChatOptions = {},
  ): AsyncGenerator<string, TextGenerationEnd> {
    const tok = this.tokenizer;
    const session = options.session ?? (this.#chatSession ??= this.createSession());
    const stopTokens = options.stopTokens ?? this.defaultStopTokens;
    const text = generateText(session, tok, tok.encodeChat(messages), { ...options, stopTokens });
    for (let r = await text.next();; r = await text.next()) {
      if (r.done) return r.value;
      if (r.value.text) yield r.value.text;
    }
  }

  /** Threads the model runs on (the calling thread included). */
  get threads(): number {
    return this.#rt.threadInfo.threads;
  }

  /** Why fewer threads run than were asked for (undefined when all run). */
  get threadsFallbackReason(): string | undefined {
    return this.#rt.threadInfo.fallbackReason;
  }

  /** Decode steps so far and the batches they ran in: sessions decoding at the same time (a
   * server's slots, concurrent `generate` calls) share one pass over the weights per token, up to
   * `maxChunk` sessions a batch, each with the results it would get alone. */
  get decodeBatchStats(): DecodeBatchStats {
    return { ...this.#batcher.stats };
  }

  /** Bytes of WebAssembly memory in use (weights, caches, activations; with the WebGPU backend
   * these live on the GPU and this counts only what stays on the CPU). */
  get memoryBytes(): number {
    return this.#rt.allocatedBytes;
  }

  /** A new, empty sequence with its own KV cache. */
  createSession(options: SessionOptions = {}): Session {
    if (this.#disposed) throw new Error("this model has been disposed");
    const max = this.config.maxPositionEmbeddings;
    const contextLength = options.contextLength ?? Math.min(4096, max);
    if (!Number.isInteger(contextLength) || contextLength < 1 || contextLength > max) {
      throw new RangeError(
        `contextLength must be an integer from 1 to ${max} (the model's maximum), got ${contextLength}`,
      );
    }
    const s = new Session(this.#host, contextLength, options.checkpoints);
    this.#sessions.add(s);
    return s;
  }

  /** Frees the model and all its sessions. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    await this.#queue;
    for (const s of [...this.#sessions]) s.dispose();
    freeActivations(this.#host.backend, this.#host.activations);
    this.#release();
    this.#rt.dispose();
    this.#disposed = true;
  }
}

/**
 * Loads a Gemma 3 model: a Hugging Face model folder (a local path, or an http(s) URL of a folder
 * holding config.json and model.safetensors or sharded safetensors with their index), or a Hub
 * repository by name ("unsloth/gemma-3-270m-it"), downloaded once into the Hugging Face cache.
 */
export async function loadModel(source: string, options: LoadOptions = {}): Promise<Gemma3Model> {
  if (typeof source !== "string" || source === "") {
    throw new TypeError("loadModel needs a folder path or URL");
  }
  const backend = options.backend ?? "auto";
  if (!BACKEND_CHOICES.includes(backend)) {
    throw new Error(
      `backend ${JSON.stringify(backend)} is not available; use ${quoted(BACKEND_CHOICES)}`,
    );
  }
  for (const key of ["weights", "headWeights"] as const) {
    const v = options[key];
    if (v !== undefined && !LOAD_QUANT_TYPES.includes(v)) {
      throw new Error(
        `${key} ${JSON.stringify(v)} is not supported; use ${
          quoted(LOAD_QUANT_TYPES)
        }, or leave it out`,
      );
    }
  }
  if (options.headWeights !== undefined && options.weights === undefined) {
    throw new Error("headWeights needs weights as well");
  }
  const plan = options.weights ? quantPlan(options.weights, options.headWeights) : undefined;
  const maxChunk = options.maxChunk ?? 64;
  if (!Number.isInteger(maxChunk) || maxChunk < 1) {
    throw new RangeError(`maxChunk must be a positive integer, got ${maxChunk}`);
  }
  const onProgress = options.onProgress;
  const { location, gguf } = await resolveModelSource(source, {
    revision: options.revision,
    onDownload: onProgress && ((p) => onProgress({ phase: "download", ...p })),
  });
  source = location;
  // The weights are read on the CPU either way; on the GPU they are then uploaded.
  const decision = await chooseBackend(backend);
  const gpu = decision.gpu;
  const rt = await WasmRuntime.create({ threads: gpu ? 1 : options.threads });
  try {
    let loaded: LoadedCheckpoint;
    let tokenizer: Tokenizer | undefined;
    let noTokenizer: string | undefined;
    let defaults: GenerateOptions = {};
    if (gguf) {
      // A GGUF file carries its tokenizer (llama.cpp's writers always add one). One this engine
      // cannot read leaves the model usable with token ids. It is built before the weights are
      // read: without its cache, building it passes through ~80 MB of JS values, and that peak
      // then does not add to the weights'.
      loaded = await loadGguf(
        source,
        rt,
        options.onProgress,
        plan,
        async (metadata) => {
          if (!metadata.has("tokenizer.ggml.tokens")) {
            noTokenizer = "the GGUF file has no tokenizer.ggml.tokens";
          } else {
            tokenizer = await tokenizerFromGguf(source, metadata).catch((e) => {
              noTokenizer = (e as Error).message;
              return undefined;
            });
          }
        },
        tokenizerCacheUsable(),
      );
    } else {
      loaded = await loadHfFolder(source, rt, options.onProgress, plan);
      if (await exists(joinLocation(source, "tokenizer.json"))) {
        tokenizer = await loadTokenizer(source);
      }
      defaults = await readGenerationConfig(joinLocation(source, "generation_config.json"));
    }
    const run = placeWeights(decision, rt, loaded.weights, loaded.allocations);
    return new Gemma3Model(
      rt,
      loaded.config,
      run,
      maxChunk,
      tokenizer,
      defaults,
      noTokenizer,
      source,
    );
  } catch (e) {
    gpu?.dispose();
    rt.dispose(); // stop the worker pool; the memory goes with the runtime
    throw e;
  }
}

/** "a", "b" or "c", for messages. */
function quoted(values: readonly string[]): string {
  const q = values.map((v) => JSON.stringify(v));
  return `${q.slice(0, -1).join(", ")} or ${q[q.length - 1]}`;
}

/** The sampling settings of a generation_config.json, if the model has one. */
async function readGenerationConfig(location: string): Promise<GenerateOptions> {
  if (!(await exists(location))) return {};
  const g = await readJson(location) as Record<string, unknown>;
  const num = (k: string) => (typeof g[k] === "number" ? g[k] as number : undefined);
  const out: GenerateOptions = {};
  if (g.do_sample === false) out.temperature = 0;
  else out.temperature = num("temperature") ?? (g.do_sample === true ? 1 : undefined);
  if (num("top_k") !== undefined) out.topK = num("top_k");
  if (num("top_p") !== undefined) out.topP = num("top_p");
  if (num("min_p") !== undefined) out.minP = num("min_p");
  if (num("repetition_penalty") !== undefined) out.repetitionPenalty = num("repetition_penalty");
  const eos = g.eos_token_id;
  if (Array.isArray(eos) || typeof eos === "number") {
    out.stopTokens = ([] as number[]).concat(eos as number[]);
  }
  return out;
}
