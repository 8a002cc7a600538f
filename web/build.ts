/**
 * Builds the browser bundle: web/gemma3.js (one minified ES module, everything mod.ts exports,
 * the WebAssembly kernels inside) and web/gemma3.js.map (its source map, back to the TypeScript).
 * Both are committed, like the wasm, so that a page or a CDN serving the repository needs no build.
 *
 *   deno task build-web          rewrite the two files
 *   deno task check-web          build in a temporary folder and fail if a committed file differs
 *
 * The bundler is Deno's own (`deno bundle`, esbuild inside). web/import_map.json swaps
 * engine/node_builtins.ts for web/no_node_builtins.ts, so the bundle has no Node-only import; the
 * check below fails if one creeps back in. Run it with the Deno that deno.json's tasks name
 * (2.9.6): another version's esbuild may write different (valid) bytes.
 */

const web = new URL("./", import.meta.url);
const root = new URL("../", web);
const OUTPUT = "gemma3.js";

async function bundle(outDir: string): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform=browser",
      "--format=esm",
      "--minify",
      "--sourcemap=linked",
      "--import-map",
      new URL("import_map.json", web).pathname,
      "-o",
      `${outDir}/${OUTPUT}`,
      "mod.ts",
    ],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`deno bundle failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  const js = await Deno.readTextFile(`${outDir}/${OUTPUT}`);
  const nodeImport = js.match(
    /\bimport\s*\(\s*["']node:[^"']*["']\s*\)|from\s*["']node:[^"']*["']/,
  );
  if (nodeImport) throw new Error(`the browser bundle imports a Node built-in: ${nodeImport[0]}`);
}

if (import.meta.main) {
  // Built in place either way: the source map names its sources relative to the bundle's folder.
  const dir = new URL(".", web).pathname;
  const names = [OUTPUT, `${OUTPUT}.map`];
  if (Deno.args.includes("--check")) {
    const committed = await Promise.all(
      names.map((n) => Deno.readFile(new URL(n, web)).catch(() => null)),
    );
    try {
      await bundle(dir);
      const stale: string[] = [];
      for (const [i, name] of names.entries()) {
        const fresh = await Deno.readFile(new URL(name, web));
        const old = committed[i];
        if (!old || old.length !== fresh.length || !old.every((b, j) => b === fresh[j])) {
          stale.push(`web/${name}`);
        }
      }
      if (stale.length) {
        console.error(`stale: ${stale.join(", ")}; run: deno task build-web`);
        Deno.exitCode = 1;
      } else console.log(`web/${OUTPUT} is up to date with the sources`);
    } finally {
      // The check leaves the committed files as they were.
      for (const [i, name] of names.entries()) {
        const old = committed[i];
        if (old) await Deno.writeFile(new URL(name, web), old);
        else await Deno.remove(new URL(name, web)).catch(() => {});
      }
    }
  } else {
    await bundle(dir);
    const size = (await Deno.stat(new URL(OUTPUT, web))).size;
    console.log(`wrote web/${OUTPUT} (${(size / 1024).toFixed(0)} KiB) and its source map`);
  }
}
