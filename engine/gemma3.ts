// loadModel and the model object: owns the runtime, the weights and the shared activations, and
// makes sessions.

import type { Gemma3Config } from "./config.ts";
import { exists, hasFileSystem, isDirectory, isUrl, joinLocation, readJson } from "./io.ts";
import { downloadModel, hubEndpoint, isRepoId } from "./hub.ts";
import { loadHfFolder } from "./load_hf.ts";
import type { LoadProgress, WasmWeight } from "./load_tensors.ts";
import { loadGguf } from "./load_gguf.ts";
import { type Activations, allocActivations } from "./model.ts";
import { WasmRuntime } from "./runtime.ts";
import { Session, type SessionHost } from "./session.ts";
import type { ChatMessage, Tokenizer } from "./tokenizer.ts";
import { loadTokenizer, tokenizerFromGguf } from "./tokenizer_load.ts";
import { quantPlan } from "./quant.ts";
import type { GenerateOptions } from "./session.ts";
import { type Ptr, WasmBackend } from "./wasm_backend.ts";
import type { ModelWeights } from "./weights.ts";

/** Options of `loadModel`. */
export interface LoadOptions {
  /** For a model by name: the branch, tag or commit (default "main"). */
  revision?: string;
  /** Where to run: "wasm" (WebAssembly SIMD), or "auto" (the default; currently always wasm). */
  backend?: "auto" | "wasm";
  /** Quantize float weight matrices while loading, streaming (the float copy is never held):
   * "q8_0" (about half the memory of bf16) or "q4_0" (about a quarter; the embedding/head stays
   * Q8_0 unless `headWeights` says otherwise, as llama.cpp's llama-quantize does). Products with
   * quantized weights quantize the activations per 32-block to int8 first, as llama.cpp does.
   * Matrices already quantized (GGUF) stay as stored. Default: keep the stored format. */
  weights?: "q8_0" | "q4_0";
  /** With `weights`: the format of the embedding/head (default: "q8_0"). */
  headWeights?: "q8_0" | "q4_0";
  /** Called as files download (models by name) and as weight data is read. */
  onProgress?: (progress: LoadProgress) => void;
  /** Tokens evaluated per forward call when a prompt is long (default 64). */
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
}

/** Options of `model.chat`: sampling and stopping, and which session keeps the conversation. */
export interface ChatOptions extends GenerateOptions {
  /** The session that holds the conversation's KV cache (default: one the model keeps). */
  session?: Session;
}

/** A loaded Gemma 3 model. Create sessions to evaluate and generate. */
export class Gemma3Model {
  /** The parsed configuration. */
  readonly config: Gemma3Config;
  /** The backend the model runs on. */
  readonly backend: "wasm";
  readonly #rt: WasmRuntime;
  readonly #host: SessionHost<Ptr, WasmWeight>;
  readonly #allocations: number[];
  readonly #sessions = new Set<Session>();
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #tokenizer: Tokenizer | undefined;
  #chatSession: Session | undefined;
  /** Sampling settings from the model's generation_config.json (empty if it has none). */
  readonly generationDefaults: GenerateOptions;

  /** @internal Use `loadModel()`. */
  constructor(
    rt: WasmRuntime,
    config: Gemma3Config,
    weights: ModelWeights<WasmWeight>,
    allocations: number[],
    maxChunk: number,
    tokenizer?: Tokenizer,
    generationDefaults: GenerateOptions = {},
  ) {
    this.config = config;
    this.#tokenizer = tokenizer;
    this.generationDefaults = generationDefaults;
    this.backend = "wasm";
    this.#rt = rt;
    this.#allocations = allocations;
    const backend = new WasmBackend(rt);
    const activations: Activations<Ptr> = allocActivations(backend, config, maxChunk);
    this.#host = {
      backend,
      config,
      weights,
      activations,
      exclusive: <T>(fn: () => Promise<T>): Promise<T> => {
        const run = this.#queue.then(fn);
        this.#queue = run.catch(() => {});
        return run;
      },
      release: (s) => this.#sessions.delete(s),
    };
  }

  /** The model's tokenizer (from tokenizer.json in the model folder); throws if it had none. */
  get tokenizer(): Tokenizer {
    if (!this.#tokenizer) {
      throw new Error(
        "this model was loaded without a tokenizer (its folder has no tokenizer.json)",
      );
    }
    return this.#tokenizer;
  }

  /** Whether the model came with a tokenizer. */
  get hasTokenizer(): boolean {
    return this.#tokenizer !== undefined;
  }

  /**
   * Continues a conversation: renders `messages` with the chat template, evaluates only the
   * tokens the session does not hold yet (the KV cache is kept across turns), and streams the
   * answer as text. Stops at <end_of_turn> or <eos> unless `stopTokens` says otherwise.
   */
  async *chat(messages: ChatMessage[], options: ChatOptions = {}): AsyncGenerator<string> {
    const tok = this.tokenizer;
    const session = options.session ?? (this.#chatSession ??= this.createSession());
    const prompt = tok.encode(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), {
      addBos: false,
    });
    if (prompt.length > session.contextLength) {
      throw new RangeError(
        `the conversation is ${prompt.length} tokens, more than the context length ${session.contextLength}`,
      );
    }
    // Keep the longest prefix the session already holds; at least one token must be evaluated
    // to get logits for the answer's first token.
    const held = session.tokens;
    let same = 0;
    while (same < held.length && same < prompt.length - 1 && held[same] === prompt[same]) same++;
    session.truncate(same);
    const stopTokens = options.stopTokens ??
      [...new Set([tok.endOfTurnId, tok.eosId, ...this.config.eosTokenIds])].filter((id) =>
        id >= 0
      );
    const decoder = tok.streamDecoder({ skipSpecialTokens: true });
    for await (const id of session.generate(prompt.slice(same), { ...options, stopTokens })) {
      const text = decoder.push(id);
      if (text) yield text;
    }
    const rest = decoder.flush();
    if (rest) yield rest;
  }

  /** Threads the model runs on (the calling thread included). */
  get threads(): number {
    return this.#rt.threadInfo.threads;
  }

  /** Why fewer threads run than were asked for (undefined when all run). */
  get threadsFallbackReason(): string | undefined {
    return this.#rt.threadInfo.fallbackReason;
  }

  /** Bytes of WebAssembly memory in use (weights, caches, activations). */
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
    const s = new Session(this.#host as SessionHost<unknown, unknown>, contextLength);
    this.#sessions.add(s);
    return s;
  }

  /** Frees the model and all its sessions. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    await this.#queue;
    for (const s of [...this.#sessions]) s.dispose();
    const a = this.#host.activations;
    for (const p of [a.ids, a.x, a.h, a.q, a.k, a.v, a.attn, a.o, a.gate, a.up, a.logits]) {
      this.#rt.free(p);
    }
    for (const p of this.#allocations) this.#rt.free(p);
    this.#rt.dispose();
    this.#disposed = true;
  }
}

/** A Hub repository as a local snapshot folder (downloaded into the Hugging Face cache), or, where
 * there is no file system (browsers), as the URL of its files. */
async function resolveRepo(repoId: string, options: LoadOptions): Promise<string> {
  if (!(await hasFileSystem())) {
    return `${hubEndpoint()}/${repoId}/resolve/${options.revision ?? "main"}/`;
  }
  const onProgress = options.onProgress;
  return await downloadModel(repoId, {
    revision: options.revision,
    onDownload: onProgress && ((p) => onProgress({ phase: "download", ...p })),
  });
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
  if (backend !== "auto" && backend !== "wasm") {
    throw new Error(`backend ${JSON.stringify(backend)} is not available; use "wasm" or "auto"`);
  }
  for (const key of ["weights", "headWeights"] as const) {
    const v = options[key];
    if (v !== undefined && v !== "q8_0" && v !== "q4_0") {
      throw new Error(
        `${key} ${JSON.stringify(v)} is not supported; use "q8_0" or "q4_0", or leave it out`,
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
  const gguf = /\.gguf$/i.test(isUrl(source) ? new URL(source).pathname : source);
  if (!gguf && !isUrl(source) && !(await isDirectory(source))) {
    if (!isRepoId(source)) {
      throw new Error(
        `${source}: not a folder, URL or Hub repository name (expected a Hugging Face model folder with config.json)`,
      );
    }
    source = await resolveRepo(source, options);
  }
  const rt = await WasmRuntime.create({ threads: options.threads });
  try {
    if (gguf) {
      const { config, weights, allocations, metadata } = await loadGguf(
        source,
        rt,
        options.onProgress,
        plan,
      );
      // A GGUF file carries its tokenizer (llama.cpp's writers always add one).
      const tokenizer = metadata.has("tokenizer.ggml.tokens")
        ? await tokenizerFromGguf(source, metadata)
        : undefined;
      return new Gemma3Model(rt, config, weights, allocations, maxChunk, tokenizer);
    }
    const { config, weights, allocations } = await loadHfFolder(
      source,
      rt,
      options.onProgress,
      plan,
    );
    let tokenizer: Tokenizer | undefined;
    if (await exists(joinLocation(source, "tokenizer.json"))) {
      tokenizer = await loadTokenizer(source);
    }
    const defaults = await readGenerationConfig(joinLocation(source, "generation_config.json"));
    return new Gemma3Model(rt, config, weights, allocations, maxChunk, tokenizer, defaults);
  } catch (e) {
    rt.dispose(); // stop the worker pool; the memory goes with the runtime
    throw e;
  }
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
