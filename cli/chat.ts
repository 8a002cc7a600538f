// cli.ts chat: an interactive conversation; the KV cache is kept between turns.

import process from "node:process";
import { createInterface } from "node:readline";
import { setImmediate } from "node:timers";
import { parseArgs } from "node:util";
import {
  contextLength,
  MODEL_HELP,
  modelOptions,
  openModel,
  OUTPUT_HELP,
  outputOptions,
  rate,
  sampling,
  SAMPLING_HELP,
  samplingOptions,
  UsageError,
} from "./args.ts";

export const HELP = `Usage: cli.ts chat [options]

Interactive chat. Type a message and press Enter. Commands: /reset (start over), /exit (or
Ctrl-D). Ctrl-C stops the current answer; a second Ctrl-C at the prompt exits. The KV cache is
kept between turns, so only new text is evaluated. With stdin not a terminal, each line is one
user message.

  -s, --system <text>           A system message for the conversation

${MODEL_HELP}

${SAMPLING_HELP}

${OUTPUT_HELP}
      (chat --json: one JSON line per answer)
`;

export async function chat(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      ...modelOptions,
      ...samplingOptions,
      ...outputOptions,
      system: { type: "string", short: "s" },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  if (positionals.length) {
    throw new UsageError(
      `chat takes no arguments (got "${positionals[0]}"); type messages after it starts`,
    );
  }
  const interactive = !!process.stdin.isTTY;
  const quiet = !!(values.quiet || values.json);
  const model = await openModel(values, quiet);
  const session = model.createSession({ contextLength: contextLength(values) });
  const options = sampling(values, model.generationDefaults, undefined);
  const start = values.system ? [{ role: "system", content: values.system }] : [];
  let messages = [...start];
  let stop: AbortController | null = null;
  const onInterrupt = () => {
    if (stop) stop.abort();
    else {
      process.stdout.write("\n");
      process.exit(130);
    }
  };
  process.on("SIGINT", onInterrupt);
  const rl = createInterface({ input: process.stdin, terminal: false });
  const prompt = () => interactive && process.stdout.write("> ");
  if (interactive && !quiet) {
    process.stderr.write("Type a message; /reset to start over, /exit to quit.\n");
  }
  prompt();
  try {
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === "/exit" || line === "/quit") break;
      if (line === "/reset") {
        messages = [...start];
        session.reset();
        if (!values.json) process.stdout.write("(conversation reset)\n");
        prompt();
        continue;
      }
      if (line === "") {
        prompt();
        continue;
      }
      messages.push({ role: "user", content: line });
      stop = new AbortController();
      let answer = "";
      const t0 = performance.now();
      let stopped = false;
      try {
        for await (
          const piece of model.chat(messages, { ...options, session, stop: values.stop })
        ) {
          answer += piece;
          if (!values.json) process.stdout.write(piece);
          // Generation runs on microtasks; let the SIGINT handler (a macrotask) run between pieces.
          await new Promise((r) => setImmediate(r));
          if (stop.signal.aborted) {
            stopped = true;
            break;
          }
        }
      } catch (e) {
        messages.pop();
        stop = null;
        process.stderr.write(`error: ${(e as Error).message}\n`);
        prompt();
        continue;
      }
      stop = null;
      const ms = performance.now() - t0;
      messages.push({ role: "assistant", content: answer });
      if (values.json) process.stdout.write(JSON.stringify({ answer, stopped }) + "\n");
      else process.stdout.write(stopped ? " [stopped]\n" : "\n");
      if (!quiet && interactive) {
        const n = model.tokenizer.encode(answer, { addBos: false }).length;
        process.stderr.write(
          `(${n} tokens, ${
            rate(n, ms)
          } tok/s, context ${session.position}/${session.contextLength})\n`,
        );
      }
      prompt();
    }
  } finally {
    process.off("SIGINT", onInterrupt);
    rl.close();
    await model.dispose();
  }
}
