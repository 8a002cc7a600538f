// Broken safetensors files (engine/formats/safetensors.ts): each error names the file, the tensor
// where there is one, and the problem.

import { ok, rejects } from "node:assert/strict";
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

Deno.test("hostile headers: Object's keys as dtypes, invalid UTF-8, long names, empty tensors", async () => {
  for (const dtype of ["toString", "constructor", "__proto__"]) {
    await failsWith(
      () =>
        withHeader((h) => {
          (h["model.norm.weight"] as { dtype: string }).dtype = dtype;
        }).then(loadModel),
      /model\.norm\.weight/,
      new RegExp(`dtype "${dtype}" is unknown \\(supported: F32, BF16, F16\\)`),
    );
  }
  // Invalid UTF-8 inside the header's JSON text.
  const dir = await tinyCopy();
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  bytes.set([0xff, 0xfe], 12);
  await Deno.writeFile(`${dir}/model.safetensors`, bytes);
  await failsWith(
    () => loadModel(dir),
    /model\.safetensors/,
    /header \(\d+ bytes from byte 8\) is not valid UTF-8/,
  );
  // A 14,000-character name with control characters: escaped and cut in the message.
  const longName = "\u0001\u001b[31m".repeat(2000) + "x".repeat(2000);
  await rejects(
    () =>
      withHeader((h) => {
        h[longName] = { ...(h["model.norm.weight"] as object), dtype: "Q9" };
      }).then(loadModel),
    (e: Error) => {
      ok(e.message.length < 600, `${e.message.length} characters`);
      ok(![...e.message].some((c) => c.charCodeAt(0) < 0x20), "no raw control characters");
      ok(/… \(14000 characters\)/.test(e.message), e.message);
      return true;
    },
  );
  // Millions of tiny values (4M empty arrays in 8 MB): refused before JSON.parse, which took 8 s
  // and most of a 1 GiB heap on 64 MB of them. A string inside one ("[,[,") is not counted.
  const long = await loadModel(
    await withHeader((h) => {
      h.__metadata__ = { note: '[,\\"'.repeat(1_000_000) };
    }),
  );
  await long.dispose();
  await failsWith(
    () =>
      withHeader((h) => {
        h.__metadata__ = { a: Array.from({ length: 2_000_000 }, () => []) as unknown as string };
      }).then(loadModel),
    /model\.safetensors/,
    /header: holds more than 1048576 JSON values \(the one past the limit is at position \d+\)/,
  );
  // Empty tensors overlap nothing: two at one offset are not reported as overlapping (the
  // extra names are then refused as not part of the model, which is the real problem).
  await failsWith(
    () =>
      withHeader((h) => {
        const at = (h["model.norm.weight"] as { data_offsets: number[] }).data_offsets[0];
        h["extra.a"] = { dtype: "F32", shape: [0], data_offsets: [at, at] };
        h["extra.b"] = { dtype: "F32", shape: [0, 4], data_offsets: [at, at] };
      }).then(loadModel),
    /unexpected tensors? .*extra\.a/,
  );
});
