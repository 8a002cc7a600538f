// The demo page (web/) and the browser bundle (web/gemma3.js) in a real browser: Debian's
// Chromium driven by playwright-core (test-only). The page loads tiny-a (a model folder) and the
// full-size random 270M (Q4_0 GGUF) by relative URLs and must give the same token ids as Deno for
// the same input; 2 threads when cross-origin isolated, 1 with the COOP/COEP reason when not;
// frames keep painting while it generates (the engine is in a Worker); a Content-Security-Policy
// that blocks blob workers leaves one thread, one that forbids WebAssembly is named as the cause;
// a second visit loads the GGUF from the Cache API without asking the server for it.
//
// Without a Chromium (set CHROMIUM to its path, or `apt install chromium`) the tests are skipped
// with one line saying so; on CI (CI=true, where .ci/run installs it) that is a failure.

import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { chromium } from "playwright-core";
import { loadModel } from "../mod.ts";
import { random270mGguf } from "./support/random_270m.ts";
import { FIXTURES } from "./support/helpers.ts";
import { startWebServer, type WebServerOptions } from "./support/web_server.ts";

const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";
const found = await Deno.stat(CHROMIUM).then(() => true, () => false);
if (!found) {
  if (Deno.env.get("CI") === "true") {
    throw new Error(`on CI the browser tests must run: no ${CHROMIUM}`);
  }
  console.log(
    `browser tests skipped: no Chromium at ${CHROMIUM} (set CHROMIUM, or apt install chromium)`,
  );
}

// The page's window.demo (web/app.js), as the tests call it.
type Demo = {
  load(url: string, o?: { threads?: number; backend?: string }): Promise<LoadInfo>;
  send(text: string): Promise<{ text: string; finishReason: string; ttftMs: number }>;
  request(type: string, fields?: Record<string, unknown>): Promise<unknown>;
  showCache(): Promise<{ url: string; bytes: number }[]>;
  stop(): void;
  frames(): number;
};
interface LoadInfo {
  fromCache: boolean;
  threads: number;
  threadsReason: string | null;
  backend: string;
  crossOriginIsolated: boolean;
}
declare const demo: Demo;

const TINY_FILES: Record<string, string> = {};
for (const f of Deno.readDirSync(`${FIXTURES}/tiny-a`)) {
  TINY_FILES[`tiny-a/${f.name}`] = `${FIXTURES}/tiny-a/${f.name}`;
}
const PROMPT = [2, 818, 5279, 529, 7001, 563, 9405, 236761, 107];

/** Greedy ids from Deno, the reference the page must equal. */
async function denoIds(model: string, ids: number[], maxTokens: number): Promise<number[]> {
  const m = await loadModel(model, { threads: 2 });
  try {
    const out: number[] = [];
    for await (const id of m.createSession().generate(ids, { maxTokens, temperature: 0 })) {
      out.push(id);
    }
    return out;
  } finally {
    await m.dispose();
  }
}

/** A persistent profile (the Cache API keeps what it is given), a page at the server, `fn`. */
async function withPage(
  server: WebServerOptions,
  fn: (
    page: import("playwright-core").Page,
    srv: ReturnType<typeof startWebServer>,
    errors: string[],
  ) => Promise<void>,
): Promise<void> {
  const srv = startWebServer(server);
  const profile = await Deno.makeTempDir({ prefix: "gemma3-browser-" });
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: ["--no-sandbox"],
  });
  const errors: string[] = [];
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(srv.url);
    await page.waitForFunction(() => "demo" in globalThis);
    await fn(page, srv, errors);
  } finally {
    await browser.close();
    await srv.close();
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
}

function browserTest(name: string, fn: () => Promise<void>): void {
  // Chromium's own tasks outlive a test now and then; they belong to it, not to the engine.
  Deno.test({
    name: `browser: ${name}`,
    ignore: !found,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

browserTest("tiny-a by a relative folder URL: 2 threads when isolated, Deno's ids", async () => {
  const want = await denoIds(`${FIXTURES}/tiny-a`, [2, 17, 42], 12);
  await withPage({ files: TINY_FILES }, async (page, _srv, errors) => {
    const info = await page.evaluate(() => demo.load("models/tiny-a/", { threads: 2 }));
    deepStrictEqual([info.crossOriginIsolated, info.threads, info.threadsReason], [true, 2, null]);
    const got = await page.evaluate(() =>
      demo.request("generateIds", { ids: [2, 17, 42], maxTokens: 12 })
    ) as { ids: number[] };
    deepStrictEqual(got.ids, want);
    deepStrictEqual(errors, []);
  });
});

browserTest(
  "the bundle on a page: a relative folder path is a URL relative to the page",
  async () => {
    await withPage({ files: TINY_FILES }, async (page, srv) => {
      // The page's own thread, the bundle imported directly, a path as a user would write it
      // ("org/name" alone would be a Hub repository; a trailing slash or "./" makes it a folder).
      const got = await page.evaluate(async () => {
        const bundle = "./gemma3.js"; // the page's URL for it (a name, so Deno does not resolve it)
        const { loadModel } = await import(bundle);
        const model = await loadModel("models/tiny-a/", { threads: 1 });
        const ids: number[] = [];
        for await (const id of model.createSession().generate([2, 17, 42], { maxTokens: 12 })) {
          ids.push(id);
        }
        await model.dispose();
        return ids;
      });
      deepStrictEqual(got, await denoIds(`${FIXTURES}/tiny-a`, [2, 17, 42], 12));
      ok(srv.hits.get("/models/tiny-a/model.safetensors"), "read from the page's server");
    });
  },
);

browserTest("without COOP/COEP: 1 thread, and the reason names the headers", async () => {
  await withPage({ files: TINY_FILES, isolated: false }, async (page) => {
    const info = await page.evaluate(() => demo.load("models/tiny-a/", { threads: 2 }));
    deepStrictEqual([info.crossOriginIsolated, info.threads], [false, 1]);
    ok(/not cross-origin isolated/.test(info.threadsReason ?? ""), info.threadsReason ?? "");
    ok(/Cross-Origin-Opener-Policy/.test(info.threadsReason ?? ""), info.threadsReason ?? "");
    // One thread gives the same bits.
    const got = await page.evaluate(() =>
      demo.request("generateIds", { ids: [2, 17, 42], maxTokens: 12 })
    ) as { ids: number[] };
    deepStrictEqual(got.ids, await denoIds(`${FIXTURES}/tiny-a`, [2, 17, 42], 12));
  });
});

browserTest("a CSP that blocks blob: workers leaves 1 thread with the reason", async () => {
  const csp = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'";
  await withPage({ files: TINY_FILES, csp }, async (page) => {
    const info = await page.evaluate(() => demo.load("models/tiny-a/", { threads: 2 }));
    deepStrictEqual([info.crossOriginIsolated, info.threads], [true, 1]);
    ok(info.threadsReason, "a reason is given");
    const got = await page.evaluate(() =>
      demo.request("generateIds", { ids: [2, 17, 42], maxTokens: 6 })
    ) as { ids: number[] };
    deepStrictEqual(got.ids, await denoIds(`${FIXTURES}/tiny-a`, [2, 17, 42], 6));
  });
});

browserTest("a CSP without 'wasm-unsafe-eval' is named as the cause", async () => {
  await withPage({ files: TINY_FILES, csp: "default-src 'self'" }, async (page) => {
    await rejects(
      page.evaluate(() => demo.load("models/tiny-a/", { threads: 2 })),
      (e: Error) => /Content Security Policy/.test(e.message) && /wasm-unsafe-eval/.test(e.message),
    );
  });
});

browserTest("random 270M Q4_0 GGUF: Deno's ids, a live page, chat, stop, the cache", async () => {
  const gguf = await random270mGguf("q4_0");
  const want = await denoIds(gguf, PROMPT, 24);
  await withPage({ files: { "r.gguf": gguf } }, async (page, srv, errors) => {
    const first = await page.evaluate(() => demo.load("models/r.gguf", { threads: 2 }));
    deepStrictEqual([first.fromCache, first.threads], [false, 2]);
    deepStrictEqual(srv.hits.get("/models/r.gguf"), 1, "one request for the whole file");
    const frames0 = await page.evaluate(() => demo.frames());
    const got = await page.evaluate(
      (ids) => demo.request("generateIds", { ids, maxTokens: 24 }),
      PROMPT,
    ) as { ids: number[] };
    const painted = await page.evaluate(() => demo.frames()) - frames0;
    deepStrictEqual(got.ids, want);
    // 24 tokens of the 270M take about a second; a page whose thread ran them would paint none.
    ok(painted >= 5, `frames painted while generating: ${painted}`);

    // Chat through the page's own controls: the text streams into the log.
    const answer = await page.evaluate(() => demo.send("Hello"));
    ok(answer.text.length > 0 && answer.ttftMs > 0, JSON.stringify(answer));
    ok((await page.textContent("#log"))!.includes(answer.text.slice(0, 10)));
    ok(/tok\/s/.test((await page.textContent("#stats"))!));

    // Stop: a long answer ends early, as "abort".
    await page.fill("#max-tokens", "2000");
    await page.fill("#temperature", "1");
    const stopped = page.evaluate(() => demo.send("Tell me a long story"));
    await page.waitForFunction(
      `document.querySelector(".model:last-child").textContent.length > 0`,
    );
    await page.click("#stop");
    deepStrictEqual((await stopped).finishReason, "abort");

    // A second visit: the model comes from the Cache API, the server is not asked for it.
    await page.reload();
    await page.waitForFunction(() => "demo" in globalThis);
    const second = await page.evaluate(() => demo.load("models/r.gguf", { threads: 2 }));
    deepStrictEqual([second.fromCache, second.threads], [true, 2]);
    deepStrictEqual(srv.hits.get("/models/r.gguf"), 1);
    const again = await page.evaluate(
      (ids) => demo.request("generateIds", { ids, maxTokens: 24 }),
      PROMPT,
    ) as { ids: number[] };
    deepStrictEqual(again.ids, want);

    // The cached models are listed, and deleted.
    const listed = await page.evaluate(() => demo.showCache());
    deepStrictEqual(listed.map((e) => e.url), [`${srv.url}models/r.gguf`]);
    await page.click("#cache-clear");
    await page.waitForFunction(
      `document.querySelector("#cache-list").textContent === "no cached models"`,
    );
    deepStrictEqual(errors, []);
  });
});
