// `cli.ts serve` as a child process, for tests that talk to it over sockets: started on a free
// port, its URL read from the first line it prints.

import { ok } from "node:assert/strict";

export interface CliServer {
  child: Deno.ChildProcess;
  url: string;
  port: number;
  /** Ends it (SIGINT: it finishes its requests and exits; SIGKILL: at once) and waits. Returns
   * its exit status and, when stderr was piped, what it wrote there. */
  stop(signal?: "SIGINT" | "SIGKILL"): Promise<{ status: Deno.CommandStatus; stderr: string }>;
}

/** Starts `cli.ts serve` with these arguments (besides `--port 0`). */
export async function startCliServer(
  args: string[],
  stderr: "piped" | "null" = "null",
): Promise<CliServer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../../cli.ts", import.meta.url).pathname,
      "serve",
      "--port",
      "0",
      ...args,
    ],
    stdout: "piped",
    stderr,
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await lines.read();
  const url = /listening on (http:\/\/\S+)/.exec(value ?? "")?.[1];
  ok(url, `the first line names the URL: ${JSON.stringify(value)}`);
  return {
    child,
    url,
    port: Number(new URL(url).port),
    async stop(signal = "SIGINT") {
      child.kill(signal);
      const status = await child.status;
      lines.releaseLock();
      await child.stdout.cancel().catch(() => {});
      const text = stderr === "piped"
        ? new TextDecoder().decode(await new Response(child.stderr).arrayBuffer())
        : "";
      return { status, stderr: text };
    },
  };
}
