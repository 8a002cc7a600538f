// cli.ts tokenize: text to token ids, or ids back to text.

import process from "node:process";
import { parseArgs } from "node:util";
import { loadTokenizer } from "../mod.ts";
import {
  DEFAULT_MODEL,
  modelOptions,
  OUTPUT_HELP,
  outputOptions,
  parseIds,
  readStdin,
  UsageError,
} from "./args.ts";

export const HELP = `Usage: cli.ts tokenize <text> [options]
       cli.ts tokenize --decode <ids> [options]

Prints the token ids of the text (space-separated), or with --json the ids and their pieces.
Without <text>, reads stdin.

      --no-bos                  Do not prepend <bos>
      --plain                   Treat special-token text (<start_of_turn>, ...) as plain text
      --decode <ids>            Decode comma-separated ids to text instead
      --skip-special            With --decode: leave out special tokens
  -m, --model <name|path|url>   Where the tokenizer.json comes from (default ${DEFAULT_MODEL}); a
                                path to a tokenizer.json works too
${OUTPUT_HELP}
`;

export async function tokenize(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      model: modelOptions.model,
      ...outputOptions,
      "no-bos": { type: "boolean" },
      plain: { type: "boolean" },
      decode: { type: "string" },
      "skip-special": { type: "boolean" },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  const tok = await loadTokenizer(values.model ?? DEFAULT_MODEL);
  if (values.decode !== undefined) {
    const ids = parseIds(values.decode, "--decode");
    const text = tok.decode(ids, { skipSpecialTokens: values["skip-special"] });
    process.stdout.write(values.json ? JSON.stringify({ ids, text }) + "\n" : text + "\n");
    return;
  }
  if (positionals.length > 1) {
    throw new UsageError(`tokenize takes one text (quote it), got ${positionals.length} arguments`);
  }
  const text = positionals[0] ?? await readStdin();
  const ids = tok.encode(text, {
    addBos: !values["no-bos"],
    specialTokens: values.plain ? "plain" : "parse",
  });
  if (values.json) {
    process.stdout.write(JSON.stringify({ ids, pieces: ids.map((id) => tok.piece(id)) }) + "\n");
  } else process.stdout.write(ids.join(" ") + "\n");
}
