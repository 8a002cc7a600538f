// Imported from a URL, as users of `import ... from "<url>/mod.ts"` and edge functions do: the
// repository served over local HTTP as text/plain (what GitHub's raw host sends), run by a Deno
// with an empty module cache, with no build step and no file access to the checkout.

import { deepStrictEqual } from "node:assert/strict";
import { FIXTURES } from "./support/helpers.ts";
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
