// The Node built-in modules the engine uses, each imported lazily and only here: files
// (node:fs/promises), hashing a downloaded file (node:crypto) and workers that can be unref'd
// (node:worker_threads). Deno, Bun and Node provide all three. The browser build replaces this
// file with web/no_node_builtins.ts (web/build.ts's import map), so no Node-only import is left
// in the bundle.

/** node:fs/promises. */
export const nodeFs = (): Promise<typeof import("node:fs/promises")> => import("node:fs/promises");

/** node:crypto. */
export const nodeCrypto = (): Promise<typeof import("node:crypto")> => import("node:crypto");

/** node:worker_threads. */
export const nodeWorkerThreads = (): Promise<typeof import("node:worker_threads")> =>
  import("node:worker_threads");
