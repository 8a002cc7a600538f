// The engine's side of the demo page: a module Worker, so that loading and generating never
// block the page (a browser's main thread would paint no frame while a token is computed).
// The page posts requests ({ type, ... }) and gets back progress, text and results.
//
// A GGUF model is fetched once into the Cache API ("gemma3-wasm-models") with progress, then read
// from there (a blob: URL of the cached copy), so a second visit loads without the network. A
// model folder (a URL ending in "/") is read as it is, each time.

import { loadModel } from "./gemma3.js";

const CACHE = "gemma3-wasm-models";
let model = null;
let stopper = null;

const post = (message) => self.postMessage(message);

/** The cached copy of `url`, fetching it into the cache first (with progress) if needed. */
async function cachedBlob(url) {
  const cache = await caches.open(CACHE);
  let hit = await cache.match(url);
  if (hit) {
    const blob = await hit.blob();
    post({ type: "progress", phase: "cache", file: url, loaded: blob.size, total: blob.size });
    return { blob, fromCache: true };
  }
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot fetch ${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get("content-length")) || 0;
  let loaded = 0;
  const counted = res.body.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        loaded += chunk.length;
        post({ type: "progress", phase: "download", file: url, loaded, total });
        controller.enqueue(chunk);
      },
    }),
  );
  await cache.put(
    url,
    new Response(counted, {
      headers: { "content-type": "application/octet-stream", "content-length": String(total) },
    }),
  );
  hit = await cache.match(url);
  return { blob: await hit.blob(), fromCache: false };
}

async function load({ url, threads, backend }) {
  await model?.dispose();
  model = null;
  const started = performance.now();
  const absolute = new URL(url, self.location.href).href;
  const options = {
    threads,
    backend,
    onProgress: (p) =>
      post({
        type: "progress",
        phase: p.phase,
        file: p.file ?? absolute,
        loaded: p.loadedBytes,
        total: p.totalBytes,
      }),
  };
  let fromCache = false;
  if (/\.gguf$/i.test(new URL(absolute).pathname)) {
    // One file: kept in the Cache API, and read from there.
    const cached = await cachedBlob(absolute);
    fromCache = cached.fromCache;
    const blobUrl = URL.createObjectURL(cached.blob);
    try {
      model = await loadModel(blobUrl, options);
    } finally {
      URL.revokeObjectURL(blobUrl);
    }
  } else {
    // A model folder (config.json, safetensors, tokenizer.json) by URL: read as it is.
    model = await loadModel(absolute, options);
  }
  return {
    url: absolute,
    fromCache,
    loadMs: performance.now() - started,
    threads: model.threads,
    threadsReason: model.threadsFallbackReason ?? null,
    backend: model.backend,
    backendReason: model.backendReason,
    crossOriginIsolated: self.crossOriginIsolated === true,
  };
}

async function chat({ messages, options }) {
  if (!model) throw new Error("no model loaded");
  stopper = new AbortController();
  const started = performance.now();
  let firstAt = 0, pieces = 0;
  const answer = model.chat(messages, { ...options, signal: stopper.signal });
  let r;
  while (!(r = await answer.next()).done) {
    if (!firstAt) firstAt = performance.now();
    pieces++;
    post({ type: "text", text: r.value });
  }
  const end = r.value;
  const decodeMs = performance.now() - (firstAt || started);
  return {
    finishReason: end.finishReason,
    promptTokens: end.promptTokens,
    completionTokens: end.completionTokens,
    ttftMs: (firstAt || performance.now()) - started,
    tokensPerSecond: end.completionTokens > 1 ? (end.completionTokens - 1) / (decodeMs / 1000) : 0,
    pieces,
  };
}

/** Greedy token ids from token ids (the tests compare them with Deno's). */
async function generateIds({ ids, maxTokens }) {
  if (!model) throw new Error("no model loaded");
  const session = model.createSession();
  const out = [];
  try {
    for await (const id of session.generate(ids, { maxTokens, temperature: 0 })) out.push(id);
  } finally {
    session.dispose();
  }
  return { ids: out };
}

async function listCache() {
  const cache = await caches.open(CACHE);
  const entries = [];
  for (const req of await cache.keys()) {
    const res = await cache.match(req);
    entries.push({ url: req.url, bytes: Number(res.headers.get("content-length")) || 0 });
  }
  return { entries };
}

async function deleteCache({ url }) {
  const cache = await caches.open(CACHE);
  return { deleted: url ? await cache.delete(url) : await caches.delete(CACHE) };
}

const handlers = { load, chat, generateIds, listCache, deleteCache };

self.onmessage = async (e) => {
  const { id, type } = e.data;
  if (type === "stop") return void stopper?.abort();
  try {
    const handler = handlers[type];
    if (!handler) throw new Error(`unknown request ${type}`);
    post({ id, type: "result", result: await handler(e.data) });
  } catch (err) {
    post({ id, type: "error", message: String(err?.message ?? err) });
  }
};
post({ type: "ready" });
