// Runs a GGUF file with llama.cpp (npm node-llama-cpp 3.21.1, prebuilt CPU binaries) and prints
// JSON. A test helper only: the engine never imports llama.cpp.
// Usage: node llamacpp_runner.mjs '<json request>'
//   { model, prompts: number[][], steps, threads, topK? }: for each prompt, the greedy
//     continuation and the log-probabilities behind every generated token (at the last prompt
//     position, then after each generated token): every token's as a sparse row, or with topK
//     only the k best, as [id, logprob] pairs (a 262k vocabulary is too much to print per step).
//   With forced (number[][]: a continuation per prompt), those tokens are fed instead of the
//     greedy ones (teacher forcing), and `tokens` is still llama.cpp's argmax at each step.
//   { mode: "score", model, windows: number[][], threads }: for each window, the log-probability
//     of each of its tokens after the first, given those before it (perplexity).
//   { mode: "tokenize", model, texts: string[] }: each text's ids, special tokens parsed, no BOS.
//   { mode: "grammar", model, grammar, texts: string[] }: for each text, what llama.cpp's
//     grammar engine says of it: { prefix }: every token of it (as llama.cpp tokenizes it) is
//     allowed in turn; { whole }: and then the end-of-generation token (the grammar may end).

const lib = new URL("../.cache/llama/node_modules/node-llama-cpp/dist/index.js", import.meta.url);
const { getLlama } = await import(lib.href);
const req = JSON.parse(process.argv[2]);
const llama = await getLlama({ build: "never", gpu: false, logLevel: "error" });
const model = await llama.loadModel({
  modelPath: req.model,
  vocabOnly: req.mode === "tokenize" || req.mode === "grammar",
});

// f32 KV cache and the full sliding-window cache: nothing lossy beyond the weights themselves.
const contextOptions = (size) => ({
  contextSize: size,
  batchSize: size,
  threads: req.threads ?? 1,
  experimentalKvCacheKeyType: "F32",
  experimentalKvCacheValueType: "F32",
  swaFullCache: true,
});

function top(probabilities, k) {
  const out = [];
  for (const [id, p] of probabilities) {
    out.push([id, Math.log(p)]);
    if (out.length === k) break; // the map is sorted, most probable first
  }
  return out;
}

const results = [];
if (req.mode === "grammar") {
  const { LlamaGrammar, LlamaGrammarEvaluationState, LlamaSampler } = await import(
    new URL("evaluator/LlamaContext/LlamaSampler.js", lib).href
  ).then(async (m) => ({ ...(await import(lib.href)), LlamaSampler: m.LlamaSampler }));
  const grammar = new LlamaGrammar(llama, { grammar: req.grammar });
  for (const text of req.texts) {
    const state = new LlamaGrammarEvaluationState({ model, grammar });
    let accepted = true;
    for (const token of model.tokenize(text, false)) {
      if (!LlamaSampler._canBeNextTokenForGrammarEvaluationState(llama, state, token)) {
        accepted = false;
        break;
      }
      LlamaSampler._acceptTokenOnGrammarEvaluationState(llama, state, token);
    }
    results.push({
      prefix: accepted,
      whole: accepted &&
        LlamaSampler._canBeNextTokenForGrammarEvaluationState(llama, state, model.tokens.eos),
    });
  }
} else if (req.mode === "tokenize") {
  for (const text of req.texts) results.push(Array.from(model.tokenize(text, true)));
} else if (req.mode === "score") {
  const context = await model.createContext(
    contextOptions(Math.max(...req.windows.map((w) => w.length))),
  );
  const sequence = context.getSequence();
  for (const window of req.windows) {
    await sequence.clearHistory();
    const logprobs = [];
    // In pieces, so that the 262k-entry probability maps of one piece are freed before the next.
    for (let s = 0; s < window.length - 1; s += 16) {
      const piece = window.slice(s, Math.min(s + 16, window.length - 1));
      const out = await sequence.controlledEvaluate(
        piece.map((t) => [t, { generateNext: { probabilities: true } }]),
      );
      for (let i = 0; i < piece.length; i++) {
        logprobs.push(Math.log(out[i].next.probabilities.get(window[s + i + 1]) ?? 0));
      }
    }
    results.push(logprobs);
  }
  await context.dispose();
} else {
  const longest = Math.max(...req.prompts.map((p) => p.length));
  const record = (probabilities) => {
    if (req.topK) return top(probabilities, req.topK);
    const row = [];
    for (const [id, p] of probabilities) row[id] = Math.log(p);
    return row;
  };
  for (const [p, prompt] of req.prompts.entries()) {
    const context = await model.createContext(
      contextOptions(Math.max(256, 32 * Math.ceil((longest + req.steps) / 32))),
    );
    const sequence = context.getSequence();
    const tokens = [], logprobs = [];
    if (req.forced) {
      const want = { generateNext: { probabilities: true } };
      const input = [...prompt.slice(0, -1), [prompt.at(-1), want]];
      for (const t of req.forced[p].slice(0, req.steps - 1)) input.push([t, want]);
      const out = await sequence.controlledEvaluate(input);
      for (let i = prompt.length - 1; i < input.length; i++) {
        const [[best]] = out[i].next.probabilities;
        tokens.push(best);
        logprobs.push(record(out[i].next.probabilities));
      }
    } else {
      for await (
        const out of sequence.evaluateWithMetadata(prompt, { probabilities: true }, {
          temperature: 0,
        })
      ) {
        tokens.push(out.token);
        logprobs.push(record(out.probabilities));
        if (tokens.length >= req.steps) break;
      }
    }
    results.push(req.topK ? { tokens, top: logprobs } : { tokens, logprobs });
    await context.dispose();
  }
}
await model.dispose();
await llama.dispose();
process.stdout.write(
  JSON.stringify({ backend: llama.gpu === false ? "cpu" : String(llama.gpu), results }),
);
