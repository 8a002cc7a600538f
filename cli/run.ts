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
import { StopStrings } from "../mod.ts";

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
    const t1 = performance.now();
    await session.eval(ids);
    const prefillMs = performance.now() - t1;
    const decoder = tok.streamDecoder({ skipSpecialTokens: true });
    const stopTokens = options.stopTokens ?? model.defaultStopTokens;
    const stops = new StopStrings(values.stop);
    let text = "";
    let n = 0;
    const t2 = performance.now();
    for await (const id of session.generate([], { ...options, stopTokens })) {
      n++;
      const piece = stops.push(decoder.push(id));
      text += piece;
      if (!values.json && piece) process.stdout.write(piece);
      if (stops.stopped) break;
    }
    const tail = stops.push(decoder.flush()) + stops.flush(); // "" once stopped
    text += tail;
    const decodeMs = performance.now() - t2;
    const stats = runStats(loadMs, ids.length, prefillMs, n, decodeMs, model.threads);
    if (values.json) process.stdout.write(JSON.stringify({ text, ...stats }) + "\n");
    else {
      process.stdout.write(tail + "\n");
      if (!quiet) process.stderr.write(statsLine(stats));
    }
  } finally {
    await model.dispose();
  }
}
