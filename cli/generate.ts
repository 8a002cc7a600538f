// cli.ts generate: token ids in, token ids out (no tokenizer needed).

import process from "node:process";
import { parseArgs } from "node:util";
import {
  contextLength,
  MODEL_HELP,
  modelOptions,
  openModel,
  OUTPUT_HELP,
  outputOptions,
  parseIds,
  runStats,
  sampling,
  SAMPLING_HELP,
  samplingOptions,
  statsLine,
  UsageError,
} from "./args.ts";

export const HELP = `Usage: cli.ts generate --model <folder|url> --tokens <ids> [options]

Evaluates the prompt token ids and streams generated token ids to stdout, space-separated.
Needs no tokenizer, so it runs any checkpoint, e.g. the test fixture:

  deno run -A cli.ts generate --model tests/fixtures/tiny-a --tokens 2,17,42 -n 24

  -t, --tokens <ids>            Prompt token ids, comma-separated. Required.
      --stop <ids>              Comma-separated stop ids (default: the model's EOS ids)
      --ignore-eos              Do not stop at EOS tokens

${MODEL_HELP}

${SAMPLING_HELP}
      (generate: --max-tokens defaults to 32, --temperature to 0)

${OUTPUT_HELP}
`;

export async function generate(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      ...modelOptions,
      ...samplingOptions,
      ...outputOptions,
      tokens: { type: "string", short: "t" },
      stop: { type: "string" },
      "ignore-eos": { type: "boolean" },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  if (!values.model) throw new UsageError("generate needs --model <folder|url|name> (see --help)");
  if (!values.tokens) throw new UsageError("generate needs --tokens <ids>, e.g. --tokens 2,17,42");
  const prompt = parseIds(values.tokens, "--tokens");
  const options = sampling(values, { temperature: 0 }, 32);
  if (values.stop !== undefined) options.stopTokens = parseIds(values.stop, "--stop");
  if (values["ignore-eos"]) options.stopTokens = [];
  const quiet = !!(values.quiet || values.json);
  const t0 = performance.now();
  const model = await openModel(values, quiet);
  const loadMs = performance.now() - t0;
  try {
    const session = model.createSession({ contextLength: contextLength(values) });
    const t1 = performance.now();
    await session.eval(prompt);
    const prefillMs = performance.now() - t1;
    const out: number[] = [];
    const t2 = performance.now();
    for await (const id of session.generate([], options)) {
      out.push(id);
      if (!values.json) process.stdout.write(`${out.length > 1 ? " " : ""}${id}`);
    }
    const decodeMs = performance.now() - t2;
    const stats = runStats(loadMs, prompt.length, prefillMs, out.length, decodeMs, model.threads);
    if (values.json) process.stdout.write(JSON.stringify({ prompt, tokens: out, ...stats }) + "\n");
    else {
      process.stdout.write("\n");
      if (!quiet) process.stderr.write(statsLine(stats));
    }
  } finally {
    await model.dispose();
  }
}
