// Configurations other than tiny-a's, each a random-weight checkpoint written by the test and
// checked against the float64 reference (tests/support/reference.ts, itself validated on tiny-a).
// The bar is tiny-a's: within 1e-4 of float64, which is ~10x the f32 rounding noise seen there.
// Configs the engine cannot run are refused by engine/gemma3/config.ts with the key named (last).

import { throws } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { failsWith, maxAbsDiff, rng } from "./support/helpers.ts";
import { referenceLogits } from "./support/reference.ts";
import {
  randomWeights,
  safetensorsBytes,
  smallConfig,
  storedValues,
  type TensorData,
  writeCheckpoint,
} from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";

const TOL = 1e-4;

function promptFor(vocab: number, n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

/** Loads `dir`, evaluates `ids` in two chunks with all logits, compares every row. */
async function compareWithReference(
  dir: string,
  config: Record<string, unknown>,
  tensors: Record<string, TensorData>,
  ids: number[],
) {
  const exact: Record<string, Float32Array> = {};
  for (const [n, t] of Object.entries(tensors)) exact[n] = storedValues(t);
  const textConfig = (config.text_config ?? config) as Record<string, unknown>;
  const want = referenceLogits(textConfig, exact, ids);
  const model = await loadModel(dir, { maxChunk: 8 });
  try {
    const s = model.createSession({ contextLength: ids.length + 4 });
    const split = Math.floor(ids.length / 3);
    const V = model.config.vocabSize;
    const got = new Float32Array(ids.length * V);
    got.set(await s.eval(ids.slice(0, split), { logits: "all" }));
    got.set(await s.eval(ids.slice(split), { logits: "all" }), split * V);
    for (let t = 0; t < ids.length; t++) {
      const d = maxAbsDiff(got.subarray(t * V, (t + 1) * V), want[t]);
      if (!(d <= TOL)) throw new Error(`position ${t}: logits differ from float64 by ${d}`);
    }
  } finally {
    await model.dispose();
  }
}

const cases: [string, Record<string, unknown>, TensorData["dtype"]][] = [
  ["4 query / 2 KV heads, query_pre_attn_scalar 24 != head_dim 16, hidden 48", {}, "BF16"],
  ["linear rope_scaling (factor 8) on full layers", {
    rope_scaling: { rope_type: "linear", factor: 8 },
  }, "BF16"],
  ["f32 weights, untied lm_head", { tie_word_embeddings: false }, "F32"],
  ["f16 weights (widened to f32 on load)", {}, "F16"],
  ["multi-head (4/4), head_dim 10, hidden 30, odd widths everywhere", {
    num_key_value_heads: 4,
    head_dim: 10,
    hidden_size: 30,
    intermediate_size: 37,
    query_pre_attn_scalar: 10,
  }, "BF16"],
  ["8 query heads per KV head, sliding_window_pattern instead of layer_types", {
    num_attention_heads: 8,
    num_key_value_heads: 1,
    layer_types: undefined,
    sliding_window_pattern: 2,
    num_hidden_layers: 4,
  }, "BF16"],
  ["transformers 5 rope_parameters", {
    rope_scaling: undefined,
    rope_theta: undefined,
    rope_local_base_freq: undefined,
    rope_parameters: {
      full_attention: { rope_type: "linear", factor: 4, rope_theta: 500000 },
      sliding_attention: { rope_type: "default", rope_theta: 20000 },
    },
  }, "BF16"],
];

for (const [name, overrides, dtype] of cases) {
  Deno.test(`config: ${name}`, async () => {
    const config = smallConfig(overrides);
    // The reference reads the classic keys; translate rope_parameters for it.
    const refConfig = { ...config };
    if (overrides.rope_parameters) {
      Object.assign(refConfig, {
        rope_theta: 500000,
        rope_local_base_freq: 20000,
        rope_scaling: { rope_type: "linear", factor: 4 },
      });
    }
    const tensors = randomWeights(config, name.length, dtype);
    const dir = await writeCheckpoint(config, tensors);
    await compareWithReference(
      dir,
      refConfig,
      tensors,
      promptFor(config.vocab_size as number, 23, name.length),
    );
    await Deno.remove(dir, { recursive: true });
  });
}

Deno.test("config: multimodal gemma3 wrapper, language_model. prefixes, vision tensors ignored", async () => {
  const text = smallConfig();
  delete text.architectures;
  for (const style of ["language_model.", "model.language_model."]) {
    const config = {
      model_type: "gemma3",
      architectures: ["Gemma3ForConditionalGeneration"],
      text_config: text,
      eos_token_id: [1, 106],
    };
    const tensors = randomWeights(text, 3);
    const renamed: Record<string, TensorData> = {};
    for (const [n, t] of Object.entries(tensors)) {
      renamed[
        style === "language_model."
          ? "language_model." + n
          : n.replace(/^model\./, "model.language_model.")
      ] = t;
    }
    const vision = { dtype: "BF16" as const, shape: [4, 4], values: new Float32Array(16) };
    renamed[
      style === "language_model."
        ? "vision_tower.vision_model.embeddings.patch_embedding.weight"
        : "model.vision_tower.x.weight"
    ] = vision;
    renamed[
      style === "language_model."
        ? "multi_modal_projector.mm_input_projection_weight"
        : "model.multi_modal_projector.y.weight"
    ] = vision;
    const dir = await writeCheckpoint(config, renamed);
    const model = await loadModel(dir);
    if (model.config.eosTokenIds.join() !== "1,106") throw new Error("top-level eos ids not used");
    await model.dispose();
    await compareWithReference(dir, text, tensors, promptFor(96, 9, 4));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: sharded checkpoint with model.safetensors.index.json", async () => {
  const config = smallConfig();
  const tensors = randomWeights(config, 11);
  const names = Object.keys(tensors);
  const half = Math.floor(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const dir = await tempDir();
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await Deno.writeFile(
      `${dir}/${file}`,
      safetensorsBytes(Object.fromEntries(shard.map((n) => [n, tensors[n]]))),
    );
    for (const n of shard) weightMap[n] = file;
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  await compareWithReference(dir, config, tensors, promptFor(96, 12, 5));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("unsupported or broken configs", async () => {
  const tensors = randomWeights(smallConfig(), 1);
  const cases: [Record<string, unknown>, RegExp][] = [
    [smallConfig({ model_type: "llama" }), /model_type "llama" is not supported.*gemma3_text/],
    [smallConfig({ num_attention_heads: 3 }), /not a multiple of num_key_value_heads/],
    [smallConfig({ rope_scaling: { rope_type: "yarn", factor: 2 } }), /rope_scaling type "yarn"/],
    [smallConfig({ final_logit_softcapping: 30 }), /final_logit_softcapping/],
    [smallConfig({ layer_types: ["sliding_attention"] }), /layer_types must list 4/],
    [smallConfig({ hidden_activation: "relu" }), /hidden_activation "relu"/],
    // A count that would size per-layer lists (no layer_types to bound it): refused at once.
    [
      smallConfig({ num_hidden_layers: 2 ** 31, layer_types: undefined }),
      /num_hidden_layers 2147483648 is implausible \(at most 1024\)/,
    ],
    [
      smallConfig({ num_hidden_layers: 1e9, layer_types: undefined }),
      /num_hidden_layers 1000000000/,
    ],
  ];
  for (const [config, pattern] of cases) {
    const dir = await writeCheckpoint(config, tensors);
    await failsWith(() => loadModel(dir), /config\.json/, pattern);
  }
  const dir = await writeCheckpoint(smallConfig(), tensors);
  await Deno.writeTextFile(`${dir}/config.json`, "{ not json");
  await failsWith(() => loadModel(dir), /config\.json/, /not valid JSON/);
  // Millions of tiny values are refused before JSON.parse (64 MB of them took 8 s and 1.9 GB).
  // `{"x":[` holds 3 values, each "[]," two more: the 1,048,577th is the comma of unit 524,286,
  // at 6 + 3 × 524,286 + 2.
  await Deno.writeTextFile(`${dir}/config.json`, `{"x":[${"[],".repeat(2_000_000)}[]]}`);
  await failsWith(
    () => loadModel(dir),
    /config\.json: holds more than 1048576 JSON values \(the one past the limit is at position 1572866\)/,
  );
});

Deno.test("a GGUF whose block_count is implausible is refused before anything is sized by it", async () => {
  const { configFromGguf } = await import("../engine/gemma3/config.ts");
  const meta = (blocks: number) =>
    new Map<string, unknown>([
      ["general.architecture", "gemma3"],
      ["gemma3.embedding_length", 64],
      ["gemma3.block_count", blocks],
      ["gemma3.attention.head_count", 4],
    ]);
  throws(
    () => configFromGguf(meta(18), 0, true, "x.gguf"),
    /x\.gguf: token_embd\.weight has 0 rows: the model would have no vocabulary/,
  );
  const noArchitecture = meta(18);
  noArchitecture.delete("general.architecture");
  throws(
    () => configFromGguf(noArchitecture, 256, true, "x.gguf"),
    /x\.gguf: metadata general\.architecture is missing/,
  );
  for (const blocks of [2 ** 31, 1e9, 1025]) {
    throws(
      () => configFromGguf(meta(blocks), 256, true, "x.gguf"),
      (e: Error) =>
        /x\.gguf: metadata gemma3\.block_count \d+ is implausible \(at most 1024\)/.test(e.message),
    );
  }
});
