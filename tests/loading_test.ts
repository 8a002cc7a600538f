// Loading a checkpoint (engine/loading/): the tensors a config needs, each with its shape, and the
// files a model folder needs; each error names what is missing, extra or wrong.

import { loadModel } from "../mod.ts";
import { failsWith } from "./support/helpers.ts";
import {
  randomWeights,
  smallConfig,
  withHeader,
  writeCheckpoint,
} from "./support/safetensors_writer.ts";
import { tempDir } from "./support/temp.ts";

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
    /q_proj\.weight has shape \[48,64\], but .*config\.json \(.*hidden_size 48.*num_attention_heads 4.*head_dim 16\) needs \[64,48\]/,
  );
});

Deno.test("missing folders and files", async () => {
  await failsWith(() => loadModel("/no/such/folder"), /\/no\/such\/folder/, /not a folder/);
  const dir = await tempDir();
  await failsWith(() => loadModel(dir), /no config\.json/);
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(smallConfig()));
  await failsWith(() => loadModel(dir), /no model\.safetensors/);
});

Deno.test("a model folder URL that cannot be reached says so (not 'no config.json')", async () => {
  // A port nothing listens on: the connection is refused, as offline.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await failsWith(
    () => loadModel(`http://127.0.0.1:${port}/some/model/`),
    /cannot reach http:\/\/127\.0\.0\.1:\d+\/some\/model\/config\.json/,
    /offline\?/,
  );
});

Deno.test({
  name:
    "loading a GGUF with only read access, in a terminal, asks for no permission (the tokenizer cache is skipped)",
  ignore: !(await Deno.stat("/usr/bin/script").then(() => true, () => false)),
  fn: async () => {
    const root = new URL("../", import.meta.url).pathname;
    const dir = await tempDir();
    await Deno.writeTextFile(
      `${dir}/load.ts`,
      `import { loadModel } from "${root}mod.ts";
const model = await loadModel("${root}tests/fixtures/tiny-a/model.gguf", { threads: 1 });
console.log("loaded", model.hasTokenizer);
await model.dispose();
`,
    );
    // `script` gives Deno a terminal, where a missing permission becomes a question that waits
    // for an answer (here: never, so a prompt shows as a timeout and "Deno requests" in the output).
    const command = `${Deno.execPath()} run --allow-read=${root},${dir} ${dir}/load.ts`;
    const child = new Deno.Command("script", {
      args: ["-qec", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", HOME: dir },
    }).spawn();
    const timer = setTimeout(() => child.kill(), 30_000);
    const out = await child.output();
    clearTimeout(timer);
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    if (!/loaded true/.test(text) || /requests/.test(text)) {
      throw new Error(`expected a quiet load, got: ${text.slice(0, 500)}`);
    }
  },
});
