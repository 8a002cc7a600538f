// Writes small Hugging Face checkpoints for tests: random Gemma 3 weights for any config, and
// hand-made broken files. Independent of the engine's reader.

import { f32ToBF16 } from "../../engine/formats/dtypes.ts";
import { exportGguf } from "../../engine/export_gguf.ts";
import { FIXTURES, randn, rng } from "./helpers.ts";
import { tempDir } from "./temp.ts";

/** A tensor to write: values are f32 and stored as `dtype`. */
export interface TensorData {
  dtype: "F32" | "BF16" | "F16";
  shape: number[];
  values: Float32Array;
}

function f32ToF16(v: number): number {
  // Round to nearest half via the float32 bits (values in tests are small and normal).
  const f = new Float32Array([v]);
  const b = new Uint32Array(f.buffer)[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = ((b >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign; // flush tiny values to zero
  if (exp >= 31) return sign | 0x7c00;
  let mant = (b >>> 13) & 0x3ff;
  const rest = b & 0x1fff;
  let e = exp;
  if (rest > 0x1000 || (rest === 0x1000 && (mant & 1))) {
    mant++;
    if (mant === 0x400) {
      mant = 0;
      e++;
    }
  }
  return sign | (e << 10) | mant;
}

/** The exact f32 values a tensor holds once stored in its dtype. */
export function storedValues(t: TensorData): Float32Array {
  if (t.dtype === "F32") return t.values;
  const bits = encode(t);
  const u16 = new Uint16Array(bits.buffer, bits.byteOffset, t.values.length);
  if (t.dtype === "BF16") {
    return Float32Array.from(u16, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]);
  }
  return Float32Array.from(u16, (h) => {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
  });
}

function encode(t: TensorData): Uint8Array {
  if (t.dtype === "F32") {
    return new Uint8Array(
      t.values.buffer.slice(t.values.byteOffset, t.values.byteOffset + t.values.byteLength),
    );
  }
  const out = new Uint16Array(t.values.length);
  if (t.dtype === "BF16") f32ToBF16(t.values, out);
  else for (let i = 0; i < out.length; i++) out[i] = f32ToF16(t.values[i]);
  return new Uint8Array(out.buffer);
}

/** Serialises tensors as a safetensors file (header padded to 8 bytes, as the format advises). */
export function safetensorsBytes(
  tensors: Record<string, TensorData>,
  headerOverride?: (h: Record<string, unknown>) => void,
): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = encode(t);
    header[name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + bytes.length],
    };
    blobs.push(bytes);
    offset += bytes.length;
  }
  headerOverride?.(header);
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += " ";
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const b of blobs) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/** A Hugging Face style Gemma 3 text config with small dimensions; override what a test varies. */
export function smallConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ["Gemma3ForCausalLM"],
    model_type: "gemma3_text",
    vocab_size: 96,
    hidden_size: 48,
    intermediate_size: 80,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    query_pre_attn_scalar: 24,
    rms_norm_eps: 1e-6,
    sliding_window: 5,
    layer_types: ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
    max_position_embeddings: 512,
    rope_theta: 1000000,
    rope_local_base_freq: 10000,
    rope_scaling: null,
    tie_word_embeddings: true,
    bos_token_id: 2,
    eos_token_id: [1],
    pad_token_id: 0,
    hidden_activation: "gelu_pytorch_tanh",
    ...overrides,
  };
}

/** smallConfig with rows of 256 (hidden 256, heads of 128): the smallest shape the K-quants
 * (Q4_K, Q6_K: 256-weight super-blocks) can store. */
export function kQuantConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return smallConfig({
    vocab_size: 512,
    hidden_size: 256,
    intermediate_size: 512,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 128,
    query_pre_attn_scalar: 128,
    ...overrides,
  });
}

/** A random model with rows of 256 (kQuantConfig, sliding window 8, weights from `seed`) as Q4_K
 * and Q6_K GGUF files (head too; tiny-a's tokenizer): the K-quant formats, which tiny-a's 64-wide
 * rows cannot hold. */
export async function kQuantGgufs(
  seed: number,
): Promise<{ type: "q4_k" | "q6_k"; path: string }[]> {
  const config = kQuantConfig({ sliding_window: 8 });
  const dir = await writeCheckpoint(config, randomWeights(config, seed));
  const files = [];
  for (const type of ["q4_k", "q6_k"] as const) {
    const path = `${dir}/${type}.gguf`;
    await exportGguf(dir, path, {
      type,
      headType: type,
      tokenizer: `${FIXTURES}tiny-a/model.gguf`,
    });
    files.push({ type, path });
  }
  return files;
}

/** Random weights for a config (HF names, `dtype` storage), as in shared/fixtures/README.md. */
export function randomWeights(
  config: Record<string, number | boolean | unknown>,
  seed: number,
  dtype: TensorData["dtype"] = "BF16",
): Record<string, TensorData> {
  const c = config as Record<string, number>;
  const rand = rng(seed);
  const t = (shape: number[], std: number, center = 0): TensorData => {
    const values = randn(rand, shape.reduce((a, b) => a * b, 1), std);
    if (center || shape.length === 1) {
      for (let i = 0; i < values.length; i++) values[i] = center + (rand() - 0.5) * 0.6;
    }
    return { dtype, shape, values };
  };
  const {
    hidden_size: H,
    intermediate_size: F,
    num_attention_heads: nh,
    num_key_value_heads: nkv,
    head_dim: d,
  } = c;
  const out: Record<string, TensorData> = {
    "model.embed_tokens.weight": t([c.vocab_size, H], 0.1),
  };
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    out[p + "input_layernorm.weight"] = t([H], 0);
    out[p + "self_attn.q_proj.weight"] = t([nh * d, H], 0.1);
    out[p + "self_attn.k_proj.weight"] = t([nkv * d, H], 0.1);
    out[p + "self_attn.v_proj.weight"] = t([nkv * d, H], 0.1);
    out[p + "self_attn.o_proj.weight"] = t([H, nh * d], 0.1);
    out[p + "self_attn.q_norm.weight"] = t([d], 0);
    out[p + "self_attn.k_norm.weight"] = t([d], 0);
    out[p + "post_attention_layernorm.weight"] = t([H], 1);
    out[p + "pre_feedforward_layernorm.weight"] = t([H], 0);
    out[p + "post_feedforward_layernorm.weight"] = t([H], 1);
    out[p + "mlp.gate_proj.weight"] = t([F, H], 0.1);
    out[p + "mlp.up_proj.weight"] = t([F, H], 0.1);
    out[p + "mlp.down_proj.weight"] = t([H, F], 0.1);
  }
  out["model.norm.weight"] = t([H], 2);
  if (config.tie_word_embeddings === false) out["lm_head.weight"] = t([c.vocab_size, H], 0.1);
  return out;
}

/** Writes config.json and model.safetensors into a new temporary folder (removed when the test
 * module ends); returns its path. */
export async function writeCheckpoint(
  config: unknown,
  tensors: Record<string, TensorData>,
): Promise<string> {
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  await Deno.writeFile(`${dir}/model.safetensors`, safetensorsBytes(tensors));
  return dir;
}

/** A copy of tiny-a's config.json and model.safetensors in a fresh folder, to break. */
export async function tinyCopy(): Promise<string> {
  const dir = await tempDir("gemma3-bad-");
  await Deno.copyFile(`${FIXTURES}tiny-a/config.json`, `${dir}/config.json`);
  await Deno.copyFile(`${FIXTURES}tiny-a/model.safetensors`, `${dir}/model.safetensors`);
  return dir;
}

/** A small random checkpoint whose safetensors header `edit` changed before it was written. */
export async function withHeader(
  edit: (h: Record<string, unknown>) => void,
  configOverrides = {},
): Promise<string> {
  const config = smallConfig(configOverrides);
  const dir = await writeCheckpoint(config, {});
  await Deno.writeFile(
    `${dir}/model.safetensors`,
    safetensorsBytes(randomWeights(config, 1), edit),
  );
  return dir;
}
