// cli.ts serve's page: the demo in web/ at "/", and the model file the server was started with at
// "models/<file name>" (with Range requests), so that the page can load it by a relative URL. Both
// come with Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy, which make the page
// cross-origin isolated: without them a browser gives it no SharedArrayBuffer, and so one thread.

import { open, stat } from "node:fs/promises";
import { basename } from "node:path";

/** The headers that make a page cross-origin isolated (and its resources loadable there). */
export const ISOLATION_HEADERS: Record<string, string> = {
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-embedder-policy": "require-corp",
  "cross-origin-resource-policy": "same-origin",
};

const PAGE_FILES: Record<string, string> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "worker.js": "text/javascript; charset=utf-8",
  "gemma3.js": "text/javascript; charset=utf-8",
  "gemma3.js.map": "application/json",
};

/**
 * A handler for the page's paths, or null for any other path (the API's). `modelFile` is the
 * local GGUF file to offer at models/, if the server runs one.
 */
export function pageHandler(
  modelFile: string | undefined,
): (req: Request) => Promise<Response> | null {
  const modelName = modelFile && /\.gguf$/i.test(modelFile) ? basename(modelFile) : undefined;
  return (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") return null;
    const path = new URL(req.url).pathname;
    const file = path === "/" ? "index.html" : path.slice(1);
    if (file in PAGE_FILES) return pageFile(file);
    if (path === "/models/") {
      return Promise.resolve(
        Response.json(modelName ? [`models/${encodeURIComponent(modelName)}`] : [], {
          headers: ISOLATION_HEADERS,
        }),
      );
    }
    if (modelName && path === `/models/${encodeURIComponent(modelName)}`) {
      return fileResponse(modelFile!, req);
    }
    return null;
  };
}

/** One of web/'s files, read next to this module (a file, or a URL when cli.ts runs from one). */
export async function pageFile(name: string): Promise<Response> {
  if (!(name in PAGE_FILES)) throw new Error(`${name} is not one of the page's files`);
  const url = new URL(`../web/${name}`, import.meta.url);
  let body: BodyInit;
  if (url.protocol === "file:") {
    const handle = await open(url);
    try {
      body = new Uint8Array(await handle.readFile());
    } finally {
      await handle.close();
    }
  } else {
    const res = await fetch(url);
    if (!res.ok) return new Response(`cannot fetch ${url}: HTTP ${res.status}`, { status: 502 });
    body = await res.arrayBuffer();
  }
  return new Response(body, {
    headers: {
      "content-type": PAGE_FILES[name],
      "cache-control": "no-cache",
      ...ISOLATION_HEADERS,
    },
  });
}

/** A local file, whole or (with a Range header) in part, streamed. */
export async function fileResponse(path: string, req: Request): Promise<Response> {
  const { size, mtimeMs } = await stat(path);
  const headers: Record<string, string> = {
    "content-type": "application/octet-stream",
    "accept-ranges": "bytes",
    etag: `"${size.toString(16)}-${Math.floor(mtimeMs).toString(16)}"`,
    ...ISOLATION_HEADERS,
  };
  let start = 0, end = size - 1, status = 200;
  const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.get("range") ?? "");
  if (range && (range[1] || range[2])) {
    start = range[1] ? Number(range[1]) : Math.max(0, size - Number(range[2]));
    end = range[1] && range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
    if (start > end || start >= size) {
      return new Response(null, {
        status: 416,
        headers: { ...headers, "content-range": `bytes */${size}` },
      });
    }
    status = 206;
    headers["content-range"] = `bytes ${start}-${end}/${size}`;
  }
  headers["content-length"] = String(end - start + 1);
  if (req.method === "HEAD") return new Response(null, { status, headers });
  const handle = await open(path, "r");
  let pos = start;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const want = Math.min(1 << 20, end + 1 - pos);
      if (want <= 0) {
        await handle.close();
        return controller.close();
      }
      const buf = new Uint8Array(want);
      const { bytesRead } = await handle.read(buf, 0, want, pos);
      if (bytesRead === 0) {
        await handle.close();
        return controller.error(new Error(`${path}: shorter than when it was opened`));
      }
      pos += bytesRead;
      controller.enqueue(buf.subarray(0, bytesRead));
    },
    async cancel() {
      await handle.close();
    },
  });
  return new Response(body, { status, headers });
}
