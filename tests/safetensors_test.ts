// Broken safetensors files (engine/formats/safetensors.ts): each error names the file, the tensor
// where there is one, and the problem.

import { loadModel } from "../mod.ts";
import { failsWith } from "./support/helpers.ts";
import { tinyCopy, withHeader } from "./support/safetensors_writer.ts";

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
