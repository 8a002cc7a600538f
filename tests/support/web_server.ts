// A static server for the browser tests: the demo page (web/, as cli.ts serve sends it) and model
// files under /models/, with or without the cross-origin isolation headers, with an optional
// Content-Security-Policy, counting the requests for each path.

import { fileResponse, ISOLATION_HEADERS, pageFile } from "../../cli/web_page.ts";

export interface WebServerOptions {
  /** Send COOP/COEP (default true). */
  isolated?: boolean;
  /** A Content-Security-Policy header for every response. */
  csp?: string;
  /** URL path under /models/ → local file. */
  files: Record<string, string>;
}

export interface WebServer {
  url: string;
  /** Requests seen per path. */
  hits: Map<string, number>;
  close(): Promise<void>;
}

export function startWebServer(options: WebServerOptions): WebServer {
  const hits = new Map<string, number>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    let res: Response;
    const name = path.startsWith("/models/") ? decodeURIComponent(path.slice(8)) : undefined;
    if (name !== undefined && options.files[name]) {
      res = await fileResponse(options.files[name], req);
    } else if (name !== undefined) res = new Response("not found", { status: 404 });
    else {
      try {
        res = await pageFile(path === "/" ? "index.html" : path.slice(1));
      } catch {
        res = new Response("not found", { status: 404 });
      }
    }
    const headers = new Headers(res.headers);
    if (options.isolated === false) {
      for (const h of Object.keys(ISOLATION_HEADERS)) headers.delete(h);
    } else for (const [h, v] of Object.entries(ISOLATION_HEADERS)) headers.set(h, v);
    if (options.csp) headers.set("content-security-policy", options.csp);
    return new Response(res.body, { status: res.status, headers });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/`,
    hits,
    close: () => server.shutdown(),
  };
}
