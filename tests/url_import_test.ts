// Imported from a URL, as users of `import ... from "<url>/mod.ts"` and edge functions do: the
// repository served over local HTTP as text/plain (what GitHub's raw host sends), run by a Deno
// with an empty module cache, with no build step and no file access to the checkout.

import { deepStrictEqual, ok } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { FIXTURES } from "./support/helpers.ts";
import { random270mGguf } from "./support/random_270m.ts";
import { tempDir } from "./support/temp.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const golden = JSON.parse(await Deno.readTextFile(`${FIXTURES}tiny-a/golden.json`));

/** Serves the checkout as text/plain; returns its base URL and a stop function. */
function serveRepository() {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.includes("..")) return new Response("no", { status: 400 });
    try {
      const body = await Deno.readFile(ROOT + path.slice(1));
      return new Response(body, { headers: { "content-type": "text/plain; charset=utf-8" } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return { base: `http://127.0.0.1:${server.addr.port}/`, stop: () => server.shutdown() };
}

async function deno(args: string[], denoDir: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: denoDir,
    env: { DENO_DIR: `${denoDir}/cache`, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("URL import: cli.ts and mod.ts run from http:// (text/plain), model by URL too", async () => {
  const { base, stop } = serveRepository();
  const dir = await tempDir();
  try {
    const r = golden.results[1];
    const allow = ["--allow-net=127.0.0.1", "--allow-import=127.0.0.1"];
    // The CLI, straight from the URL.
    const cli = await deno(
      [
        "run",
        ...allow,
        "--allow-env",
        `${base}cli.ts`,
        "generate",
        "--model",
        `${base}tests/fixtures/tiny-a`,
        "--tokens",
        r.prompt.join(","),
        "-n",
        "24",
        "--ignore-eos",
        "-q",
      ],
      dir,
    );
    deepStrictEqual(cli.code, 0, cli.stderr);
    deepStrictEqual(cli.stdout.trim().split(" ").map(Number), r.greedy_continuation_kv_cache);
    // A script of the user's importing mod.ts by URL.
    await Deno.writeTextFile(
      `${dir}/script.ts`,
      `import { loadModel } from "${base}mod.ts";
const model = await loadModel("${base}tests/fixtures/tiny-a", { threads: 2 });
const ids = [];
for await (const id of model.createSession().generate(${
        JSON.stringify(r.prompt)
      }, { maxTokens: 24, stopTokens: [] })) ids.push(id);
console.log(JSON.stringify({ ids, threads: model.threads }));
await model.dispose();
`,
    );
    const script = await deno(["run", ...allow, "--allow-env", `${dir}/script.ts`], dir);
    deepStrictEqual(script.code, 0, script.stderr);
    deepStrictEqual(JSON.parse(script.stdout), { ids: r.greedy_continuation_kv_cache, threads: 2 });
  } finally {
    await stop();
  }
});

Deno.test("a GGUF by URL is fetched once: header and weights, no second read of the header", async () => {
  const path = await random270mGguf();
  const size = (await Deno.stat(path)).size;
  let served = 0;
  // Serves the file with Range support, counting the bytes that actually leave (a reader that
  // stops early cancels the rest).
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const range = /bytes=(\d+)-(\d*)/.exec(req.headers.get("range") ?? "");
    const start = range ? Number(range[1]) : 0;
    const end = range && range[2] ? Number(range[2]) + 1 : size;
    const headers: Record<string, string> = {
      "content-length": String(end - start),
      "accept-ranges": "bytes",
    };
    if (range) headers["content-range"] = `bytes ${start}-${end - 1}/${size}`;
    if (req.method === "HEAD") return new Response(null, { headers });
    const file = await Deno.open(path);
    await file.seek(start, Deno.SeekMode.Start);
    let at = start;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (at >= end) {
          file.close();
          return controller.close();
        }
        const chunk = new Uint8Array(Math.min(1 << 16, end - at));
        const n = (await file.read(chunk)) ?? 0;
        at += n;
        served += n;
        controller.enqueue(chunk.subarray(0, n));
      },
      cancel() {
        file.close();
      },
    }, { highWaterMark: 0 });
    return new Response(body, { status: range ? 206 : 200, headers });
  });
  try {
    const model = await loadModel(`http://127.0.0.1:${server.addr.port}/model.gguf`, {
      threads: 1,
    });
    ok(model.hasTokenizer);
    deepStrictEqual(model.tokenizer.encode("Hello world"), [2, 9259, 1902]);
    await model.dispose();
    console.log(`served ${served} bytes for a ${size}-byte file`);
    // Every byte once: the header (about 6 MB of vocabulary) is not read a second time for the
    // tokenizer, nor the start of the weights again after the header's read-ahead. A stream's
    // last chunk may run a little past what was needed: 1 MiB of slack.
    ok(served <= size + (1 << 20), `served ${served} bytes for a ${size}-byte file`);
  } finally {
    await server.shutdown();
  }
});
