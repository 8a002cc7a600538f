/**
 * Sliding-window checkpoints (Session's `checkpoints`): time to first token when a ~3,000-token
 * conversation goes back, without checkpoints (budget 0: the whole context evaluated again,
 * because the sliding layers' rings have overwritten what the cut needs) and with the defaults.
 *
 *   deno run -A bench/checkpoints.ts [--threads 1,2] [--rounds 2] [--context 3000]
 *                                    [--model real|random] [--json] [--save]
 *
 * Each mode's session holds the same conversation, built turn by turn as a chat would (each
 * prompt through reusePrefix + generate, 40-token greedy answers). Then, alternating modes:
 * "regenerate" asks the last prompt again (the answer is generated anew); "edit" changes the
 * last user message. Time to first token: from reusePrefix to the first generated token. Both
 * modes must generate the same tokens (checked). Also reported: what one checkpoint costs and
 * what the session holds in them.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { type Gemma3Model, loadModel, type Session } from "../mod.ts";
import type { ChatMessage } from "../engine/tokenizer/chat_template.ts";
import { realOrRandomModel } from "./real_model.ts";
import { machineInfo, median, runtime, saveResults, takeBenchLock } from "./harness.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    threads: { type: "string", default: "1,2" },
    rounds: { type: "string", default: "2" },
    context: { type: "string", default: "3000" },
    model: { type: "string" },
    json: { type: "boolean", default: false },
    save: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(`Usage: deno run -A bench/checkpoints.ts [options]

Time to first token for "regenerate the last answer" and "edit the last message" in a long
conversation, without sliding-window checkpoints and with them.

  --threads 1,2    thread counts
  --rounds 2       rounds (each: regenerate and edit, both modes alternating)
  --context 3000   tokens the conversation holds before going back
  --model real     real (the real 270M Q4_K_M, fetched once) or random (full-size random
                   Q8_0); default real when it can be had
  --json           print one JSON line too
  --save           write bench/results/<date>-checkpoints-<runtime>.{md,json}`);
  process.exit(0);
}
takeBenchLock();

const threadCounts = values.threads!.split(",").map(Number);
const rounds = Number(values.rounds);
const contextTokens = Number(values.context);
const ANSWER_TOKENS = 40;

const { path: modelPath, label: modelLabel } = await realOrRandomModel(values.model);

const TOPICS = [
  "the history of lighthouses",
  "how tides work",
  "why the sky is blue",
  "how bread rises",
  "what makes a good library",
  "how bridges carry weight",
  "the life of honey bees",
  "how glaciers move",
  "why cats purr",
  "how radio works",
  "the water cycle",
  "how volcanoes form",
  "what a compiler does",
  "how maps are drawn",
  "the rules of chess",
  "how vaccines train the body",
  "why leaves change colour",
  "how a bicycle stays up",
];

/** A user message of about 150 tokens on a topic. */
function question(topic: string, variant = ""): string {
  return `I am preparing a short talk about ${topic}${variant} for a group of curious ` +
    `twelve-year-olds. Could you explain the main idea in plain words, give one surprising fact ` +
    `they will remember, and suggest a simple demonstration or drawing I could bring along? ` +
    `Please avoid jargon, keep each part to a couple of sentences, and if there is a common ` +
    `misconception about ${topic}, mention it and say why it is wrong. I will read your answer ` +
    `aloud, so write it the way a friendly teacher would speak, not like a textbook.`;
}

/** Asks `messages` (ending with a user message) on `s` as a chat would, greedy: the tokens and
 * the time to the first one. */
async function ask(
  model: Gemma3Model,
  s: Session,
  messages: ChatMessage[],
): Promise<{ answer: number[]; ttftMs: number; evaluated: number }> {
  const prompt = model.tokenizer.encodeChat(messages);
  const t0 = performance.now();
  const kept = s.reusePrefix(prompt);
  const evaluated = prompt.length - s.evaluatedTokens;
  const answer: number[] = [];
  let ttftMs = 0;
  const gen = s.generate(prompt.slice(kept), {
    maxTokens: ANSWER_TOKENS,
    temperature: 0,
    stopTokens: model.defaultStopTokens,
  });
  for await (const id of gen) {
    if (answer.length === 0) ttftMs = performance.now() - t0;
    answer.push(id);
  }
  return { answer, ttftMs, evaluated };
}

/** Builds the conversation turn by turn on `s` until it holds about `contextTokens` tokens. */
async function converse(model: Gemma3Model, s: Session): Promise<ChatMessage[]> {
  const messages: ChatMessage[] = [{
    role: "system",
    content: "You are a patient teacher who explains science and everyday things to children.",
  }];
  for (const topic of TOPICS) {
    messages.push({ role: "user", content: question(topic) });
    const { answer } = await ask(model, s, messages);
    if (s.position + 200 > contextTokens) return messages; // the last user message stays
    messages.push({ role: "assistant", content: model.tokenizer.decode(answer) });
  }
  return messages;
}

interface Row {
  threads: number;
  task: string;
  /** Prompt tokens evaluated before the first token, without and with checkpoints. */
  evaluatedOff: number;
  evaluatedOn: number;
  ttftOffMs: number;
  ttftOnMs: number;
  speedup: number;
}
const rows: Row[] = [];
let checkpointInfo = { oneBytes: 0, heldBytes: 0, count: 0, positions: [] as number[] };
for (const threads of threadCounts) {
  const model = await loadModel(modelPath, { threads });
  const off = model.createSession({ contextLength: 4096, checkpoints: { budgetBytes: 0 } });
  const on = model.createSession({ contextLength: 4096 });
  const messages = await converse(model, off);
  const again = await converse(model, on);
  if (JSON.stringify(again) !== JSON.stringify(messages)) {
    throw new Error("the two sessions' conversations differ");
  }
  const last = messages.length - 1;
  const edited = messages.map((m, i) =>
    i === last ? { ...m, content: question(TOPICS[(last - 1) / 2], " and its history") } : m
  );
  const samples: Record<string, { off: number[]; on: number[]; eOff: number; eOn: number }> = {
    regenerate: { off: [], on: [], eOff: 0, eOn: 0 },
    edit: { off: [], on: [], eOff: 0, eOn: 0 },
  };
  for (let r = 0; r < rounds; r++) {
    for (const [task, asked] of [["regenerate", messages], ["edit", edited]] as const) {
      const a = await ask(model, off, asked);
      const b = await ask(model, on, asked);
      if (JSON.stringify(a.answer) !== JSON.stringify(b.answer)) {
        throw new Error(`${task}: the answers with and without checkpoints differ`);
      }
      samples[task].off.push(a.ttftMs);
      samples[task].on.push(b.ttftMs);
      samples[task].eOff = a.evaluated;
      samples[task].eOn = b.evaluated;
    }
    // Back to the conversation as it was (not timed), for the next round's regenerate.
    await ask(model, off, messages);
    await ask(model, on, messages);
  }
  for (const [task, s] of Object.entries(samples)) {
    const row = {
      threads,
      task,
      evaluatedOff: s.eOff,
      evaluatedOn: s.eOn,
      ttftOffMs: median(s.off),
      ttftOnMs: median(s.on),
      speedup: median(s.off.map((o, i) => o / s.on[i])),
    };
    rows.push(row);
    console.error(
      `${task}, ${threads} thread(s): ${row.ttftOffMs.toFixed(0)} -> ${
        row.ttftOnMs.toFixed(0)
      } ms to the first token (${row.evaluatedOff} -> ${row.evaluatedOn} tokens evaluated)`,
    );
  }
  const ring = on.checkpointPositions.length;
  checkpointInfo = {
    oneBytes: ring ? on.checkpointBytes / ring : 0,
    heldBytes: on.checkpointBytes,
    count: ring,
    positions: on.checkpointPositions,
  };
  off.dispose();
  on.dispose();
  await model.dispose();
}

const info = machineInfo();
const mib = (b: number) => (b / (1 << 20)).toFixed(1);
const table = [
  `Going back in a ${contextTokens}-token conversation (${modelLabel}; ${info.cpu}, ${info.cores} ` +
  `cores, ${info.runtime}): time to the first token without checkpoints (budget 0) and with the ` +
  `defaults (64 MiB, every 512 positions and at the ends of turns); medians of ${rounds} ` +
  `rounds; the same answers (checked). One checkpoint: ${mib(checkpointInfo.oneBytes)} MiB; ` +
  `the session held ${checkpointInfo.count} (${mib(checkpointInfo.heldBytes)} MiB) at ` +
  `positions ${checkpointInfo.positions.join(", ")}.`,
  "",
  "| task | threads | tokens evaluated: without | with | first token without (ms) | with (ms) | speed-up |",
  "|---|---|---|---|---|---|---|",
  ...rows.map((r) =>
    `| ${r.task} | ${r.threads} | ${r.evaluatedOff} | ${r.evaluatedOn} | ${
      r.ttftOffMs.toFixed(0)
    } | ${r.ttftOnMs.toFixed(0)} | ${r.speedup.toFixed(1)}x |`
  ),
].join("\n");
console.log(table);
const json = {
  bench: "checkpoints",
  model: modelLabel,
  contextTokens,
  rounds,
  ...info,
  checkpoint: checkpointInfo,
  rows,
};
if (values.json) console.log(JSON.stringify(json));
if (values.save) saveResults(`checkpoints-${runtime}`, table, json);
