// The tensor-name map: which tensors a Gemma 3 model has, their shapes, and the names they go by
// in Hugging Face checkpoints. It is the single list the loaders check a checkpoint against and
// the forward pass reads its weights from.

import type { Gemma3Config } from "./config.ts";

/** The weights of one transformer block, named after their role. */
export interface LayerWeights<W> {
  inputNorm: W;
  qProj: W;
  kProj: W;
  vProj: W;
  oProj: W;
  qNorm: W;
  kNorm: W;
  postAttentionNorm: W;
  preFeedforwardNorm: W;
  postFeedforwardNorm: W;
  gateProj: W;
  upProj: W;
  downProj: W;
}

/** All weights of a model. With tied embeddings, `lmHead` is the same handle as `embedTokens`. */
export interface ModelWeights<W> {
  embedTokens: W;
  layers: LayerWeights<W>[];
  finalNorm: W;
  lmHead: W;
}

/** One tensor a model needs: its canonical (Hugging Face) name, shape and kind. */
export interface TensorSpec {
  /** Hugging Face name, e.g. `model.layers.3.self_attn.q_proj.weight`. */
  name: string;
  /** [rows, cols] for matrices (rows = output features), [n] for norm weights. */
  shape: number[];
  /** Matrices are multiplied by activations; vectors are RMSNorm weights. */
  kind: "matrix" | "vector";
}

type Dims = (c: Gemma3Config) => number[];

/** Per-layer tensors: field, Hugging Face suffix, GGUF (llama.cpp) suffix, shape. */
const LAYER_TENSORS: [keyof LayerWeights<unknown>, string, string, Dims][] = [
  ["inputNorm", "input_layernorm.weight", "attn_norm.weight", (c) => [c.hiddenSize]],
  [
    "qProj",
    "self_attn.q_proj.weight",
    "attn_q.weight",
    (c) => [c.numHeads * c.headDim, c.hiddenSize],
  ],
  [
    "kProj",
    "self_attn.k_proj.weight",
    "attn_k.weight",
    (c) => [c.numKvHeads * c.headDim, c.hiddenSize],
  ],
  [
    "vProj",
    "self_attn.v_proj.weight",
    "attn_v.weight",
    (c) => [c.numKvHeads * c.headDim, c.hiddenSize],
  ],
  [
    "oProj",
    "self_attn.o_proj.weight",
    "attn_output.weight",
    (c) => [c.hiddenSize, c.numHeads * c.headDim],
  ],
  ["qNorm", "self_attn.q_norm.weight", "attn_q_norm.weight", (c) => [c.headDim]],
  ["kNorm", "self_attn.k_norm.weight", "attn_k_norm.weight", (c) => [c.headDim]],
  [
    "postAttentionNorm",
    "post_attention_layernorm.weight",
    "post_attention_norm.weight",
    (c) => [c.hiddenSize],
  ],
  [
    "preFeedforwardNorm",
    "pre_feedforward_layernorm.weight",
    "ffn_norm.weight",
    (c) => [c.hiddenSize],
  ],
  [
    "postFeedforwardNorm",
    "post_feedforward_layernorm.weight",
    "post_ffw_norm.weight",
    (c) => [c.hiddenSize],
  ],
  [
    "gateProj",
    "mlp.gate_proj.weight",
    "ffn_gate.weight",
    (c) => [c.intermediateSize, c.hiddenSize],
  ],
  ["upProj", "mlp.up_proj.weight", "ffn_up.weight", (c) => [c.intermediateSize, c.hiddenSize]],
  [
    "downProj",
    "mlp.down_proj.weight",
    "ffn_down.weight",
    (c) => [c.hiddenSize, c.intermediateSize],
  ],
];

/** Whole-model tensors: Hugging Face name, GGUF name. */
const GLOBAL_TENSORS: [string, string][] = [
  ["model.embed_tokens.weight", "token_embd.weight"],
  ["model.norm.weight", "output_norm.weight"],
  ["lm_head.weight", "output.weight"],
];

/** Maps a GGUF (llama.cpp) tensor name to its canonical (Hugging Face) name, or null if unknown. */
export function canonicalGgufName(name: string): string | null {
  const global = GLOBAL_TENSORS.find(([, g]) => g === name);
  if (global) return global[0];
  const m = name.match(/^blk\.(\d+)\.(.+)$/);
  const layer = m && LAYER_TENSORS.find(([, , g]) => g === m[2]);
  return layer ? `model.layers.${m![1]}.${layer[1]}` : null;
}

/** The GGUF (llama.cpp) name of a canonical (Hugging Face) tensor name. */
export function ggufName(canonical: string): string {
  const global = GLOBAL_TENSORS.find(([h]) => h === canonical);
  if (global) return global[1];
  const m = canonical.match(/^model\.layers\.(\d+)\.(.+)$/);
  const layer = m && LAYER_TENSORS.find(([, h]) => h === m[2]);
  if (!layer) throw new Error(`no GGUF name for tensor ${canonical}`);
  return `blk.${m![1]}.${layer[2]}`;
}

const [[EMBED], [FINAL_NORM], [LM_HEAD]] = GLOBAL_TENSORS;

function spec(name: string, shape: number[]): TensorSpec {
  return { name, shape, kind: shape.length === 2 ? "matrix" : "vector" };
}

/** Every tensor the config needs, in a stable order. */
export function tensorSpecs(c: Gemma3Config): TensorSpec[] {
  const specs = [spec(EMBED, [c.vocabSize, c.hiddenSize])];
  for (let i = 0; i < c.numLayers; i++) {
    for (const [, suffix, , dims] of LAYER_TENSORS) {
      specs.push(spec(`model.layers.${i}.${suffix}`, dims(c)));
    }
  }
  specs.push(spec(FINAL_NORM, [c.hiddenSize]));
  if (!c.tieWordEmbeddings) specs.push(spec(LM_HEAD, [c.vocabSize, c.hiddenSize]));
  return specs;
}

/** Builds the weight structure from loaded tensors, looked up by canonical name. */
export function assembleWeights<W>(c: Gemma3Config, get: (name: string) => W): ModelWeights<W> {
  const layers = Array.from({ length: c.numLayers }, (_, i) => {
    const layer = {} as LayerWeights<W>;
    for (const [field, suffix] of LAYER_TENSORS) layer[field] = get(`model.layers.${i}.${suffix}`);
    return layer;
  });
  const embedTokens = get(EMBED);
  return {
    embedTokens,
    layers,
    finalNorm: get(FINAL_NORM),
    lmHead: c.tieWordEmbeddings ? embedTokens : get(LM_HEAD),
  };
}

/** The same structure with every weight mapped (tied weights stay one object). */
export function mapWeights<A, B>(w: ModelWeights<A>, f: (a: A) => B): ModelWeights<B> {
  const seen = new Map<A, B>();
  const g = (a: A) => {
    if (!seen.has(a)) seen.set(a, f(a));
    return seen.get(a)!;
  };
  return {
    embedTokens: g(w.embedTokens),
    layers: w.layers.map((l) =>
      Object.fromEntries(
        Object.entries(l).map(([k, v]) => [k, g(v as A)]),
      ) as unknown as LayerWeights<B>
    ),
    finalNorm: g(w.finalNorm),
    lmHead: g(w.lmHead),
  };
}

/**
 * Maps a stored Hugging Face tensor name to its canonical name, or null for a tensor that belongs
 * to another part of a multimodal checkpoint (the vision tower and its projector).
 * `multimodal`: the config was the "gemma3" wrapper, whose text weights sit under
 * `language_model.` (older checkpoints: `language_model.model.…`, newer: `model.language_model.…`).
 */
export function canonicalTensorName(stored: string, multimodal: boolean): string | null {
  if (!multimodal) return stored;
  if (/^(model\.)?(vision_tower|multi_modal_projector)\./.test(stored)) return null;
  if (stored.startsWith("language_model.")) return stored.slice("language_model.".length);
  if (stored.startsWith("model.language_model.")) {
    return "model." + stored.slice("model.language_model.".length);
  }
  return stored;
}
