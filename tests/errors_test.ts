// Bad input gets a clear error that names the problem, and a session stays usable after it.

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { FIXTURES, maxAbsDiff } from "./support/helpers.ts";
import {
  randomWeights,
  safetensorsBytes,
  smallConfig,
  writeCheckpoint,
} from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";

const tinyA = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${tinyA}/golden.json`));
const model = await loadModel(tinyA);

/** Asserts that `fn` rejects with a message matching every pattern. */
async function failsWith(fn: () => Promise<unknown>, ...patterns: RegExp[]) {
  await rejects(fn, (e: Error) => {
    for (const p of patterns) {
      ok(p.test(e.message), `message ${JSON.stringify(e.message)} does not match ${p}`);
    }
    return true;
  });
}

/** After a rejected call, the session must still compute the golden logits. */
async function stillUsable(s: ReturnType<typeof model.createSession>) {
  const r = golden.results[1];
  s.reset();
  const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
  ok(d <= 1e-4, `after the error, logits differ by ${d}`);
}

Deno.test("empty token list", async () => {
  const s = model.createSession({ contextLength: 32 });
  await failsWith(() => s.eval([]), /empty/);
  deepStrictEqual(s.position, 0);
  await stillUsable(s);
});

Deno.test("token id outside the vocabulary is named", async () => {
  const s = model.createSession({ contextLength: 32 });
  await s.eval([2, 5]);
  await failsWith(() => s.eval([3, 512, 4]), /token id 512/, /index 1/, /0\.\.511/);
  await failsWith(() => s.eval([-1]), /token id -1/);
  await failsWith(() => s.eval([1.5]), /token id 1.5/);
  deepStrictEqual(s.position, 2, "nothing was appended");
  await stillUsable(s);
});

Deno.test("a prompt beyond the context length", async () => {
  const s = model.createSession({ contextLength: 10 });
  await s.eval([2, 3, 4, 5]);
  await failsWith(() => s.eval(new Array(7).fill(9)), /context length 10/, /position 4/);
  deepStrictEqual(s.position, 4);
  await stillUsable(s);
});

Deno.test("generation stops at a full context instead of failing", async () => {
  const s = model.createSession({ contextLength: 12 });
  const ids: number[] = [];
  for await (const id of s.generate([2, 17, 42], { stopTokens: [] })) ids.push(id);
  deepStrictEqual(ids.length, 9);
  deepStrictEqual(s.position, 12);
  await failsWith(() => s.eval([5]), /context length 12/);
});

Deno.test("bad options are named", async () => {
  const s = model.createSession({ contextLength: 16 });
  await failsWith(() => s.generate([2], { temperature: -1 }).next(), /temperature/);
  await failsWith(() => s.generate([2], { topP: 0 }).next(), /topP/);
  await failsWith(() => s.generate([2], { maxTokens: 1.5 }).next(), /maxTokens/);
  await failsWith(() => s.eval([2], { logits: "some" as "all" }), /logits/);
  await failsWith(
    () => Promise.resolve().then(() => model.createSession({ contextLength: 0 })),
    /contextLength/,
  );
  await failsWith(
    () => Promise.resolve().then(() => model.createSession({ contextLength: 1e9 })),
    /contextLength.*32768/,
  );
  await stillUsable(s);
});

Deno.test("a disposed session says so", async () => {
  const s = model.createSession({ contextLength: 16 });
  s.dispose();
  await failsWith(() => s.eval([2]), /disposed/);
});

// --- Broken checkpoints: each error names the file and the problem. ---

async function tinyCopy(): Promise<string> {
  const dir = await tempDir("gemma3-bad-");
  await Deno.copyFile(`${tinyA}/config.json`, `${dir}/config.json`);
  await Deno.copyFile(`${tinyA}/model.safetensors`, `${dir}/model.safetensors`);
  return dir;
}

Deno.test("truncated safetensors file", async () => {
  const dir = await tinyCopy();
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes.subarray(0, bytes.length - 1000));
  await failsWith(() => loadModel(dir), /model\.safetensors/, /past the end/, /truncated/);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes.subarray(0, 5000));
  await failsWith(() => loadModel(dir), /model\.safetensors/, /truncated/);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes.subarray(0, 4));
  await failsWith(() => loadModel(dir), /model\.safetensors/, /too short/);
});

Deno.test("corrupt safetensors headers", async () => {
  const dir = await tinyCopy();
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  const garbage = bytes.slice();
  garbage.fill(0x7b, 8, 40); // "{{{{..." is not JSON
  await Deno.writeFile(`${dir}/model.safetensors`, garbage);
  await failsWith(() => loadModel(dir), /model\.safetensors/, /not valid JSON/);
  const huge = bytes.slice();
  new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true);
  await Deno.writeFile(`${dir}/model.safetensors`, huge);
  await failsWith(() => loadModel(dir), /model\.safetensors/, /header length/);
});

async function withHeader(
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

Deno.test("overlapping tensors, bad dtype, bad offsets", async () => {
  await failsWith(
    () =>
      withHeader((h) => {
        const e = h["model.norm.weight"] as { data_offsets: number[] };
        const f = h["model.embed_tokens.weight"] as { data_offsets: number[] };
        e.data_offsets = [
          f.data_offsets[0],
          f.data_offsets[0] + (e.data_offsets[1] - e.data_offsets[0]),
        ];
      }).then(loadModel),
    /overlap/,
    /model\.(norm|embed_tokens)\.weight/,
  );
  await failsWith(
    () =>
      withHeader((h) => {
        (h["model.norm.weight"] as { dtype: string }).dtype = "I8";
      }).then(loadModel),
    /model\.norm\.weight/,
    /dtype "I8" is not supported/,
  );
  await failsWith(
    () =>
      withHeader((h) => {
        (h["model.norm.weight"] as { data_offsets: number[] }).data_offsets[1] += 2;
      }).then(loadModel),
    /model\.norm\.weight/,
    /needs/,
  );
});

Deno.test("missing, extra and mis-shaped tensors are named", async () => {
  await failsWith(() =>
    withHeader((h) => {
      delete h["model.layers.2.self_attn.k_norm.weight"];
    }).then(loadModel), /missing tensor model\.layers\.2\.self_attn\.k_norm\.weight/);
  const config = smallConfig();
  const tensors = randomWeights(config, 1);
  tensors["model.layers.9.mlp.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"];
  let dir = await writeCheckpoint(config, tensors);
  await failsWith(() => loadModel(dir), /unexpected tensor model\.layers\.9\.mlp\.up_proj\.weight/);
  const tied = randomWeights(config, 1);
  tied["lm_head.weight"] = tied["model.embed_tokens.weight"];
  dir = await writeCheckpoint(config, tied);
  await failsWith(() => loadModel(dir), /lm_head\.weight/, /tie_word_embeddings/);
  const bad = randomWeights(config, 1);
  bad["model.layers.1.self_attn.q_proj.weight"] = bad["model.layers.1.self_attn.o_proj.weight"];
  dir = await writeCheckpoint(config, bad);
  await failsWith(
    () => loadModel(dir),
    /q_proj\.weight has shape \[48,64\], the config needs \[64,48\]/,
  );
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
  ];
  for (const [config, pattern] of cases) {
    const dir = await writeCheckpoint(config, tensors);
    await failsWith(() => loadModel(dir), /config\.json/, pattern);
  }
  const dir = await writeCheckpoint(smallConfig(), tensors);
  await Deno.writeTextFile(`${dir}/config.json`, "{ not json");
  await failsWith(() => loadModel(dir), /config\.json/, /not valid JSON/);
});

Deno.test("missing folders and files", async () => {
  await failsWith(() => loadModel("/no/such/folder"), /\/no\/such\/folder/, /not a folder/);
  const dir = await tempDir();
  await failsWith(() => loadModel(dir), /no config\.json/);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(smallConfig()));
  await failsWith(() => loadModel(dir), /no model\.safetensors/);
});
