// Sessions (engine/session.ts): bad input gets a clear error that names the problem and leaves
// the session usable; generated tokens wait, unevaluated, until the next call needs them; truncate
// and reset rewind the sequence. Checked against tiny-a's golden outputs (an independent PyTorch
// implementation) wherever a result is compared.

import { deepStrictEqual, ok } from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { failsWith, FIXTURES, maxAbsDiff } from "./support/helpers.ts";
import { tempDir } from "./support/temp.ts";

const tinyA = `${FIXTURES}tiny-a`;
const golden = JSON.parse(await Deno.readTextFile(`${tinyA}/golden.json`));
const model = await loadModel(tinyA);
/** The golden's bar for float32 logits (tests/golden_test.ts says why). */
const TOL = 1e-4;

/** After a rejected call, the session must still compute the golden logits. */
async function stillUsable(s: ReturnType<typeof model.createSession>) {
  const r = golden.results[1];
  s.reset();
  const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
  ok(d <= TOL, `after the error, logits differ by ${d}`);
}

Deno.test("empty token list", async () => {
  const s = model.createSession({ contextLength: 32 });
  await failsWith(() => s.eval([]), /empty/);
  deepStrictEqual(s.position, 0);
  await stillUsable(s);
});

Deno.test("token id outside the vocabulary is named", async () => {
  const s = model.createSession({ contextLength: 32 });
  await s.eval([2, 5]);
  await failsWith(() => s.eval([3, 512, 4]), /token id 512/, /index 1/, /0\.\.511/);
  await failsWith(() => s.eval([-1]), /token id -1/);
  await failsWith(() => s.eval([1.5]), /token id 1.5/);
  deepStrictEqual(s.position, 2, "nothing was appended");
  await stillUsable(s);
});

Deno.test("a prompt beyond the context length", async () => {
  const s = model.createSession({ contextLength: 10 });
  await s.eval([2, 3, 4, 5]);
  await failsWith(() => s.eval(new Array(7).fill(9)), /context length 10/, /position 4/);
  deepStrictEqual(s.position, 4);
  await stillUsable(s);
});

Deno.test("generation stops at a full context instead of failing", async () => {
  const s = model.createSession({ contextLength: 12 });
  const ids: number[] = [];
  for await (const id of s.generate([2, 17, 42], { stopTokens: [] })) ids.push(id);
  deepStrictEqual(ids.length, 9);
  deepStrictEqual(s.position, 12);
  await failsWith(() => s.eval([5]), /context length 12/);
});

Deno.test("bad options are named", async () => {
  const s = model.createSession({ contextLength: 16 });
  await failsWith(() => s.generate([2], { temperature: -1 }).next(), /temperature/);
  await failsWith(() => s.generate([2], { topP: 0 }).next(), /topP/);
  await failsWith(() => s.generate([2], { maxTokens: 1.5 }).next(), /maxTokens/);
  await failsWith(() => s.eval([2], { logits: "some" as "all" }), /logits/);
  await failsWith(
    () => Promise.resolve().then(() => model.createSession({ contextLength: 0 })),
    /contextLength/,
  );
  await failsWith(
    () => Promise.resolve().then(() => model.createSession({ contextLength: 1e9 })),
    /contextLength.*32768/,
  );
  await stillUsable(s);
});

Deno.test("a disposed session says so", async () => {
  const s = model.createSession({ contextLength: 16 });
  s.dispose();
  await failsWith(() => s.eval([2]), /disposed/);
});

Deno.test("generate: tokens yielded but not evaluated yet are evaluated first by the next call", async () => {
  const r = golden.results[1];
  const want: number[] = r.greedy_continuation_kv_cache;
  const s = model.createSession({ contextLength: 64 });
  const first: number[] = [];
  for await (const id of s.generate(r.prompt, { maxTokens: 5, stopTokens: [] })) first.push(id);
  deepStrictEqual(first, want.slice(0, 5));
  // The fifth token is part of the context but was never run through the model.
  deepStrictEqual(s.position, r.prompt.length + 5);
  const rest: number[] = [];
  for await (const id of s.generate([], { maxTokens: 19, stopTokens: [] })) rest.push(id);
  deepStrictEqual(rest, want.slice(5, 24));
  // eval after a generate evaluates the pending token before the new one.
  const s2 = model.createSession({ contextLength: 64 });
  for await (const _ of s2.generate(r.prompt, { maxTokens: 3, stopTokens: [] })) { /* drain */ }
  const after = await s2.eval([want[3]]);
  const ref = model.createSession({ contextLength: 64 });
  const cold = await ref.eval([...r.prompt, ...want.slice(0, 4)]);
  deepStrictEqual(after, cold, "pending tokens evaluated first give the same bits as a cold run");
  for (const x of [s, s2, ref]) x.dispose();
});

Deno.test("truncate: continuing after a rewind equals evaluating the shorter sequence afresh", async () => {
  // Prompt 2 has 40 tokens and tiny-a's sliding window is 8: its rings wrap several times, so a
  // rewind past them must re-evaluate what the dropped tokens overwrote.
  const text: number[] = golden.results[2].prompt;
  for (const keep of [text.length - 1, text.length - 2, 30, 9, 3, 0]) {
    const s = model.createSession({ contextLength: 64 });
    await s.eval(text);
    s.truncate(keep);
    deepStrictEqual(s.position, keep);
    const next = [5, 7];
    const got = await s.eval(next, { logits: "all" });
    const ref = model.createSession({ contextLength: 64 });
    const want = await ref.eval([...text.slice(0, keep), ...next], { logits: "all" });
    // The same ops on the same inputs: bit-identical (any reuse of a destroyed ring slot would
    // show as an O(1) difference).
    deepStrictEqual(got, want.subarray(want.length - got.length), `keep ${keep}`);
    s.dispose();
    ref.dispose();
  }
});

Deno.test("truncate back to the prompt, then generate: the golden continuation again", async () => {
  const r = golden.results[2];
  const s = model.createSession({ contextLength: 96 });
  const n = r.prompt.length;
  await s.eval([...r.prompt, ...r.greedy_continuation_kv_cache.slice(0, 12)]);
  s.truncate(n - 1);
  const got: number[] = [];
  for await (const id of s.generate([r.prompt[n - 1]], { maxTokens: 24, stopTokens: [] })) {
    got.push(id);
  }
  deepStrictEqual(got, r.greedy_continuation_kv_cache);
  s.dispose();
});

Deno.test("reset() starts a fresh sequence in the same cache", async () => {
  const r = golden.results[1];
  const s = model.createSession({ contextLength: 64 });
  await s.eval(golden.results[2].prompt);
  s.reset();
  deepStrictEqual(s.position, 0);
  const d = maxAbsDiff(await s.eval(r.prompt), r.last_position_logits);
  ok(d <= TOL, `after reset, logits differ by ${d}`);
  s.dispose();
});

Deno.test("generate lets the event loop run between tokens (a stream's writes leave as they happen)", async () => {
  // In a process of its own: under the test runner other tasks can let the message in early.
  // One thread: the forward pass then never waits on anything, so without a yield between tokens
  // no task (a socket write, a timer, a message) runs until generation ends.
  const dir = await tempDir();
  await Deno.writeTextFile(
    `${dir}/yield.ts`,
    `import { loadModel } from "${new URL("../mod.ts", import.meta.url).href}";
const one = await loadModel("${tinyA}", { threads: 1 });
const s = one.createSession({ contextLength: 64 });
let delivered = false;
const { port1, port2 } = new MessageChannel();
port1.onmessage = () => delivered = true;
port2.postMessage(null);
const seenAt = [];
for await (const _ of s.generate([2, 17, 42], { maxTokens: 4, stopTokens: [] })) seenAt.push(delivered);
port1.close();
port2.close();
await one.dispose();
console.log(JSON.stringify(seenAt));
`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${dir}/yield.ts`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  deepStrictEqual(out.code, 0, new TextDecoder().decode(out.stderr));
  const seenAt = JSON.parse(new TextDecoder().decode(out.stdout));
  deepStrictEqual(seenAt, [false, true, true, true], "the message arrived between tokens 1 and 2");
});

Deno.test("eval: damaged weights (a NaN in a norm) are an error naming the file, not NaN logits", async () => {
  const { randomWeights, smallConfig, writeCheckpoint } = await import(
    "./support/safetensors_writer.ts"
  );
  const config = smallConfig();
  const tensors = randomWeights(config, 3, "F32");
  tensors["model.norm.weight"].values[5] = NaN;
  const dir = await writeCheckpoint(config, tensors);
  const model = await loadModel(dir, { threads: 1 });
  try {
    const session = model.createSession();
    await failsWith(
      () => session.eval([2, 5, 7]),
      /the model computed NaN \(logit \d+\): its weights or its config give non-finite values/,
      new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.* may be damaged`),
    );
    await failsWith(() => model.createSession().eval([2, 5], { logits: "all" }), /of token 0/);
    // Greedy decoding finds its token on the backend, without the logits: the same error.
    await failsWith(
      async () => {
        for await (const _ of model.createSession().generate([2, 5, 7], { temperature: 0 }));
      },
      /the model computed logits that are not numbers: its weights or its config give non-finite/,
      new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.* may be damaged`),
    );
  } finally {
    await model.dispose();
  }
  // A config value can do it as well: query_pre_attn_scalar 1e-300 scales scores to infinity.
  const scaled = await writeCheckpoint(
    smallConfig({ query_pre_attn_scalar: 1e-300 }),
    randomWeights(config, 3, "F32"),
  );
  const model2 = await loadModel(scaled, { threads: 1 });
  try {
    await failsWith(
      () => model2.createSession().eval([2, 5, 7]),
      /its weights or its config give non-finite values; .* \(its weights, or config\.json\) may be damaged/,
    );
  } finally {
    await model2.dispose();
  }
});
