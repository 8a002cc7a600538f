// Loading models by name against a local server that imitates the Hugging Face Hub endpoints
// the engine uses (the revision API with ?blobs=true, and /resolve/ with Range requests), serving
// the tiny-a fixture. Each test gets a fresh Hugging Face cache folder.

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { createHash } from "node:crypto";
import { loadModel, type LoadProgress } from "../mod.ts";
import { FIXTURES, maxAbsDiff } from "./support/helpers.ts";
import { setEnvForModule, tempDir } from "./support/temp.ts";

const tinyA = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${tinyA}/golden.json`));
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const files: Record<string, Uint8Array<ArrayBuffer>> = {
  "config.json": await Deno.readFile(`${tinyA}/config.json`),
  "model.safetensors": await Deno.readFile(`${tinyA}/model.safetensors`),
  "README.md": new TextEncoder().encode("not needed, never fetched"),
};
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const gitSha1 = (b: Uint8Array) =>
  createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");

interface Faults {
  /** Cut the first transfer of this file after this many bytes. */
  cutAt?: Record<string, number>;
  /** Flip a byte in the first transfer of this file. */
  corrupt?: Record<string, boolean>;
}

function fakeHub(faults: Faults = {}) {
  const log: string[] = [];
  const served = new Map<string, number>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    log.push(
      `${url.pathname}${req.headers.get("range") ? ` ${req.headers.get("range")}` : ""}${
        req.headers.get("authorization") ? " auth" : ""
      }`,
    );
    if (url.pathname.startsWith("/api/models/test/gated/")) {
      return new Response("gated", { status: 401 });
    }
    const api = url.pathname.match(/^\/api\/models\/test\/tiny-a\/revision\/([^/]+)$/);
    if (api) {
      const siblings = Object.entries(files).map(([name, b]) =>
        name.endsWith(".safetensors")
          ? {
            rfilename: name,
            size: b.length,
            blobId: gitSha1(b),
            lfs: { sha256: sha256(b), size: b.length, pointerSize: 134 },
          }
          : { rfilename: name, size: b.length, blobId: gitSha1(b) }
      );
      return Response.json({ id: "test/tiny-a", sha: COMMIT, siblings });
    }
    const res = url.pathname.match(/^\/test\/tiny-a\/resolve\/([^/]+)\/(.+)$/);
    if (!res || !files[res[2]]) return new Response("not found", { status: 404 });
    const name = res[2];
    const n = (served.get(name) ?? 0) + 1;
    served.set(name, n);
    let body: Uint8Array<ArrayBuffer> = files[name];
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-$/);
    const start = range ? Number(range[1]) : 0;
    body = body.slice(start);
    if (n === 1 && faults.corrupt?.[name]) body[body.length >> 1] ^= 0xff;
    const headers = {
      "content-length": String(body.length),
      ...(range
        ? { "content-range": `bytes ${start}-${files[name].length - 1}/${files[name].length}` }
        : {}),
    };
    const cut = n === 1 ? faults.cutAt?.[name] : undefined;
    if (cut !== undefined) {
      // Send the first `cut` bytes, then drop the connection once they are on their way.
      let sent = false;
      const stream = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (!sent) {
            sent = true;
            c.enqueue(body.slice(0, cut));
            return;
          }
          await new Promise((r) => setTimeout(r, 50));
          c.error(new Error("connection dropped"));
        },
      });
      return new Response(stream, { status: range ? 206 : 200, headers });
    }
    return new Response(body, { status: range ? 206 : 200, headers });
  });
  return { endpoint: `http://127.0.0.1:${server.addr.port}`, log, close: () => server.shutdown() };
}

async function freshCaches(): Promise<string> {
  const hub = await tempDir("hf-hub-");
  setEnvForModule("HF_HUB_CACHE", hub);
  setEnvForModule("GEMMA3_WASM_CACHE", await tempDir("g3w-"));
  setEnvForModule("HF_HUB_OFFLINE", undefined);
  return hub;
}

async function checkGolden(source: string, onProgress?: (p: LoadProgress) => void) {
  const model = await loadModel(source, { onProgress });
  const s = model.createSession({ contextLength: 64 });
  const r = golden.results[1];
  const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
  ok(d <= 1e-4, `logits differ by ${d}`);
  await model.dispose();
}

const repoDir = (hub: string) => `${hub}/models--test--tiny-a`;

Deno.test("download into the Hugging Face cache layout, then load from it without downloading", async () => {
  const hub = await freshCaches();
  const srv = fakeHub();
  setEnvForModule("HF_ENDPOINT", srv.endpoint);
  try {
    const progress: LoadProgress[] = [];
    await checkGolden("test/tiny-a", (p) => progress.push(p));
    const dir = repoDir(hub);
    deepStrictEqual((await Deno.readTextFile(`${dir}/refs/main`)).trim(), COMMIT);
    const weights = sha256(files["model.safetensors"]);
    deepStrictEqual(
      await Deno.readLink(`${dir}/snapshots/${COMMIT}/model.safetensors`),
      `../../blobs/${weights}`,
    );
    deepStrictEqual(
      await Deno.readLink(`${dir}/snapshots/${COMMIT}/config.json`),
      `../../blobs/${gitSha1(files["config.json"])}`,
    );
    ok(!srv.log.some((l) => l.includes("README.md")), "fetched a file the model does not need");
    const dl = progress.filter((p) => p.phase === "download" && p.file === "model.safetensors");
    ok(
      dl.length > 0 && dl.at(-1)!.loadedBytes === files["model.safetensors"].length,
      "download progress reached the end",
    );
    ok(progress.some((p) => p.phase === "load"), "load progress reported");

    srv.log.length = 0;
    await checkGolden("test/tiny-a");
    deepStrictEqual(
      srv.log.filter((l) => l.includes("/resolve/")),
      [],
      "a complete file was downloaded again",
    );
  } finally {
    await srv.close();
  }
});

Deno.test("HF_HUB_OFFLINE=1 loads from the cache without the network, and says when it cannot", async () => {
  await freshCaches();
  const srv = fakeHub();
  setEnvForModule("HF_ENDPOINT", srv.endpoint);
  await checkGolden("test/tiny-a");
  await srv.close();
  setEnvForModule("HF_HUB_OFFLINE", "1");
  try {
    await checkGolden("test/tiny-a");
    await rejects(
      () => loadModel("test/other"),
      /test\/other@main is not in the local cache.*HF_HUB_OFFLINE/,
    );
  } finally {
    setEnvForModule("HF_HUB_OFFLINE", undefined);
  }
});

Deno.test("an interrupted transfer is resumed with a Range request", async () => {
  await freshCaches();
  const srv = fakeHub({ cutAt: { "model.safetensors": 250_000 } });
  setEnvForModule("HF_ENDPOINT", srv.endpoint);
  try {
    await checkGolden("test/tiny-a");
    ok(srv.log.some((l) => /model\.safetensors bytes=250000-/.test(l)), srv.log.join("\n"));
  } finally {
    await srv.close();
  }
});

Deno.test("a corrupt transfer is rejected and fetched again; a corrupted blob on disk too", async () => {
  const hub = await freshCaches();
  const srv = fakeHub({ corrupt: { "model.safetensors": true } });
  setEnvForModule("HF_ENDPOINT", srv.endpoint);
  try {
    await checkGolden("test/tiny-a");
    deepStrictEqual(
      srv.log.filter((l) => l.includes("resolve") && l.includes("model.safetensors")).length,
      2,
    );
    // Flip a byte of the stored blob (same size): the next load must notice and fetch it again.
    const blob = `${repoDir(hub)}/blobs/${sha256(files["model.safetensors"])}`;
    const bytes = await Deno.readFile(blob);
    bytes[1000] ^= 1;
    await Deno.writeFile(blob, bytes);
    srv.log.length = 0;
    await checkGolden("test/tiny-a");
    deepStrictEqual(
      srv.log.filter((l) => l.includes("resolve") && l.includes("model.safetensors")).length,
      1,
    );
    deepStrictEqual(sha256(await Deno.readFile(blob)), sha256(files["model.safetensors"]));
  } finally {
    await srv.close();
  }
});

Deno.test("gated and missing repositories give clear errors; HF_TOKEN is sent", async () => {
  await freshCaches();
  const srv = fakeHub();
  setEnvForModule("HF_ENDPOINT", srv.endpoint);
  setEnvForModule("HF_TOKEN", "hf_test");
  try {
    await rejects(() => loadModel("test/gated"), /HTTP 401.*HF_TOKEN/);
    ok(srv.log.some((l) => l.endsWith("auth")), "the token was not sent");
    await rejects(() => loadModel("test/missing"), /HTTP 404/);
  } finally {
    setEnvForModule("HF_TOKEN", undefined);
    await srv.close();
  }
});
