// engine/node_builtins.ts as the browser build sees it (web/build.ts maps one to the other): a
// browser has no Node built-ins, so each import fails at once, with the reason, and no request
// for a "node:" URL is ever made.

const absent = (name: string) => (): Promise<never> =>
  Promise.reject(new Error(`${name} is not available in the browser build`));

/** node:fs/promises (absent). */
export const nodeFs: () => Promise<typeof import("node:fs/promises")> = absent("node:fs");
/** node:crypto (absent). */
export const nodeCrypto: () => Promise<typeof import("node:crypto")> = absent("node:crypto");
/** node:worker_threads (absent). */
export const nodeWorkerThreads: () => Promise<typeof import("node:worker_threads")> = absent(
  "node:worker_threads",
);
