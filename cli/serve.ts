// cli.ts serve: the OpenAI-compatible API (mod.ts createHandler) on a local port. The one place
// that starts an HTTP server: Deno.serve, Bun.serve, or node:http through a small adapter.

import process from "node:process";
import { parseArgs } from "node:util";
import { CHECKPOINT_DEFAULTS, createHandler } from "../mod.ts";
import { pageHandler } from "./web_page.ts";
import {
  contextLength,
  lookupFlag,
  MODEL_HELP,
  modelOptions,
  openModel,
  parseNumber,
  UsageError,
} from "./args.ts";

export const HELP = `Usage: cli.ts serve [options]

Serves the model over an OpenAI-compatible HTTP API (llama-server's routes): POST
/v1/chat/completions and /v1/completions (streaming with "stream": true), GET /v1/models,
/health, /props and /metrics (Prometheus), POST /tokenize, /detokenize and /apply-template.
Prints the URL once the model is loaded. Ctrl-C lets running requests finish, then exits.

At / it serves the demo chat page (web/), which runs the engine in the browser itself, with the
headers that give it threads (Cross-Origin-Opener-Policy and -Embedder-Policy); a .gguf model
file the server runs is offered to the page at /models/<file name>.

Server:
      --host <addr>             Address to listen on (default 127.0.0.1: this machine only)
      --port <n>                Port (default 8080; 0 picks a free one)
      --parallel <n>            Requests served at once, each with its own KV cache (default 4)
      --max-queue <n>           Requests waiting for a slot before 503 (default 64)
      --max-body <size>         Largest request body (default 1MiB; bytes, or KiB / MiB); larger
                                gets 413
      --api-key <key>           Require "Authorization: Bearer <key>" (or set GEMMA_API_KEY)
      --cors-origin <origin>    Allow browser pages from this origin ("*" for any)
      --name <id>               The model's id in /v1/models (default gemma-3)
      --checkpoint-memory <size>  Each slot's sliding-window checkpoints (default 64MiB; 0:
                                none): a conversation that regenerates or edits its last turn
                                resumes from one instead of evaluating everything again
      --lookup <n,k>            Prompt-lookup decoding for requests that do not set
                                "speculative" (e.g. 3,8: up to 8 tokens drafted after a match
                                of 3); the same answers, sooner where they copy the prompt
      --context-length is per slot here (default 4096).

${MODEL_HELP}

  -q, --quiet                   No progress on stderr
  -h, --help                    Show this help

Example:
  deno run -A cli.ts serve --model gemma-3-270m-q4_k_m.gguf --port 8080
  curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"messages":[{"role":"user","content":"Hi!"}],"max_tokens":32}'
`;

/** A size in bytes: a number, or with KiB / MiB / kB / MB after it; at least `min`. */
function sizeFlag(v: string | undefined, flag: string, fallback: number, min = 1): number {
  if (v === undefined) return fallback;
  const m = /^(\d+(?:\.\d+)?)\s*(|b|kib|mib|kb|mb)$/i.exec(v.trim());
  const unit =
    { "": 1, b: 1, kib: 1024, mib: 1 << 20, kb: 1000, mb: 1e6 }[m?.[2].toLowerCase() ?? ""];
  const n = m && unit ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!(n >= min)) {
    throw new UsageError(`${flag} must be a size such as 1048576, 512KiB or 1MiB, got ${v}`);
  }
  return n;
}

function intFlag(v: string | undefined, flag: string, fallback: number, min: number): number {
  const n = parseNumber(v, flag, true) ?? fallback;
  if (n < min) throw new UsageError(`${flag} must be an integer >= ${min}, got ${v}`);
  return n;
}

export async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      ...modelOptions,
      host: { type: "string" },
      port: { type: "string" },
      parallel: { type: "string" },
      "max-queue": { type: "string" },
      "max-body": { type: "string" },
      "api-key": { type: "string" },
      "cors-origin": { type: "string" },
      name: { type: "string" },
      lookup: { type: "string" },
      "checkpoint-memory": { type: "string" },
      quiet: { type: "boolean", short: "q" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return void process.stdout.write(HELP);
  const host = values.host ?? "127.0.0.1";
  const port = intFlag(values.port, "--port", 8080, 0);
  const options = {
    parallel: intFlag(values.parallel, "--parallel", 4, 1),
    maxQueue: intFlag(values["max-queue"], "--max-queue", 64, 0),
    maxBodyBytes: sizeFlag(values["max-body"], "--max-body", 1 << 20),
    apiKey: values["api-key"] ?? process.env.GEMMA_API_KEY,
    corsOrigin: values["cors-origin"],
    modelName: values.name,
    speculative: lookupFlag(values.lookup),
    checkpoints: {
      budgetBytes: sizeFlag(
        values["checkpoint-memory"],
        "--checkpoint-memory",
        CHECKPOINT_DEFAULTS.budgetBytes,
        0,
      ),
    },
    contextLength: contextLength(values),
  };
  const model = await openModel(values, !!values.quiet);
  const api = createHandler(model, options);
  const page = pageHandler(values.model);
  const handler = (req: Request) => page(req) ?? api(req);
  const server = await listen(handler, host, port);
  const props = await (await handler(
    new Request("http://localhost/props", {
      headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
    }),
  )).json();
  if (props.slots_note) process.stderr.write(`note: ${props.slots_note}\n`);
  process.stdout.write(
    `listening on http://${host.includes(":") ? `[${host}]` : host}:${server.port}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.stderr.write("finishing running requests...\n");
      server.close().then(resolve);
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  await model.dispose();
}

/** Starts an HTTP server for a fetch handler on this runtime. */
async function listen(
  handler: (req: Request) => Promise<Response>,
  hostname: string,
  port: number,
): Promise<{ port: number; close(): Promise<void> }> {
  const g = globalThis as {
    Deno?: {
      serve(
        o: unknown,
        h: (req: Request, info: { completed?: Promise<void> }) => Promise<Response>,
      ): { addr: { port: number }; shutdown(): Promise<void> };
    };
    Bun?: { serve(o: unknown): { port: number; stop(closeActive?: boolean): Promise<void> } };
  };
  if (g.Deno) {
    // Deno's request.signal also aborts once a response is sent (and says so on stderr); the
    // handler needs it to mean "the client went away", which `completed` rejecting says.
    const s = g.Deno.serve({ hostname, port, onListen() {} }, (req, info) => {
      const gone = new AbortController();
      info.completed?.catch(() => gone.abort());
      return handler(
        new Request(req.url, {
          method: req.method,
          headers: req.headers,
          body: req.body,
          signal: gone.signal,
          // @ts-ignore: a streamed body needs this (not in every runtime's RequestInit type)
          duplex: "half",
        }),
      );
    });
    return { port: s.addr.port, close: () => s.shutdown() };
  }
  if (g.Bun) {
    const s = g.Bun.serve({ hostname, port, fetch: handler, idleTimeout: 0 });
    return { port: s.port, close: () => s.stop(false) };
  }
  // Node: node:http, each request turned into a Request and the Response streamed back.
  const http = await import("node:http");
  const { Readable } = await import("node:stream");
  const server = http.createServer(async (req, res) => {
    const abort = new AbortController();
    res.on("close", () => abort.abort());
    const body = req.method === "GET" || req.method === "HEAD" ? undefined : Readable.toWeb(req);
    const request = new Request(`http://${req.headers.host ?? "localhost"}${req.url}`, {
      method: req.method,
      headers: req.headers as Record<string, string>,
      body: body as ReadableStream<Uint8Array> | undefined,
      signal: abort.signal,
      // @ts-ignore: Node's fetch needs this for a streamed body
      duplex: "half",
    });
    const response = await handler(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    if (!response.body) return void res.end();
    try {
      for await (const chunk of response.body) res.write(chunk);
    } catch { /* the client went away */ }
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(port, hostname, resolve));
  const address = server.address() as { port: number };
  return {
    port: address.port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
