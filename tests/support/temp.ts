// Temporary files and folders for the tests, removed when the test module ends: a test run
// writes model folders of up to 40 MB, and a run that leaves them behind fills /tmp. Also
// environment variables set for one module: `deno test` runs the modules in one process, so a
// cache folder named in the environment would otherwise be used, and made again, by the next.

const made: string[] = [];
const envBefore = new Map<string, string | undefined>();

// "unload" fires when `deno test` tears a test module down, also after a failed test.
addEventListener("unload", () => {
  for (const [name, value] of envBefore) {
    if (value === undefined) Deno.env.delete(name);
    else Deno.env.set(name, value);
  }
  for (const path of made) {
    try {
      Deno.removeSync(path, { recursive: true });
    } catch {
      // Already removed by the test itself.
    }
  }
});

/** A new temporary folder, removed when the test module ends. */
export async function tempDir(prefix = "gemma3-test-"): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  made.push(dir);
  return dir;
}

/** A new empty temporary file, removed when the test module ends. */
export async function tempFile(suffix: string): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "gemma3-test-", suffix });
  made.push(path);
  return path;
}

/** Sets (or, given undefined, deletes) an environment variable until the test module ends. */
export function setEnvForModule(name: string, value: string | undefined): void {
  if (!envBefore.has(name)) envBefore.set(name, Deno.env.get(name));
  if (value === undefined) Deno.env.delete(name);
  else Deno.env.set(name, value);
}
