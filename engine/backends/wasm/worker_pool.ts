// The worker pool: N - 1 workers, each running an instance of the multi-threaded kernels
// (asm/threads.ts) over the same shared WebAssembly.Memory; the calling thread is thread 0.
// Workers never return to JavaScript between ops: they wait inside WebAssembly on a counter in
// shared memory, so an op costs no message round trip (see asm/threads.ts).
//
// This is the one place that knows how each runtime makes workers: Web Workers (Deno, Bun,
// browsers) from a blob: URL, or node:worker_threads (Node) from source text. Both run the same
// few lines, so no worker file has to be found next to the module (URL imports and bundles work).

import { nodeWorkerThreads } from "../../node_builtins.ts";

/** Why threads are unavailable here, or null if they are available. */
export function threadsUnavailableReason(): string | null {
  const g = globalThis as {
    crossOriginIsolated?: boolean;
    SharedArrayBuffer?: unknown;
    Worker?: unknown;
    process?: { versions?: { node?: string } };
  };
  // First: a page that is not cross-origin isolated has no SharedArrayBuffer either, and the
  // useful thing to say is how to fix that.
  if (g.crossOriginIsolated === false) {
    return "the page is not cross-origin isolated: serve it with the headers " +
      "Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp";
  }
  if (typeof g.SharedArrayBuffer !== "function") return "SharedArrayBuffer is not available";
  if (typeof g.Worker !== "function" && !g.process?.versions?.node) {
    return "this runtime has no workers";
  }
  return null;
}

/** Test hooks: code run at the start of each worker (e.g. one that throws, to test failures). */
export const workerTestHooks = { prelude: "" };

interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctrl: number;
  index: number;
  threads: number;
  generation: number;
}

/**
 * The body every worker runs: instantiate the kernels, report ready, run `loop` until the exit
 * op, report. `post` sends a message to the creating thread.
 */
function workerBody(loop: string): string {
  return `
async function start(init, post) {
  try {
    ${workerTestHooks.prelude}
    const instance = await WebAssembly.instantiate(init.module, { env: { memory: init.memory } });
    post({ ready: true });
    ${loop}
    post({ exited: true });
  } catch (e) {
    post({ error: String(e && e.message || e) });
  }
}`;
}

/** Deno, Bun, browsers: the whole loop runs inside WebAssembly (asm/threads.ts workerLoop). */
const WASM_LOOP =
  "instance.exports.workerLoop(init.ctrl, init.index, init.threads, init.generation);";

/**
 * Node 20: its V8 (11.3) runs workerLoop's wait loop wrongly in its baseline wasm compiler (a
 * woken worker never picks up the op; with --no-liftoff it does), so on Node the waiting is done
 * here, with the same spin-then-wait on the same counter, and each op is one call of workerStep.
 */
const NODE_LOOP = `
    const generation = new Int32Array(init.memory.buffer, init.ctrl, 1);
    let seen = init.generation;
    for (;;) {
      let spins = 0;
      while (Atomics.load(generation, 0) === seen) {
        if (++spins >= 200000) {
          Atomics.wait(generation, 0, seen);
          spins = 0;
        }
      }
      seen = Atomics.load(generation, 0);
      if (instance.exports.workerStep(init.ctrl, init.index, init.threads, seen) === 0) break;
    }`;

interface Handle {
  terminate(): void;
  /** Resolves when the worker has instantiated the kernels; rejects if it fails. */
  ready: Promise<void>;
}

const START_TIMEOUT_MS = 20_000;

function webWorker(init: WorkerInit): Handle {
  const code = `${workerBody(WASM_LOOP)}
self.onmessage = (e) => start(e.data, (m) => self.postMessage(m));`;
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  const w = new Worker(url, { type: "module" });
  // An idle pool must not keep the process alive (Bun's workers can be unref'd; browsers have
  // no process to keep).
  (w as { unref?: () => void }).unref?.();
  // Listeners are attached before anything is awaited (a Deno worker can lose an early message).
  const ready = new Promise<void>((resolve, reject) => {
    w.onmessage = (e: MessageEvent) => {
      if (e.data?.ready) resolve();
      else if (e.data?.error) reject(new Error(e.data.error));
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault?.();
      reject(new Error(e.message || "worker error"));
    };
  });
  w.postMessage(init);
  return { terminate: () => w.terminate(), ready: ready.finally(() => URL.revokeObjectURL(url)) };
}

async function nodeWorker(init: WorkerInit, loop: string): Promise<Handle> {
  const { Worker } = await nodeWorkerThreads();
  const code = `${workerBody(loop)}
const { parentPort, workerData } = require("node:worker_threads");
start(workerData, (m) => parentPort.postMessage(m));`;
  const w = new Worker(code, { eval: true, workerData: init });
  w.unref(); // an idle pool must not keep the process alive
  const ready = new Promise<void>((resolve, reject) => {
    w.on("message", (m: { ready?: boolean; error?: string }) => {
      if (m?.ready) resolve();
      else if (m?.error) reject(new Error(m.error));
    });
    w.on("error", (e: Error) => reject(e));
    w.on("exit", (code: number) => reject(new Error(`worker exited with code ${code}`)));
  });
  return { terminate: () => void w.terminate(), ready };
}

/** A running pool. `threads` counts the calling thread. */
export class ThreadPool {
  private constructor(readonly threads: number, private handles: Handle[]) {}

  /**
   * Starts `threads - 1` workers on `module` over `memory`, with the control block at `ctrl`.
   * Rejects with a clear error (and stops any started worker) if one fails or does not start in
   * time.
   */
  static async start(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    ctrl: number,
    threads: number,
  ): Promise<ThreadPool> {
    // Deno's Web Workers cannot be unref'd (a pool left undisposed would keep the process alive
    // for ever), its node:worker_threads can: Deno uses those, with the WebAssembly wait loop.
    // Node uses them too, with its own loop; Bun and browsers use Web Workers.
    const g = globalThis as { Worker?: unknown; Deno?: unknown; process?: unknown };
    const denoNode = g.Deno !== undefined && g.process !== undefined;
    const useWeb = typeof g.Worker === "function" && !denoNode;
    const handles: Handle[] = [];
    try {
      for (let index = 1; index < threads; index++) {
        const init = { module, memory, ctrl, index, threads, generation: 0 };
        handles.push(
          useWeb ? webWorker(init) : await nodeWorker(init, denoNode ? WASM_LOOP : NODE_LOOP),
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`workers did not start within ${START_TIMEOUT_MS / 1000} s`)),
          START_TIMEOUT_MS,
        );
      });
      try {
        await Promise.race([
          Promise.all(handles.map((h, i) =>
            h.ready.catch((e: Error) => {
              throw new Error(`worker thread ${i + 1} of ${threads} failed to start: ${e.message}`);
            })
          )),
          timeout,
        ]);
      } finally {
        clearTimeout(timer);
      }
    } catch (e) {
      for (const h of handles) h.terminate();
      throw e;
    }
    return new ThreadPool(threads, handles);
  }

  /** Stops the workers (they are idle between ops, so terminating them is safe). */
  terminate(): void {
    for (const h of this.handles) h.terminate();
    this.handles = [];
  }
}
