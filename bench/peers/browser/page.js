// bench/wllama.ts's page: one engine per call, on the same GGUF URL, token ids and thread count;
// each returns decode tok/s (tokens after a short prompt) and prefill tok/s (one long prompt).
// This engine runs in a module Worker (ours_worker.js) with web/gemma3.js; wllama runs in the
// Worker it makes itself.

async function ours(request) {
  const worker = new Worker(new URL("./ours_worker.js", import.meta.url), { type: "module" });
  try {
    return await new Promise((resolve, reject) => {
      worker.onmessage = (e) => (e.data.error ? reject(new Error(e.data.error)) : resolve(e.data));
      worker.onerror = (e) => reject(new Error(e.message));
      worker.postMessage(request);
    });
  } finally {
    worker.terminate();
  }
}

async function wllama({ model, threads, prompt, decode, prefill }) {
  const wllamaModule = "/wllama/esm/index.js"; // served by bench/wllama.ts from bench/.cache/
  const { Wllama } = await import(wllamaModule);
  const w = new Wllama({ default: "/wllama/esm/wasm/wllama.wasm" }, { suppressNativeLog: true });
  w.setCompat(null); // its compat files come from a CDN; Chromium needs none of them
  const blob = await (await fetch(model)).blob();
  await w.loadModel([blob], { n_threads: threads, n_ctx: 1024, n_gpu_layers: 0, n_parallel: 1 });
  try {
    // llama-server's completion handler inside (a text prompt; BOS added as llama.cpp does); its
    // timings are what llama-server reports (prompt_per_second, predicted_per_second).
    const run = (text, n) =>
      w.createCompletion({
        prompt: text,
        max_tokens: n,
        temperature: 0,
        ignore_eos: true,
        cache_prompt: false,
      });
    const d = await run(prompt, decode);
    const p = await run(prefill, 1);
    return {
      decode: d.timings.predicted_per_second,
      decodeTokens: d.timings.predicted_n,
      prefill: p.timings.prompt_per_second,
      prefillTokens: p.timings.prompt_n,
      threads: w.getNumThreads(),
    };
  } finally {
    await w.exit();
  }
}

globalThis.bench = { ours, wllama };
