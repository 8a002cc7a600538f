// cli.ts run: one prompt answered with the chat template, streamed to stdout.

import process from "node:process";
import { parseArgs } from "node:util";
import {
  contextLength,
  MODEL_HELP,
  modelOptions,
  openModel,
  OUTPUT_HELP,
  outputOptions,
  readStdin,
  runStats,
  sampling,
  SAMPLING_HELP,
  samplingOptions,
  statsLine,
  UsageError,
} from "./args.ts";
import { generateText } from "../mod.ts";

export const HELP = `Usage: cli.ts run [prompt] [options]

Answers one prompt with the model's chat template and streams the answer to stdout. Without a
prompt argument (or with "-") the prompt is read from stdin. A stats line (prefill and decode
tokens/s) goes to stderr.

  -s, --system <text>           A system message
      --raw                     No chat template: continue the prompt text as is

${MODEL_HELP}

${SAMPLING_HELP}
      (run: --max-tokens defaults to 512)

${OUTPUT_HELP}

Example:
  deno run -A cli.ts run "Why is the sky blue?" --temperature 0
`;

export async function run(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      ...modelOptions,
      ...samplingOptions,
      ...outputOptions,
      system: { type: "string", short: "s" },
      raw: { type: "boolean" },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  if (positionals.length > 1) {
    throw new UsageError(`run takes one prompt (quote it), got ${positionals.length} arguments`);
  }
  let prompt = positionals[0];
  if (prompt === undefined || prompt === "-") {
    if (process.stdin.isTTY) {
      throw new UsageError(
        'run needs a prompt: cli.ts run "Why is the sky blue?" (or pipe one to stdin)',
      );
    }
    prompt = await readStdin();
  }
  if (prompt.trim() === "") throw new UsageError("the prompt is empty");
  const quiet = !!(values.quiet || values.json);
  const t0 = performance.now();
  const model = await openModel(values, quiet);
  const loadMs = performance.now() - t0;
  try {
    const tok = model.tokenizer;
    const options = sampling(values, model.generationDefaults, 512);
    const ids = values.raw ? tok.encode(prompt) : tok.encodeChat([
      ...(values.system ? [{ role: "system", content: values.system }] : []),
      { role: "user", content: prompt },
    ]);
    const session = model.createSession({ contextLength: contextLength(values) });
    const stopTokens = options.stopTokens ?? model.defaultStopTokens;
    const answer = generateText(session, tok, ids, { ...options, stopTokens, stop: values.stop });
    let text = "";
    let r;
    while (!(r = await answer.next()).done) {
      text += r.value.text;
      if (!values.json) process.stdout.write(r.value.text);
    }
    const end = r.value;
    const stats = runStats(
      loadMs,
      ids.length,
      end.promptMs,
      end.completionTokens,
      end.generateMs,
      model.threads,
    );
    if (values.json) {
      process.stdout.write(
        JSON.stringify({ text, finishReason: end.finishReason, ...stats }) + "\n",
      );
    } else {
      process.stdout.write("\n");
      if (!quiet) {
        if (end.finishReason === "length") {
          process.stderr.write("(cut at the token limit: the answer is unfinished)\n");
        }
        process.stderr.write(statsLine(stats));
      }
    }
  } finally {
    await model.dispose();
  }
}
