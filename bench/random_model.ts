// The full-size random-weight Gemma 3 270M the benchmarks run: the real config (hidden 640, 18
// layers, 4 heads, 1 KV head, head_dim 256, ffn 2048, vocab 262,144, window 512) with uniform
// random weights, written once as a Hugging Face folder (safetensors) and cached.

import process from "node:process";
import { mkdir, open, rename, stat, writeFile } from "node:fs/promises";
import { exportGguf, type ExportType } from "../mod.ts";

export const CONFIG = {
  architectures: ["Gemma3ForCausalLM"],
  model_type: "gemma3_text",
  vocab_size: 262144,
  hidden_size: 640,
  intermediate_size: 2048,
  num_hidden_layers: 18,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 256,
  query_pre_attn_scalar: 256,
  rms_norm_eps: 1e-6,
  sliding_window: 512,
  layer_types: Array.from(
    { length: 18 },
    (_, i) => ((i + 1) % 6 === 0 ? "full_attention" : "sliding_attention"),
  ),
  max_position_embeddings: 32768,
  rope_theta: 1000000,
  rope_local_base_freq: 10000,
  rope_scaling: null,
  tie_word_embeddings: true,
  bos_token_id: 2,
  eos_token_id: [1, 106],
  pad_token_id: 0,
  hidden_activation: "gelu_pytorch_tanh",
};

/** Tensor names and shapes of the 270M model, in Hugging Face layout. */
function tensors(): [string, number[]][] {
  const c = CONFIG;
  const H = c.hidden_size, F = c.intermediate_size, d = c.head_dim;
  const list: [string, number[]][] = [["model.embed_tokens.weight", [c.vocab_size, H]]];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    list.push(
      [p + "input_layernorm.weight", [H]],
      [p + "self_attn.q_proj.weight", [c.num_attention_heads * d, H]],
      [p + "self_attn.k_proj.weight", [c.num_key_value_heads * d, H]],
      [p + "self_attn.v_proj.weight", [c.num_key_value_heads * d, H]],
      [p + "self_attn.o_proj.weight", [H, c.num_attention_heads * d]],
      [p + "self_attn.q_norm.weight", [d]],
      [p + "self_attn.k_norm.weight", [d]],
      [p + "post_attention_layernorm.weight", [H]],
      [p + "pre_feedforward_layernorm.weight", [H]],
      [p + "post_feedforward_layernorm.weight", [H]],
      [p + "mlp.gate_proj.weight", [F, H]],
      [p + "mlp.up_proj.weight", [F, H]],
      [p + "mlp.down_proj.weight", [H, F]],
    );
  }
  list.push(["model.norm.weight", [H]]);
  return list;
}

/** Writes the random checkpoint tensor by tensor (never the whole file in memory). */
export async function ensureCheckpoint(dir: string, format: string): Promise<void> {
  try {
    await stat(`${dir}/model.safetensors`);
    return;
  } catch { /* not cached yet */ }
  await mkdir(dir, { recursive: true });
  await writeFile(`${dir}/config.json`, JSON.stringify(CONFIG, null, 2));
  const bytesPer = format === "bf16" ? 2 : 4;
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of tensors()) {
    const n = shape.reduce((a, b) => a * b, 1) * bytesPer;
    header[name] = {
      dtype: format === "bf16" ? "BF16" : "F32",
      shape,
      data_offsets: [offset, offset + n],
    };
    offset += n;
  }
  let json = JSON.stringify(header);
  while (json.length % 8) json += " ";
  const tmp = `${dir}/model.safetensors.partial`;
  const f = await open(tmp, "w");
  const head = new Uint8Array(8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  head.set(new TextEncoder().encode(json), 8);
  await f.write(head);
  let seed = 12345;
  process.stderr.write(`writing a random ${format} 270M checkpoint to ${dir} (once)...\n`);
  for (const [, shape] of tensors()) {
    const n = shape.reduce((a, b) => a * b, 1);
    // Uniform in ±0.05 (std ≈ 0.03); norm weights near 0 so activations stay in range.
    const scale = shape.length === 1 ? 0.1 : 0.1;
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      values[i] = (seed / 4294967296 - 0.5) * scale;
    }
    let bytes: Uint8Array;
    if (format === "f32") bytes = new Uint8Array(values.buffer);
    else {
      const u32 = new Uint32Array(values.buffer);
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = u32[i] >>> 16;
      bytes = new Uint8Array(out.buffer);
    }
    await f.write(bytes);
  }
  await f.close();
  await rename(tmp, `${dir}/model.safetensors`);
}

/** Gemma's tokenizer.json as the tests fetch it (the benches do not fetch it themselves). */
const TESTS_TOKENIZER =
  new URL("../tests/.cache/gemma3-tokenizer/tokenizer.json", import.meta.url).pathname;

/** The random 270M as a GGUF of `format` ("q8_0", "q4_0", "q4_0+q4_0": weights+head) with the
 * tokenizer.json at `tokenizer` (default: the tests' copy), in bench/.cache/gguf/; written once. */
export async function ensureRandomGguf(
  format: string,
  tokenizer = TESTS_TOKENIZER,
): Promise<string> {
  const cache = new URL("./.cache/", import.meta.url).pathname;
  const path = `${cache}gguf/gemma3-270m-random-${format.replace("+", "-head-")}.gguf`;
  try {
    await stat(path);
    return path;
  } catch { /* not written yet */ }
  if (!(await stat(tokenizer).then(() => true, () => false))) {
    throw new Error(
      `the GGUF files need Gemma's tokenizer.json: run the tests once (deno task test) to fetch it into ${tokenizer}`,
    );
  }
  const bf16 = `${cache}gemma3-270m-random-bf16`;
  await ensureCheckpoint(bf16, "bf16");
  await mkdir(`${cache}gguf`, { recursive: true });
  process.stderr.write(`writing ${path} (once)...\n`);
  const [type, head] = format.split("+") as [ExportType, ExportType | undefined];
  await exportGguf(bf16, `${path}.partial`, { type, headType: head, tokenizer });
  await rename(`${path}.partial`, path);
  return path;
}
