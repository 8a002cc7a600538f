// cli.ts quantize: a model written as a GGUF file, for this engine or llama.cpp.

import process from "node:process";
import { parseArgs } from "node:util";
import { EXPORT_TYPES, exportGguf, type ExportType } from "../mod.ts";
import { mibText, progressPrinter, UsageError } from "./args.ts";

export const HELP = `Usage: cli.ts quantize <model> <out.gguf> --type <format> [options]

Writes the model as a GGUF file that this engine and llama.cpp both load: the config, the
tokenizer and every tensor under llama.cpp's names. The model is streamed, never held whole.

  <model>                       Hugging Face folder, .gguf file, or Hub repository name
  --type <format>               f32, bf16, q8_0, q4_0, q5_0, q4_k or q6_k. Rows that do not fill
                                a 256-block fall back as llama-quantize does (q4_k → q5_0,
                                q6_k → q8_0); norm weights stay f32
  --head-type <format>          The embedding/output head's format (default: q8_0 for q4_0,
                                q6_k for q4_k, else --type). The head is ~63% of the bytes a
                                token reads, so this choice matters for speed and quality
  --tokenizer <path>            Where the tokenizer comes from if <model> has none
                                (tokenizer.json, a folder with one, or a .gguf)
  --name <text>                 general.name to record (default: the model's folder name)
      --revision <rev>          Hub branch, tag or commit (default main)
  -q, --quiet                   No progress on stderr
  -h, --help                    Show this help

Example:
  deno run -A cli.ts quantize unsloth/gemma-3-270m-it gemma-3-270m-q4_0.gguf --type q4_0
`;

export async function quantize(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      type: { type: "string" },
      "head-type": { type: "string" },
      tokenizer: { type: "string" },
      name: { type: "string" },
      revision: { type: "string" },
      quiet: { type: "boolean", short: "q" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  if (positionals.length !== 2) {
    throw new UsageError("quantize needs <model> and <out.gguf> (see --help)");
  }
  const [source, out] = positionals;
  if (!/\.gguf$/i.test(out)) throw new UsageError(`${out}: the output file name must end in .gguf`);
  for (const flag of ["type", "head-type"] as const) {
    const v = values[flag];
    if (v !== undefined && !(EXPORT_TYPES as readonly string[]).includes(v)) {
      throw new UsageError(`--${flag}: "${v}" is not a format (${EXPORT_TYPES.join(", ")})`);
    }
  }
  if (!values.type) throw new UsageError(`quantize needs --type (${EXPORT_TYPES.join(", ")})`);
  const quiet = !!values.quiet;
  const bar = progressPrinter(quiet);
  const t0 = performance.now();
  const result = await exportGguf(source, out, {
    type: values.type as ExportType,
    headType: values["head-type"] as ExportType | undefined,
    tokenizer: values.tokenizer,
    name: values.name,
    revision: values.revision,
    onProgress: bar &&
      ((p) =>
        bar({
          phase: "load",
          loadedBytes: p.writtenBytes,
          totalBytes: p.totalBytes,
          label: "writing",
        })),
  });
  if (!quiet) {
    process.stderr.write(
      `wrote ${out}: ${result.tensors} tensors, ${mibText(result.bytes)} in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s\n`,
    );
  }
}
