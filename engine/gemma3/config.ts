// The Gemma 3 text configuration as data: parsed once from a Hugging Face config.json (or, later,
// GGUF metadata), validated, and then read by everything else. Nothing downstream looks at the
// raw JSON.

import { shortJson } from "../formats/quote.ts";

/** Whether a layer attends to a sliding window of recent tokens or to the whole context. */
export type LayerType = "sliding_attention" | "full_attention";

/** The Gemma 3 text model configuration, with every default resolved. */
export interface Gemma3Config {
  /** Rows of the embedding table (and of the tied output head). */
  vocabSize: number;
  /** Width of the residual stream. */
  hiddenSize: number;
  /** Width of the feed-forward (GeGLU) layer. */
  intermediateSize: number;
  /** Number of transformer blocks. */
  numLayers: number;
  /** Query heads per layer. */
  numHeads: number;
  /** Key/value heads per layer (grouped-query attention: numHeads / numKvHeads queries share one). */
  numKvHeads: number;
  /** Width of one attention head (not necessarily hiddenSize / numHeads). */
  headDim: number;
  /** Attention scores are multiplied by queryPreAttnScalar ** -0.5. */
  queryPreAttnScalar: number;
  /** Epsilon of every RMSNorm. */
  rmsNormEps: number;
  /** How many positions a sliding-window layer sees: itself and slidingWindow - 1 before it. */
  slidingWindow: number;
  /** The longest context the model was trained for. */
  maxPositionEmbeddings: number;
  /** One entry per layer. */
  layerTypes: LayerType[];
  /** RoPE base of full-attention layers. */
  ropeTheta: number;
  /** RoPE base of sliding-window layers. */
  ropeLocalBaseFreq: number;
  /** Linear RoPE scaling of full-attention layers (positions are divided by it); 1 for none. */
  ropeScalingFactor: number;
  /** Whether the output head reuses the embedding table. */
  tieWordEmbeddings: boolean;
  /** Beginning-of-sequence token id. */
  bosTokenId: number;
  /** Token ids that end a generation. */
  eosTokenIds: number[];
  /** Padding token id. */
  padTokenId: number;
}

/** How one layer's attention is set up, derived from the config. */
export interface LayerAttention {
  /** Positions a query sees (0: all previous positions). */
  window: number;
  /** RoPE base for this layer. */
  ropeBase: number;
  /** Linear RoPE scaling for this layer (1: none). */
  ropeFactor: number;
}

/** The per-layer attention set-up: sliding layers use the local RoPE base and never scale. */
/** Layers a config may have: Gemma 3's largest has 62. A file's count sizes per-layer lists
 * before any tensor is looked at, so a corrupt one (2^31) must stop here, not in an allocation. */
export const MAX_LAYERS = 1024;

export function layerAttention(config: Gemma3Config, layer: number): LayerAttention {
  return config.layerTypes[layer] === "sliding_attention"
    ? { window: config.slidingWindow, ropeBase: config.ropeLocalBaseFreq, ropeFactor: 1 }
    : { window: 0, ropeBase: config.ropeTheta, ropeFactor: config.ropeScalingFactor };
}

/** Hugging Face's Gemma3TextConfig defaults, used for keys a config.json leaves out (the
 * multimodal checkpoints' text_config lists only what differs from these). */
const HF_DEFAULTS = {
  vocab_size: 262208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-6,
  sliding_window: 4096,
  sliding_window_pattern: 6,
  max_position_embeddings: 131072,
  rope_theta: 1_000_000,
  rope_local_base_freq: 10_000,
  tie_word_embeddings: true,
  bos_token_id: 2,
  eos_token_id: 1,
  pad_token_id: 0,
  hidden_activation: "gelu_pytorch_tanh",
};

const SUPPORTED = 'supported: Gemma 3 text models (model_type "gemma3_text", ' +
  'or "gemma3" whose text_config is used)';

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The config.json values that the tensor list and shapes come from, as "key value" pairs for a message. */
export function hfShapeFields(c: Gemma3Config): string {
  return `num_hidden_layers ${c.numLayers}, vocab_size ${c.vocabSize}, hidden_size ${c.hiddenSize}, ` +
    `intermediate_size ${c.intermediateSize}, ` +
    `num_attention_heads ${c.numHeads}, num_key_value_heads ${c.numKvHeads}, head_dim ${c.headDim}`;
}

/** The GGUF metadata values that the tensor list and shapes come from, as "key value" pairs for a message. */
export function ggufShapeFields(c: Gemma3Config): string {
  return `gemma3.block_count ${c.numLayers}, gemma3.embedding_length ${c.hiddenSize}, ` +
    `gemma3.feed_forward_length ${c.intermediateSize}, ` +
    `gemma3.attention.head_count ${c.numHeads}, gemma3.attention.head_count_kv ${c.numKvHeads}, ` +
    `gemma3.attention.key_length ${c.headDim}`;
}

/**
 * Parses a Hugging Face config.json (already JSON-decoded) into a validated Gemma3Config.
 * `where` names the file in error messages.
 */
export function parseHfConfig(json: unknown, where = "config.json"): Gemma3Config {
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${msg}`);
  };
  if (!isObject(json)) fail("not a JSON object");
  const top = json as Json;
  let text: Json;
  if (top.model_type === "gemma3_text") text = top;
  else if (top.model_type === "gemma3") {
    if (!isObject(top.text_config)) fail('model_type "gemma3" without a text_config object');
    text = top.text_config as Json;
    if (text.model_type !== undefined && text.model_type !== "gemma3_text") {
      fail(`text_config.model_type is ${shortJson(text.model_type)}; ${SUPPORTED}`);
    }
  } else {
    return fail(`model_type ${shortJson(top.model_type)} is not supported; ${SUPPORTED}`);
  }
  // Token ids of a multimodal checkpoint are the whole model's, so its top level wins for them.
  const tokenKeys = ["bos_token_id", "eos_token_id", "pad_token_id"];
  const pick = (key: keyof typeof HF_DEFAULTS): unknown =>
    (tokenKeys.includes(key) ? top[key] ?? text[key] : text[key]) ?? HF_DEFAULTS[key];

  const int = (key: keyof typeof HF_DEFAULTS, min = 1): number => {
    const v = pick(key);
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
      fail(`${key} must be an integer >= ${min}, got ${shortJson(v)}`);
    }
    return v as number;
  };
  const positive = (v: unknown, key: string): number => {
    if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
      fail(`${key} must be a positive number, got ${shortJson(v)}`);
    }
    return v as number;
  };

  for (const key of ["attn_logit_softcapping", "final_logit_softcapping"]) {
    if (text[key] !== undefined && text[key] !== null) {
      fail(`${key} is set; Gemma 3 has no soft-capping and this engine does not implement it`);
    }
  }
  if (text.attention_bias === true) fail("attention_bias is true; Gemma 3 has no attention biases");
  if (text.use_bidirectional_attention === true) {
    fail(
      "use_bidirectional_attention is true (an embedding model); only causal Gemma 3 is supported",
    );
  }
  const act = text.hidden_activation ?? text.hidden_act ?? HF_DEFAULTS.hidden_activation;
  if (act !== "gelu_pytorch_tanh" && act !== "gelu_tanh") {
    fail(
      `hidden_activation ${shortJson(act)} is not supported (Gemma 3 uses gelu_pytorch_tanh)`,
    );
  }

  const numLayers = int("num_hidden_layers");
  if (numLayers > MAX_LAYERS) {
    fail(`num_hidden_layers ${numLayers} is implausible (at most ${MAX_LAYERS})`);
  }
  const numHeads = int("num_attention_heads");
  const numKvHeads = int("num_key_value_heads");
  if (numHeads % numKvHeads !== 0) {
    fail(
      `num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  const headDim = int("head_dim");
  if (headDim % 2 !== 0) fail(`head_dim must be even for rotary embeddings, got ${headDim}`);

  let layerTypes: LayerType[];
  if (text.layer_types !== undefined && text.layer_types !== null) {
    const lt = text.layer_types;
    if (!Array.isArray(lt) || lt.length !== numLayers) {
      return fail(`layer_types must list ${numLayers} entries (num_hidden_layers)`);
    }
    layerTypes = lt.map((t, i) => {
      if (t !== "sliding_attention" && t !== "full_attention") {
        fail(
          `layer_types[${i}] is ${shortJson(t)}; expected "sliding_attention" or "full_attention"`,
        );
      }
      return t as LayerType;
    });
  } else {
    // Older configs give a period instead: every pattern-th layer is global.
    const key = text.sliding_window_pattern !== undefined
      ? "sliding_window_pattern"
      : "_sliding_window_pattern";
    const raw = text[key] ?? HF_DEFAULTS.sliding_window_pattern;
    if (typeof raw !== "number" || !Number.isInteger(raw) || raw < 1) {
      return fail(`${key} must be a positive integer, got ${shortJson(raw)}`);
    }
    layerTypes = Array.from(
      { length: numLayers },
      (_, i) => ((i + 1) % raw === 0 ? "full_attention" : "sliding_attention"),
    );
  }

  // RoPE: either the classic keys (rope_theta, rope_local_base_freq, rope_scaling) or the newer
  // per-layer-type rope_parameters.
  let ropeTheta = positive(pick("rope_theta"), "rope_theta");
  let ropeLocalBaseFreq = positive(pick("rope_local_base_freq"), "rope_local_base_freq");
  let scaling: unknown = text.rope_scaling;
  if (isObject(text.rope_parameters)) {
    const rp = text.rope_parameters as Json;
    if (isObject(rp.full_attention) || isObject(rp.sliding_attention)) {
      const full = (rp.full_attention ?? {}) as Json;
      const local = (rp.sliding_attention ?? {}) as Json;
      if (full.rope_theta !== undefined) {
        ropeTheta = positive(full.rope_theta, "rope_parameters.full_attention.rope_theta");
      }
      if (local.rope_theta !== undefined) {
        ropeLocalBaseFreq = positive(
          local.rope_theta,
          "rope_parameters.sliding_attention.rope_theta",
        );
      }
      const localType = local.rope_type ?? local.type ?? "default";
      if (localType !== "default") {
        fail(
          `rope_parameters.sliding_attention.rope_type ${shortJson(localType)} is not supported`,
        );
      }
      scaling = full;
    } else {
      if (rp.rope_theta !== undefined) {
        ropeTheta = positive(rp.rope_theta, "rope_parameters.rope_theta");
      }
      scaling = rp;
    }
  }
  let ropeScalingFactor = 1;
  if (isObject(scaling)) {
    const type = scaling.rope_type ?? scaling.type ?? "default";
    if (type === "linear") ropeScalingFactor = positive(scaling.factor, "rope_scaling.factor");
    else if (type !== "default") {
      fail(`rope_scaling type ${shortJson(type)} is not supported (Gemma 3 uses "linear")`);
    }
  } else if (scaling !== undefined && scaling !== null) {
    fail("rope_scaling must be an object or null");
  }

  const eosRaw = pick("eos_token_id");
  const eosTokenIds = (Array.isArray(eosRaw) ? eosRaw : [eosRaw]).map((v) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      fail(`eos_token_id must be an id or a list of ids, got ${shortJson(eosRaw)}`);
    }
    return v as number;
  });
  const tie = pick("tie_word_embeddings");
  if (typeof tie !== "boolean") fail("tie_word_embeddings must be true or false");

  const config: Gemma3Config = {
    vocabSize: int("vocab_size"),
    hiddenSize: int("hidden_size"),
    intermediateSize: int("intermediate_size"),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    queryPreAttnScalar: positive(pick("query_pre_attn_scalar"), "query_pre_attn_scalar"),
    rmsNormEps: positive(pick("rms_norm_eps"), "rms_norm_eps"),
    slidingWindow: int("sliding_window"),
    maxPositionEmbeddings: int("max_position_embeddings"),
    layerTypes,
    ropeTheta,
    ropeLocalBaseFreq,
    ropeScalingFactor,
    tieWordEmbeddings: tie as boolean,
    bosTokenId: int("bos_token_id", 0),
    eosTokenIds,
    padTokenId: int("pad_token_id", 0),
  };
  return config;
}

/**
 * The config of a GGUF file (architecture "gemma3"), from its metadata as llama.cpp reads it.
 * GGUF has no query_pre_attn_scalar: llama.cpp scales by head_dim^-0.5, except for the 27B
 * model (62 layers), which uses (hidden / heads)^-0.5; the same rule is applied here. Sliding and
 * full layers follow Gemma 3's pattern of 6 unless the file lists them.
 */
export function configFromGguf(
  meta: Map<string, unknown>,
  vocabSize: number,
  tied: boolean,
  where: string,
): Gemma3Config {
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${msg}`);
  };
  if (!Number.isInteger(vocabSize) || vocabSize < 1) {
    fail(`token_embd.weight has ${vocabSize} rows: the model would have no vocabulary`);
  }
  const arch = meta.get("general.architecture");
  if (arch === undefined) {
    fail("metadata general.architecture is missing (a Gemma 3 file has gemma3)");
  }
  if (arch !== "gemma3") {
    fail(`general.architecture ${shortJson(arch)} is not supported (gemma3 is)`);
  }
  const num = (key: string, fallback?: number): number => {
    const v = meta.get(`gemma3.${key}`) ?? fallback;
    const n = typeof v === "bigint" ? Number(v) : v;
    if (typeof n !== "number" || !Number.isFinite(n) || n <= 0) {
      return fail(`metadata gemma3.${key} is missing or invalid (${String(v)})`);
    }
    return n;
  };
  const int = (key: string, fallback?: number): number => {
    const n = num(key, fallback);
    if (!Number.isInteger(n)) fail(`metadata gemma3.${key} must be an integer, got ${n}`);
    return n;
  };
  const hiddenSize = int("embedding_length");
  const numLayers = int("block_count");
  if (numLayers > MAX_LAYERS) {
    fail(`metadata gemma3.block_count ${numLayers} is implausible (at most ${MAX_LAYERS})`);
  }
  const numHeads = int("attention.head_count");
  const numKvHeads = int("attention.head_count_kv", numHeads);
  if (numHeads % numKvHeads !== 0) {
    fail(
      `gemma3.attention.head_count ${numHeads} is not a multiple of gemma3.attention.head_count_kv ` +
        `${numKvHeads}`,
    );
  }
  const headDim = int("attention.key_length", hiddenSize / numHeads);
  const pattern = meta.get("gemma3.attention.sliding_window_pattern");
  let layerTypes: LayerType[];
  if (Array.isArray(pattern) && pattern.length === numLayers) {
    layerTypes = pattern.map((s) => (s ? "sliding_attention" : "full_attention"));
  } else {
    const period = typeof pattern === "number" && pattern > 0 ? pattern : 6;
    layerTypes = Array.from(
      { length: numLayers },
      (_, i) => ((i + 1) % period === 0 ? "full_attention" : "sliding_attention"),
    );
  }
  const scalingType = meta.get("gemma3.rope.scaling.type");
  let ropeScalingFactor = 1;
  if (scalingType === "linear") ropeScalingFactor = num("rope.scaling.factor");
  else if (scalingType !== undefined && scalingType !== "none") {
    fail(`rope scaling ${shortJson(scalingType)} is not supported`);
  }
  const id = (key: string, fallback: number) => {
    const v = meta.get(`tokenizer.ggml.${key}`);
    return typeof v === "number" && Number.isInteger(v) ? v : fallback;
  };
  const eos = id("eos_token_id", 1);
  const eot = id("eot_token_id", -1);
  return {
    vocabSize,
    hiddenSize,
    intermediateSize: int("feed_forward_length"),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    queryPreAttnScalar: numLayers === 62 ? hiddenSize / numHeads : headDim,
    rmsNormEps: num("attention.layer_norm_rms_epsilon"),
    slidingWindow: int("attention.sliding_window"),
    maxPositionEmbeddings: int("context_length"),
    layerTypes,
    ropeTheta: num("rope.freq_base", 1_000_000),
    ropeLocalBaseFreq: num("rope.freq_base_swa", 10_000),
    ropeScalingFactor,
    tieWordEmbeddings: tied,
    bosTokenId: id("bos_token_id", 2),
    eosTokenIds: eot >= 0 && eot !== eos ? [eos, eot] : [eos],
    padTokenId: id("padding_token_id", 0),
  };
}
