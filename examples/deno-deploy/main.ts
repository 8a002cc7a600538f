// The OpenAI-compatible server as an edge function: Deno Deploy (and Supabase Edge Functions, the
// same Deno.serve entry) run this file. The model comes by URL (MODEL_URL: a GGUF file; Q4_0 of
// the 270M fits Deno Deploy's 512 MB), nothing is written to disk, and where the platform has no
// workers the engine runs on one thread without being asked (GET /props says why).
//
//   MODEL_URL=https://example.com/gemma-3-270m-it-q4_0.gguf deno run --allow-net --allow-env main.ts
//
// Deployed, the import below is the URL of mod.ts (a tag of this repository on a CDN or GitHub's
// raw files); here it is the file next door.

import { createHandler, loadModel } from "../../mod.ts";

const modelUrl = Deno.env.get("MODEL_URL");
if (!modelUrl) throw new Error("set MODEL_URL to the URL of a Gemma 3 GGUF file");

// Requests are accepted at once: /health says 503 until the model is in, and the rest wait for it.
// A cold instance thus answers its first request as soon as the model has loaded.
const model = loadModel(modelUrl, { backend: "wasm" });
const handler = createHandler(model, {
  // An edge instance is one small machine: one request at a time each with its KV cache, a short
  // context, and a queue that turns the rest away with 503 rather than holding them.
  parallel: Number(Deno.env.get("PARALLEL") ?? 1),
  contextLength: Number(Deno.env.get("CONTEXT_LENGTH") ?? 2048),
  maxQueue: 8,
  apiKey: Deno.env.get("GEMMA_API_KEY"),
  corsOrigin: Deno.env.get("CORS_ORIGIN"),
});

Deno.serve({ port: Number(Deno.env.get("PORT") ?? 8000) }, handler);
