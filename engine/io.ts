// The one module that touches the platform's file and network access. A model is read from a
// local path (through node:fs, which Deno, Bun and Node all provide) or from an http(s) URL
// (through fetch, which every runtime and browser has). node:fs is imported lazily, so code that
// only uses URLs runs where there is no file system (browsers, edge functions).

/** A file read by byte ranges, in any order (sequential reads are cheapest). */
export interface ByteSource {
  /** The path or URL, for messages. */
  readonly name: string;
  /** Total bytes. */
  readonly size: number;
  /** Fills `dest` with the bytes at [offset, offset + dest.length); throws if the file is shorter. */
  read(offset: number, dest: Uint8Array): Promise<void>;
  /** Releases the file handle or connection. */
  close(): Promise<void>;
}

/** Whether a source string is a URL (http, https, or a browser's blob:) rather than a path. */
export function isUrl(location: string): boolean {
  return /^(https?:\/\/|blob:)/i.test(location);
}

/** Whether a location names one GGUF file: a path or URL ending in .gguf, or a blob: URL (a
 * browser's File, or a copy in its Cache API or OPFS: one file, never a folder). */
export function isGgufLocation(location: string): boolean {
  if (/^blob:/i.test(location)) return true;
  return /\.gguf$/i.test(isUrl(location) ? new URL(location).pathname : location);
}

/**
 * Whether this is a browser (a page or a worker): no Deno, Bun or Node around it, so no file
 * system, and a relative location is a URL relative to the page.
 */
export function isBrowser(): boolean {
  const g = globalThis as {
    Deno?: unknown;
    Bun?: unknown;
    process?: { versions?: { node?: string } };
    location?: { href?: string };
  };
  return !g.Deno && !g.Bun && !g.process?.versions?.node && typeof g.location?.href === "string";
}

/** The location of `file` inside the folder `base` (a path or a URL). */
export function joinLocation(base: string, file: string): string {
  if (isUrl(base)) return new URL(file, base.endsWith("/") ? base : base + "/").href;
  return base.replace(/[\\/]+$/, "") + "/" + file;
}

import { nodeCrypto, nodeFs } from "./node_builtins.ts";

type Fs = typeof import("node:fs/promises");
let fsModule: Promise<Fs> | undefined;
function fs(): Promise<Fs> {
  // In a browser the import is not even tried (it would show as a failed request).
  fsModule ??= (isBrowser() ? Promise.reject() : nodeFs()).catch(() => {
    fsModule = undefined;
    throw new Error("this runtime has no file system access; load the model from a URL");
  });
  return fsModule;
}

/**
 * Whether a local path or URL exists (URL: answers a HEAD request with 2xx). A URL that cannot be
 * reached at all (offline, DNS, refused) is an error saying so, not a missing file.
 */
export async function exists(location: string): Promise<boolean> {
  if (isUrl(location)) {
    let res: Response;
    try {
      res = await fetch(location, { method: "HEAD" });
    } catch (e) {
      throw new Error(`cannot reach ${location}: ${(e as Error).message} (offline?)`);
    }
    await res.body?.cancel();
    return res.ok;
  }
  try {
    await (await fs()).stat(location);
    return true;
  } catch {
    return false;
  }
}

/** Whether a local path is a directory (false for URLs and missing paths). */
export async function isDirectory(location: string): Promise<boolean> {
  if (isUrl(location)) return false;
  try {
    return (await (await fs()).stat(location)).isDirectory();
  } catch {
    return false;
  }
}

/** Reads a whole (small) file as text. */
export async function readText(location: string): Promise<string> {
  if (isUrl(location)) {
    const res = await fetchOk(location);
    return await res.text();
  }
  try {
    return await (await fs()).readFile(location, "utf8");
  } catch (e) {
    throw new Error(`cannot read ${location}: ${describe(e)}`);
  }
}

/** JSON values a file read by readJson may hold (config.json holds a few dozen, Gemma's
 * tokenizer_config.json 45,000). JSON.parse of millions of tiny values is slow and large: 64 MB
 * of empty arrays took V8 8 s and 1.9 GB. Gemma's tokenizer.json holds 1.86 million; its reader
 * allows TOKENIZER_JSON_VALUES. */
export const MAX_JSON_VALUES = 1 << 20;
export const TOKENIZER_JSON_VALUES = 4 << 20;

/** Where in JSON text the value past the first `limit` begins, or -1 if it holds no more
 * (values counted as commas and opening brackets outside strings, plus one). Linear, with no
 * allocation: it runs before JSON.parse. */
export function indexPastJsonValues(text: string, limit: number): number {
  let n = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string, and its escapes.
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if ((c === 0x2c || c === 0x5b || c === 0x7b) && ++n > limit) return i;
  }
  return -1;
}

/** Parses JSON text of at most `maxValues` values; errors begin with `where`. */
export function parseJsonText(text: string, where: string, maxValues = MAX_JSON_VALUES): unknown {
  const past = indexPastJsonValues(text, maxValues);
  if (past >= 0) {
    throw new Error(
      `${where}: holds more than ${maxValues} JSON values (the one past the limit is at ` +
        `position ${past}): not a file of this kind, or corrupt`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${where}: not valid JSON (${(e as Error).message})`);
  }
}

/** Reads a whole (small) file as JSON of at most `maxValues` values; errors name the file. */
export async function readJson(location: string, maxValues = MAX_JSON_VALUES): Promise<unknown> {
  return parseJsonText(await readText(location), location, maxValues);
}

/** Hex SHA-256 of a string (WebCrypto), for cache keys. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Opens a path or URL for ranged reading. */
export async function openSource(location: string): Promise<ByteSource> {
  return isUrl(location) ? await HttpSource.open(location) : await FileSource.open(location);
}

function describe(e: unknown): string {
  const err = e as { code?: string; message?: string };
  if (err.code === "ENOENT") return "no such file";
  if (err.code === "EACCES") return "permission denied";
  if (err.code === "EISDIR") return "is a directory";
  return err.message ?? String(e);
}

class FileSource implements ByteSource {
  private constructor(
    readonly name: string,
    readonly size: number,
    private handle: Awaited<ReturnType<Fs["open"]>>,
  ) {}

  static async open(path: string): Promise<FileSource> {
    const f = await fs();
    let handle;
    try {
      handle = await f.open(path, "r");
    } catch (e) {
      throw new Error(`cannot open ${path}: ${describe(e)}`);
    }
    const { size } = await handle.stat();
    return new FileSource(path, size, handle);
  }

  async read(offset: number, dest: Uint8Array): Promise<void> {
    let done = 0;
    while (done < dest.length) {
      const { bytesRead } = await this.handle.read(dest, done, dest.length - done, offset + done);
      if (bytesRead === 0) {
        throw new Error(
          `${this.name}: unexpected end of file at byte ${offset + done} (file is truncated?)`,
        );
      }
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

async function fetchOk(url: string, init?: RequestInit): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new Error(`cannot fetch ${url}: ${(e as Error).message}`);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`cannot fetch ${url}: HTTP ${res.status} ${res.statusText}`);
  }
  return res;
}

/**
 * A URL read as one streaming GET, so that reading the tensors in file order costs one request.
 * A read behind the current position (rare) reopens the stream with a Range request.
 */
class HttpSource implements ByteSource {
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #pos = 0;
  #pending: Uint8Array = new Uint8Array(0);

  private constructor(readonly name: string, readonly size: number) {}

  static async open(url: string): Promise<HttpSource> {
    const res = await fetchOk(url);
    const len = Number(res.headers.get("content-length"));
    if (!Number.isFinite(len) || res.headers.get("content-length") === null) {
      await res.body?.cancel();
      throw new Error(`${url}: the server sent no Content-Length; cannot validate the file`);
    }
    const src = new HttpSource(url, len);
    src.#reader = res.body!.getReader();
    return src;
  }

  async #seek(offset: number): Promise<void> {
    if (offset < this.#pos || !this.#reader) {
      await this.#reader?.cancel();
      const res = await fetchOk(this.name, { headers: { Range: `bytes=${offset}-` } });
      this.#reader = res.body!.getReader();
      this.#pending = new Uint8Array(0);
      this.#pos = res.status === 206 ? offset : 0;
    }
    while (this.#pos < offset) {
      const chunk = await this.#next(offset - this.#pos);
      this.#pos += chunk.length;
    }
  }

  /** Up to `max` bytes from the stream. */
  async #next(max: number): Promise<Uint8Array> {
    if (this.#pending.length === 0) {
      const { value, done } = await this.#reader!.read();
      if (done || !value) {
        throw new Error(`${this.name}: connection ended at byte ${this.#pos} of ${this.size}`);
      }
      this.#pending = value;
    }
    const take = this.#pending.subarray(0, max);
    this.#pending = this.#pending.subarray(take.length);
    return take;
  }

  /** The last small read, kept so that reading a little behind it (a header read in a generous
   * first piece, then the data right after the header) needs no second request. */
  #recent: { offset: number; bytes: Uint8Array } | null = null;

  async read(offset: number, dest: Uint8Array): Promise<void> {
    if (offset + dest.length > this.size) {
      throw new Error(
        `${this.name}: read past the end (byte ${offset + dest.length} of ${this.size})`,
      );
    }
    let done = 0;
    const r = this.#recent;
    if (r && offset >= r.offset && offset < r.offset + r.bytes.length) {
      done = Math.min(dest.length, r.offset + r.bytes.length - offset);
      dest.set(r.bytes.subarray(offset - r.offset, offset - r.offset + done));
    }
    if (done < dest.length) {
      const streamedFrom = done;
      await this.#seek(offset + done);
      while (done < dest.length) {
        const chunk = await this.#next(dest.length - done);
        dest.set(chunk, done);
        done += chunk.length;
        this.#pos += chunk.length;
      }
      // Keep what came off the stream (reads served from the kept bytes leave them as they are).
      if (done - streamedFrom <= 4 << 20) {
        this.#recent = { offset: offset + streamedFrom, bytes: dest.slice(streamedFrom) };
      } else this.#recent = null;
    }
  }

  async close(): Promise<void> {
    await this.#reader?.cancel().catch(() => {});
    this.#reader = undefined;
  }
}

/** Size and modification time of a local file, or null if it does not exist. */
export async function fileInfo(path: string): Promise<{ size: number; mtimeMs: number } | null> {
  try {
    const s = await (await fs()).stat(path);
    return { size: s.size, mtimeMs: s.mtimeMs };
  } catch {
    return null;
  }
}

/** Reads a whole local file or URL as bytes. */
export async function readBytes(location: string): Promise<Uint8Array> {
  if (isUrl(location)) return new Uint8Array(await (await fetchOk(location)).arrayBuffer());
  try {
    return new Uint8Array(await (await fs()).readFile(location));
  } catch (e) {
    throw new Error(`cannot read ${location}: ${describe(e)}`);
  }
}

/** Writes a file atomically (temporary name, then rename), creating its folder. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const f = await fs();
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  await f.mkdir(dir, { recursive: true });
  const tmp = `${path}.${Math.random().toString(36).slice(2)}.partial`;
  await f.writeFile(tmp, bytes);
  await f.rename(tmp, path);
}

/**
 * Keeps the `keep` most recently used files ending in `suffix` in a cache folder and deletes the
 * rest (best effort: files another process removes first, or cannot be removed, are skipped).
 * "Used" is the modification time, which `markUsed` moves forward on a cache hit.
 */
export async function pruneCacheFolder(dir: string, suffix: string, keep: number): Promise<void> {
  const f = await fs();
  const names = (await f.readdir(dir).catch(() => [] as string[])).filter((n) =>
    n.endsWith(suffix)
  );
  if (names.length <= keep) return;
  const dated = await Promise.all(
    names.map(async (n) => ({
      path: `${dir}/${n}`,
      mtimeMs: await f.stat(`${dir}/${n}`).then((s) => s.mtimeMs, () => -1),
    })),
  );
  dated.sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const { path } of dated.slice(keep)) await f.rm(path, { force: true }).catch(() => {});
}

/** Marks a cached file as just used (its modification time becomes now), for pruneCacheFolder. */
export async function markUsed(path: string): Promise<void> {
  const now = new Date();
  await (await fs()).utimes(path, now, now).catch(() => {});
}

/** A file being written: bytes go to a temporary file beside it, which `commit` renames into place
 * (so a crash or an error never leaves a half-written file under the real name). */
export interface FileWriter {
  write(bytes: Uint8Array): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/** Starts writing `path` (see FileWriter). */
export async function createFileWriter(path: string): Promise<FileWriter> {
  const f = await fs();
  const dir = path.replace(/[\\/][^\\/]*$/, "");
  if (dir !== path) await f.mkdir(dir, { recursive: true });
  const tmp = `${path}.${Math.random().toString(36).slice(2)}.partial`;
  const handle = await f.open(tmp, "w");
  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      await handle.close();
    }
  };
  return {
    async write(bytes) {
      let done = 0;
      while (done < bytes.length) {
        done += (await handle.write(bytes, done, bytes.length - done)).bytesWritten;
      }
    },
    async commit() {
      await close();
      await f.rename(tmp, path);
    },
    async abort() {
      await close().catch(() => {});
      await f.rm(tmp, { force: true });
    },
  };
}

/**
 * Whether this is a Linux machine with no GPU device node (/dev/dri/renderD*, /dev/nvidia*), where
 * any WebGPU adapter would be a software one. False when it cannot tell (no file system, not
 * Linux). Probing WebGPU there costs time and makes Vulkan's loader print warnings.
 */
export async function noGpuDevices(): Promise<boolean> {
  const g = globalThis as { Deno?: { build: { os: string } }; process?: { platform?: string } };
  const os = g.Deno?.build.os ?? g.process?.platform;
  if (os !== "linux" || !(await hasFileSystem())) return false;
  // Deno without read access to /dev would stop to ask: then it cannot tell.
  if (
    !granted({ name: "read", path: "/dev/dri" }) ||
    !granted({ name: "read", path: "/dev/nvidiactl" })
  ) {
    return false;
  }
  const f = await fs();
  const dri = await f.readdir("/dev/dri").catch(() => [] as string[]);
  if (dri.some((n) => n.startsWith("renderD"))) return false;
  return !(await f.stat("/dev/nvidiactl").then(() => true, () => false));
}

/**
 * Lets the event loop run (network writes, timers, other requests) and resumes right after.
 * Awaiting a resolved promise only runs microtasks, and the forward pass never waits on I/O, so a
 * loop of tokens would otherwise hold the event loop until it ends. A MessageChannel message is a
 * task with no minimum delay (tens of µs; a nested setTimeout(0) waits 1-4 ms) and lets pending
 * writes go out; but in Deno a loop of them can keep new connections from being accepted, so at
 * least every TIMER_YIELD_MS a timer's turn lets the event loop poll everything. The ports are
 * closed, so they keep no process alive.
 */
export function yieldToEventLoop(): Promise<void> {
  const now = performance.now();
  if (typeof MessageChannel === "undefined" || now - lastTimerYield >= TIMER_YIELD_MS) {
    lastTimerYield = now;
    return new Promise((r) => setTimeout(r, 0));
  }
  return new Promise((resolve) => {
    const { port1, port2 } = new MessageChannel();
    port1.onmessage = () => {
      port1.close();
      port2.close();
      resolve();
    };
    port2.postMessage(null);
  });
}
const TIMER_YIELD_MS = 50;
let lastTimerYield = 0;

/** An environment variable, where the runtime lets us read it without asking (undefined
 * otherwise: every variable read here is an optional setting, not worth a permission prompt). */
export function env(name: string): string | undefined {
  try {
    const g = globalThis as {
      process?: { env?: Record<string, string | undefined> };
      Deno?: { env: { get(n: string): string | undefined } };
    };
    if (g.Deno) return granted({ name: "env", variable: name }) ? g.Deno.env.get(name) : undefined;
    return g.process?.env?.[name];
  } catch {
    return undefined; // Deno without --allow-env
  }
}

/** This engine's cache folder: $GEMMA3_WASM_CACHE, else $XDG_CACHE_HOME/gemma3-wasm, else ~/.cache/gemma3-wasm. */
export function engineCacheDir(): string | undefined {
  const own = env("GEMMA3_WASM_CACHE");
  if (own) return own;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/gemma3-wasm`;
  const home = env("HOME") ?? env("USERPROFILE");
  return home ? `${home}/.cache/gemma3-wasm` : undefined;
}

/** Whether Deno has already granted a permission, so that using it cannot stop to ask (true in
 * other runtimes, which do not ask). */
function granted(
  desc: { name: "env"; variable: string } | { name: "read" | "write"; path: string },
): boolean {
  const d = (globalThis as {
    Deno?: { permissions?: { querySync?(d: unknown): { state: string } } };
  }).Deno;
  if (!d?.permissions?.querySync) return true;
  try {
    return d.permissions.querySync(desc).state === "granted";
  } catch {
    return false;
  }
}

/** `engineCacheDir()` where using it needs no permission prompt, else undefined: Deno in a
 * terminal asks before a first read or write, and an optional cache is not worth a question. */
export function engineCacheDirWithoutPrompt(): string | undefined {
  for (const variable of ["GEMMA3_WASM_CACHE", "XDG_CACHE_HOME", "HOME", "USERPROFILE"]) {
    if (!granted({ name: "env", variable })) return undefined;
  }
  const dir = engineCacheDir();
  if (!dir || !granted({ name: "read", path: dir }) || !granted({ name: "write", path: dir })) {
    return undefined;
  }
  return dir;
}

/** The absolute path with symbolic links resolved (the path itself if that fails). */
export async function realPath(path: string): Promise<string> {
  try {
    return await (await fs()).realpath(path);
  } catch {
    return path;
  }
}

/** Hex digest (node:crypto, streaming) of `prefix` followed by a local file's bytes. */
export async function hashFile(
  path: string,
  algorithm: "sha256" | "sha1",
  prefix?: Uint8Array,
): Promise<string> {
  const { createHash } = await nodeCrypto();
  const f = await fs();
  const h = createHash(algorithm);
  if (prefix) h.update(prefix);
  const handle = await f.open(path, "r");
  try {
    const buf = new Uint8Array(1 << 22);
    for (let pos = 0;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return h.digest("hex");
}

/** The file-system calls the Hub cache needs, kept here with the rest of the platform access. */
export async function fileSystem(): Promise<Fs> {
  return await fs();
}

/** Whether this runtime has a file system (Deno, Bun, Node: yes; browsers: no). */
export async function hasFileSystem(): Promise<boolean> {
  try {
    await fs();
    return true;
  } catch {
    return false;
  }
}
