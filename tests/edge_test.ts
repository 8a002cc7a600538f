// examples/deno-deploy/main.ts run as an edge platform runs it: no write permission, no prompts,
// the model by URL, and the workers a platform lacks taken away (Worker, process, a
// node:worker_threads that is missing or cannot start). Each time it must answer, stream, and
// report one thread with the reason in /props: never a failed load.

import { deepStrictEqual, ok } from "node:assert/strict";
import { FIXTURES } from "./support/helpers.ts";
import { startWebServer } from "./support/web_server.ts";
import { spawnEdge } from "./fixtures/edge/spawn.ts";

/** Starts the example under `remove` (globals) and `importMap`, runs `fn` on its URL, stops it. */
async function withEdge(
  remove: string[],
  importMap: string | undefined,
  fn: (url: string) => Promise<void>,
): Promise<void> {
  const models = startWebServer({ files: { "model.gguf": `${FIXTURES}tiny-a/model.gguf` } });
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawnEdge({
    modelUrl: `${models.url}models/model.gguf`,
    port,
    remove,
    importMap,
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0;; i++) {
      const r = await fetch(`${url}/health`).catch(() => null);
      await r?.body?.cancel();
      if (r?.ok) break;
      if (i > 300) throw new Error("the edge function did not become healthy in 30 s");
      await new Promise((res) => setTimeout(res, 100));
    }
    await fn(url);
  } finally {
    child.kill();
    const out = await child.output();
    await models.close();
    const stderr = new TextDecoder().decode(out.stderr);
    ok(!/PermissionDenied|NotCapable|Requires .* access/.test(stderr), stderr);
  }
}

async function answersAndStreams(url: string): Promise<void> {
  const body = { messages: [{ role: "user", content: "Hi" }], max_tokens: 6, temperature: 0 };
  const r = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify(body),
  });
  deepStrictEqual(r.status, 200);
  const answer = await r.json();
  deepStrictEqual(answer.usage.completion_tokens, 6);
  const s = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    body: JSON.stringify({ ...body, stream: true }),
  });
  deepStrictEqual(s.headers.get("content-type")?.split(";")[0], "text/event-stream");
  const events = (await s.text()).split("\n\n").filter((e) => e.startsWith("data: "));
  deepStrictEqual(events.at(-1), "data: [DONE]");
  const streamed = events.slice(0, -1).map((e) => JSON.parse(e.slice(6)))
    .map((c) => c.choices[0]?.delta?.content ?? "").join("");
  // The same greedy answer, streamed.
  deepStrictEqual(streamed, answer.choices[0].message.content);
}

async function oneThread(url: string, reason: RegExp): Promise<void> {
  const props = await (await fetch(`${url}/props`)).json();
  deepStrictEqual([props.threads, props.backend], [1, "wasm"]);
  ok(reason.test(props.threads_note ?? ""), props.threads_note);
}

Deno.test("edge: Worker and process removed (no workers at all): one thread, says so", async () => {
  await withEdge(["Worker", "process"], undefined, async (url) => {
    await answersAndStreams(url);
    await oneThread(url, /no workers/);
  });
});

Deno.test("edge: Worker removed, node:worker_threads missing (Supabase): one thread", async () => {
  await withEdge(["Worker"], "no_worker_threads.json", async (url) => {
    await answersAndStreams(url);
    await oneThread(url, /Cannot find module 'worker_threads'/);
  });
});

Deno.test("edge: Worker removed, node:worker_threads cannot start one (Deploy): one thread", async () => {
  await withEdge(["Worker"], "broken_worker_threads.json", async (url) => {
    await answersAndStreams(url);
    await oneThread(url, /not supported on this platform/);
  });
});

Deno.test("edge: with workers, the same example runs on more threads", async () => {
  await withEdge([], undefined, async (url) => {
    const props = await (await fetch(`${url}/props`)).json();
    ok(props.threads >= 2 || navigator.hardwareConcurrency < 2, JSON.stringify(props));
    deepStrictEqual(props.threads_note, undefined);
  });
});
