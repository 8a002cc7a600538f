// This engine's side of bench/wllama.ts: load by URL, then decode `decode` tokens after `prompt`
// and evaluate `prefill` as one prompt in a new session, greedy, as the page asks.
import { loadModel } from "../../../web/gemma3.js";

self.onmessage = async ({ data: { model, threads, prompt, decode, prefill } }) => {
  let m;
  try {
    m = await loadModel(model, { threads, backend: "wasm" });
    const s = m.createSession({ contextLength: 1024 });
    let first = 0, n = 0;
    for await (
      const _ of s.generate(prompt, { maxTokens: decode, stopTokens: [], temperature: 0 })
    ) {
      if (n++ === 0) first = performance.now();
    }
    // The first token comes from the prompt's pass; the rest are one decode step each.
    const decodeRate = (n - 1) / ((performance.now() - first) / 1000);
    const p = m.createSession({ contextLength: 1024 });
    const t = performance.now();
    await p.eval(prefill);
    const prefillRate = prefill.length / ((performance.now() - t) / 1000);
    self.postMessage({
      decode: decodeRate,
      decodeTokens: n,
      prefill: prefillRate,
      prefillTokens: prefill.length,
      threads: m.threads,
      threadsReason: m.threadsFallbackReason ?? null,
    });
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
  } finally {
    await m?.dispose();
  }
};
