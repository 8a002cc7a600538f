// Models by name from the Hugging Face Hub, stored in the standard Hugging Face cache layout so
// that Python's downloads are reused and vice versa:
//
//   $HF_HUB_CACHE (default $HF_HOME/hub, default ~/.cache/huggingface/hub)
//     models--{org}--{name}/
//       blobs/{etag}                    file contents; etag = sha256 (LFS files) or git blob sha1
//       blobs/{etag}.incomplete         a download in progress (resumed with an HTTP Range)
//       snapshots/{commit}/{filename}   symbolic link to ../../blobs/{etag}
//       refs/{revision}                 the commit a branch or tag pointed to
//
// Every downloaded file is checked against the hash the Hub lists for it (sha256 for LFS files,
// the git blob sha1 for the others) before it enters blobs/; a blob that fails is deleted and
// fetched again, never used. HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE=1 work as in huggingface_hub.

import {
  engineCacheDir,
  env,
  fileInfo,
  fileSystem,
  hashFile,
  readText,
  sha256Hex,
  writeFileAtomic,
} from "../io.ts";

/** Progress of a download. */
export interface DownloadProgress {
  /** The file being downloaded. */
  file: string;
  /** Bytes of this file on disk so far (including a resumed part). */
  loadedBytes: number;
  /** Bytes of this file in all. */
  totalBytes: number;
}

/** Options of `downloadModel`. */
export interface HubOptions {
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** Called as bytes arrive. */
  onDownload?: (p: DownloadProgress) => void;
  /** Retries of an interrupted or corrupt transfer before giving up (default 3). */
  retries?: number;
  /** "model" (default): everything loadModel needs; "tokenizer": only the tokenizer files. */
  files?: "model" | "tokenizer";
}

/** Whether a source string names a Hub repository ("org/name") rather than a path or URL. */
export function isRepoId(source: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(source) && !source.includes("..");
}

/** The Hub cache root. */
export function hubCacheDir(): string {
  const explicit = env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE");
  if (explicit) return explicit;
  const home = env("HF_HOME") ??
    `${env("XDG_CACHE_HOME") ?? `${env("HOME") ?? env("USERPROFILE") ?? "."}/.cache`}/huggingface`;
  return `${home}/hub`;
}

/** The Hub's address: $HF_ENDPOINT or https://huggingface.co. */
export function hubEndpoint(): string {
  return (env("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, "");
}

function authHeaders(): Record<string, string> {
  const token = env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN");
  return token ? { authorization: `Bearer ${token}` } : {};
}

const offline = () =>
  ["1", "ON", "YES", "TRUE"].includes((env("HF_HUB_OFFLINE") ?? "").toUpperCase());

interface Sibling {
  rfilename: string;
  size?: number;
  blobId?: string;
  lfs?: { sha256: string; size: number };
}

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"];

/** The files a Gemma 3 checkpoint needs from a repository listing; the rest is not fetched. */
function wantedFiles(files: string[], only: "model" | "tokenizer"): string[] {
  if (only === "tokenizer") return files.filter((f) => TOKENIZER_FILES.includes(f));
  const want = ["config.json", "generation_config.json", ...TOKENIZER_FILES];
  const out = files.filter((f) => want.includes(f));
  if (files.includes("model.safetensors")) out.push("model.safetensors");
  else if (files.includes("model.safetensors.index.json")) {
    out.push(
      "model.safetensors.index.json",
      ...files.filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f)),
    );
  }
  return out;
}

async function hubFetch(url: string, init: RequestInit = {}): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, {
      ...init,
      headers: { ...authHeaders(), ...(init.headers as Record<string, string>) },
    });
  } catch (e) {
    throw new Error(
      `cannot reach ${url}: ${
        (e as Error).message
      } (set HF_HUB_OFFLINE=1 to use the local cache only)`,
    );
  }
  if (res.ok) return res;
  await res.body?.cancel();
  const hint = res.status === 401 || res.status === 403
    ? " (a gated or private repository: accept its licence on the Hub and set HF_TOKEN)"
    : res.status === 404
    ? " (no such repository, revision or file)"
    : "";
  throw new Error(`${url}: HTTP ${res.status}${hint}`);
}

/**
 * Makes sure the checkpoint files of `repoId` are in the local Hub cache and returns the snapshot
 * folder that holds them. Complete, verified files are never downloaded again.
 */
export async function downloadModel(repoId: string, options: HubOptions = {}): Promise<string> {
  const revision = options.revision ?? "main";
  const repoDir = `${hubCacheDir()}/models--${repoId.replace("/", "--")}`;
  if (offline()) {
    return await cachedSnapshot(
      repoDir,
      repoId,
      revision,
      options.files === "tokenizer" ? "tokenizer.json" : "config.json",
    );
  }

  const api = `${hubEndpoint()}/api/models/${repoId}/revision/${
    encodeURIComponent(revision)
  }?blobs=true`;
  const info = await (await hubFetch(api)).json() as { sha?: string; siblings?: Sibling[] };
  if (!info.sha || !Array.isArray(info.siblings)) {
    throw new Error(`${api}: unexpected answer (no sha or siblings)`);
  }
  const commit = info.sha;
  const byName = new Map(info.siblings.map((s) => [s.rfilename, s]));
  const only = options.files ?? "model";
  const files = wantedFiles([...byName.keys()], only);
  if (only === "tokenizer" && !files.includes("tokenizer.json")) {
    throw new Error(`${repoId}: the repository has no tokenizer.json`);
  }
  if (
    only === "model" &&
    (!files.includes("config.json") || !files.some((f) => f.endsWith(".safetensors")))
  ) {
    throw new Error(
      `${repoId}: no config.json and safetensors weights in the repository (found: ${
        [...byName.keys()].slice(0, 10).join(", ")
      })`,
    );
  }
  const fs = await fileSystem();
  const snapshot = `${repoDir}/snapshots/${commit}`;
  await fs.mkdir(`${repoDir}/blobs`, { recursive: true });
  await fs.mkdir(snapshot, { recursive: true });
  await fs.mkdir(`${repoDir}/refs`, { recursive: true });
  for (const name of files) {
    const s = byName.get(name)!;
    const expected = s.lfs
      ? { algorithm: "sha256" as const, hash: s.lfs.sha256, size: s.lfs.size }
      : s.blobId
      ? { algorithm: "sha1" as const, hash: s.blobId, size: s.size }
      : undefined;
    if (!expected) throw new Error(`${api}: no hash listed for ${name}`);
    const blob = `${repoDir}/blobs/${expected.hash}`;
    const url = `${hubEndpoint()}/${repoId}/resolve/${commit}/${
      name.split("/").map(encodeURIComponent).join("/")
    }`;
    await ensureBlob(blob, url, name, expected, options);
    await linkIntoSnapshot(snapshot, name, expected.hash);
  }
  if (revision !== commit) await fs.writeFile(`${repoDir}/refs/${revision}`, commit);
  return snapshot;
}

async function cachedSnapshot(
  repoDir: string,
  repoId: string,
  revision: string,
  needed: string,
): Promise<string> {
  let commit = revision;
  if (await fileInfo(`${repoDir}/refs/${revision}`)) {
    commit = (await readText(`${repoDir}/refs/${revision}`)).trim();
  }
  const snapshot = `${repoDir}/snapshots/${commit}`;
  if (!(await fileInfo(`${snapshot}/${needed}`))) {
    throw new Error(
      `${repoId}@${revision} is not in the local cache (${repoDir}) and HF_HUB_OFFLINE is set`,
    );
  }
  return snapshot;
}

/** Whether a blob on disk is whole and matches its hash; a marker remembers a verified blob. */
async function blobIsGood(
  blob: string,
  expected: { algorithm: "sha256" | "sha1"; hash: string; size?: number },
): Promise<boolean> {
  const info = await fileInfo(blob);
  if (!info) return false;
  if (expected.size !== undefined && info.size !== expected.size) return false;
  // Hashing a 500 MB blob on every start would cost a second: remember blobs already verified,
  // keyed by path, size and mtime (a blob changed in place gets a new mtime and is checked again).
  const dir = engineCacheDir();
  const marker = dir &&
    `${dir}/verified/${(await sha256Hex(`${blob}\0${info.size}\0${info.mtimeMs}`)).slice(0, 40)}`;
  if (marker && await fileInfo(marker)) return true;
  if (!(await matchesHash(blob, expected.algorithm, expected.hash, info.size))) return false;
  if (marker) await writeFileAtomic(marker, new Uint8Array()).catch(() => {});
  return true;
}

async function matchesHash(
  path: string,
  algorithm: "sha256" | "sha1",
  hash: string,
  size: number,
): Promise<boolean> {
  // git hashes a blob as sha1("blob <size>\0" + contents).
  const prefix = algorithm === "sha1" ? new TextEncoder().encode(`blob ${size}\0`) : undefined;
  return (await hashFile(path, algorithm, prefix)) === hash;
}

async function ensureBlob(
  blob: string,
  url: string,
  name: string,
  expected: { algorithm: "sha256" | "sha1"; hash: string; size?: number },
  options: HubOptions,
): Promise<void> {
  const fs = await fileSystem();
  if (await fileInfo(blob)) {
    if (await blobIsGood(blob, expected)) return;
    await fs.rm(blob); // corrupt or truncated: never used, fetched again below
  }
  const partial = `${blob}.incomplete`;
  const retries = options.retries ?? 3;
  let lastError: unknown;
  for (let attempt = 0; attempt <= retries; attempt++) {
    try {
      await downloadResuming(url, partial, name, expected.size, options.onDownload);
      const size = (await fileInfo(partial))!.size;
      if (expected.size !== undefined && size !== expected.size) {
        throw new Error(`${name}: downloaded ${size} bytes, the Hub lists ${expected.size}`);
      }
      if (!(await matchesHash(partial, expected.algorithm, expected.hash, size))) {
        await fs.rm(partial);
        throw new Error(
          `${name}: the downloaded file does not match its ${expected.algorithm} ${expected.hash}`,
        );
      }
      await fs.rename(partial, blob);
      return;
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(
    `${name}: download failed after ${retries + 1} attempts: ${(lastError as Error).message}`,
  );
}

/** Appends the rest of `url` to `partial`, starting where an earlier attempt stopped. */
async function downloadResuming(
  url: string,
  partial: string,
  name: string,
  total: number | undefined,
  onDownload?: (p: DownloadProgress) => void,
): Promise<void> {
  const fs = await fileSystem();
  let have = (await fileInfo(partial))?.size ?? 0;
  if (total !== undefined && have > total) {
    await fs.rm(partial);
    have = 0;
  }
  if (total !== undefined && have === total) return;
  const res = await hubFetch(url, { headers: have > 0 ? { range: `bytes=${have}-` } : {} });
  if (have > 0 && res.status !== 206) have = 0; // the server ignored the range: start over
  const size = total ?? have + Number(res.headers.get("content-length") ?? NaN);
  const file = await fs.open(partial, have > 0 ? "a" : "w");
  try {
    const reader = res.body!.getReader();
    let last = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      await file.write(value);
      have += value.length;
      const now = Date.now();
      if (onDownload && (now - last > 100 || have === size)) {
        last = now;
        onDownload({ file: name, loadedBytes: have, totalBytes: size });
      }
    }
  } finally {
    await file.close();
  }
  onDownload?.({ file: name, loadedBytes: have, totalBytes: size });
}

/** snapshots/{commit}/{name} → ../../blobs/{hash}, relative like huggingface_hub's (a copy where links fail). */
async function linkIntoSnapshot(snapshot: string, name: string, hash: string): Promise<void> {
  const fs = await fileSystem();
  const link = `${snapshot}/${name}`;
  const depth = name.split("/").length;
  const target = `${"../".repeat(depth + 1)}blobs/${hash}`;
  try {
    if ((await fs.readlink(link)) === target) return;
  } catch { /* missing, or not a link */ }
  await fs.rm(link, { force: true });
  if (name.includes("/")) await fs.mkdir(link.replace(/\/[^/]*$/, ""), { recursive: true });
  try {
    await fs.symlink(target, link);
  } catch {
    await fs.copyFile(`${snapshot}/${target}`, link);
  }
}
