// Loading a model from an http(s) folder URL, served from this machine's loopback by the test.

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { FIXTURES, maxAbsDiff } from "./support/helpers.ts";
import { tempDir } from "./support/temp.ts";

const dir = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${dir}/golden.json`));

/** Serves `root` on 127.0.0.1, with Range support when `ranges` is set; counts requests. */
function serve(root: string, ranges = true) {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    requests.push(
      `${req.method} ${path}${req.headers.get("range") ? " " + req.headers.get("range") : ""}`,
    );
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await Deno.readFile(root + path);
    } catch {
      return new Response("not found", { status: 404 });
    }
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-$/);
    if (ranges && range) {
      const start = Number(range[1]);
      return new Response(req.method === "HEAD" ? null : bytes.slice(start), {
        status: 206,
        headers: {
          "content-length": String(bytes.length - start),
          "content-range": `bytes ${start}-${bytes.length - 1}/${bytes.length}`,
        },
      });
    }
    return new Response(req.method === "HEAD" ? null : bytes, {
      headers: { "content-length": String(bytes.length) },
    });
  });
  const url = `http://127.0.0.1:${server.addr.port}/`;
  return { url, requests, close: () => server.shutdown() };
}

Deno.test("a folder URL loads and meets the golden, streaming the weights in one request", async () => {
  const srv = serve(dir);
  try {
    const model = await loadModel(srv.url);
    const r = golden.results[2];
    const s = model.createSession({ contextLength: 64 });
    const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
    ok(d <= 1e-4, `logits differ by ${d}`);
    await model.dispose();
    deepStrictEqual(
      srv.requests.filter((q) => q.startsWith("GET /model.safetensors")).length,
      1,
      srv.requests.join("\n"),
    );
  } finally {
    await srv.close();
  }
});

Deno.test("a URL without a model says what is missing", async () => {
  const empty = await tempDir();
  const srv = serve(empty);
  try {
    await rejects(() => loadModel(srv.url), /no config\.json/);
    await Deno.copyFile(`${dir}/config.json`, `${empty}/config.json`);
    await rejects(() => loadModel(srv.url), /no model\.safetensors/);
  } finally {
    await srv.close();
  }
});

Deno.test("a URL whose weights are truncated is rejected with the URL named", async () => {
  const cut = await tempDir();
  await Deno.copyFile(`${dir}/config.json`, `${cut}/config.json`);
  const bytes = await Deno.readFile(`${dir}/model.safetensors`);
  await Deno.writeFile(`${cut}/model.safetensors`, bytes.subarray(0, bytes.length - 64));
  const srv = serve(cut);
  try {
    await rejects(
      () => loadModel(srv.url),
      (e: Error) => /model\.safetensors/.test(e.message) && /truncated/.test(e.message),
    );
  } finally {
    await srv.close();
  }
});

Deno.test("loadTokenizer takes the URL of a tokenizer.json or of its folder", async () => {
  const { gemmaTokenizerDir } = await import("./support/gemma_tokenizer.ts");
  const { loadTokenizer } = await import("../mod.ts");
  const srv = serve(await gemmaTokenizerDir());
  try {
    for (const url of [`${srv.url}tokenizer.json`, srv.url]) {
      const tok = await loadTokenizer(url);
      deepStrictEqual(tok.encode("Hello world"), [2, 9259, 1902]);
      ok(tok.chatTemplate.isGemma3, "the folder's tokenizer_config.json template was found");
    }
  } finally {
    await srv.close();
  }
});

Deno.test("a .gguf file loads from a URL too", async () => {
  const srv = serve(dir);
  try {
    const model = await loadModel(`${srv.url}model.gguf`);
    const r = golden.results[1];
    const d = maxAbsDiff(
      await model.createSession({ contextLength: 32 }).eval(r.prompt),
      r.last_position_logits,
    );
    ok(d <= 1e-4, `logits differ by ${d}`);
    await model.dispose();
    deepStrictEqual(
      srv.requests.filter((q) => q.startsWith("GET /model.gguf")).length,
      1,
      srv.requests.join("\n"),
    );
  } finally {
    await srv.close();
  }
});
