// loadTokenizer: finds tokenizer.json (a file, a model folder, or a URL), builds the tokenizer,
// and caches the compact form so the next start skips the 33 MB JSON parse. The cache key is the
// file's path, size and modification time; a stale or unreadable cache entry is rebuilt.

import {
  engineCacheDirWithoutPrompt,
  fileInfo,
  isDirectory,
  isGgufLocation,
  isUrl,
  joinLocation,
  markUsed,
  pruneCacheFolder,
  readBytes,
  readJson,
  readText,
  realPath,
  sha256Hex,
  TOKENIZER_JSON_VALUES,
  writeFileAtomic,
} from "../io.ts";
import { ChatTemplate } from "./chat_template.ts";
import { shortJson } from "../formats/quote.ts";
import { Tokenizer } from "./tokenizer.ts";
import { downloadModel, isRepoId } from "../loading/hub.ts";
import { fromCompact, fromGgufMetadata, fromTokenizerJson, toCompact } from "./format.ts";
import { GgufSkippedArray, readGgufHeader } from "../formats/gguf.ts";
import { openSource } from "../io.ts";
import type { TokenizerData } from "./tokenizer.ts";

/** Options of `loadTokenizer`. */
export interface TokenizerLoadOptions {
  /** Cache the compact form on disk (default true where there is a file system). */
  cache?: boolean;
}

/** Whether a tokenizer's compact form can be cached here (a cache folder this process may read
 * and write without asking). */
export function tokenizerCacheUsable(): boolean {
  return engineCacheDirWithoutPrompt() !== undefined;
}

/** Compact tokenizers kept in the cache folder (the most recently used ones). */
export const TOKENIZER_CACHE_ENTRIES = 8;

async function loadData(
  jsonPath: string,
  useCache: boolean,
  ggufMeta?: Map<string, unknown>,
): Promise<TokenizerData> {
  const gguf = isGgufLocation(jsonPath);
  const info = isUrl(jsonPath) ? null : await fileInfo(jsonPath);
  const engineDir = useCache && info ? engineCacheDirWithoutPrompt() : undefined;
  const folder = engineDir ? `${engineDir}/tokenizers` : undefined;
  let cachePath: string | undefined;
  if (folder && info) {
    const key = `${await realPath(jsonPath)}\0${info.size}\0${info.mtimeMs}`;
    cachePath = `${folder}/${(await sha256Hex(key)).slice(0, 32)}.g3tk`;
    try {
      const data = fromCompact(await readBytes(cachePath), cachePath);
      await markUsed(cachePath);
      return data;
    } catch { /* no cache yet, or unusable: rebuild */ }
  }
  const data = gguf
    ? fromGgufMetadata(
      ggufMeta && ![...ggufMeta.values()].some((v) => v instanceof GgufSkippedArray)
        ? ggufMeta
        : await ggufMetadata(jsonPath),
      jsonPath,
    )
    : fromTokenizerJson(await readJson(jsonPath, TOKENIZER_JSON_VALUES), jsonPath);
  if (folder && cachePath) {
    await writeFileAtomic(cachePath, toCompact(data)).catch(() => {});
    // Entries are keyed by file path, size and time, so every new or rewritten model file adds
    // one (14 MB for Gemma 3's vocabulary): keep the most recently used few.
    await pruneCacheFolder(folder, ".g3tk", TOKENIZER_CACHE_ENTRIES);
  }
  return data;
}

/** Tokenizer data from a GGUF file's metadata. */
async function ggufMetadata(location: string): Promise<Map<string, unknown>> {
  const source = await openSource(location);
  try {
    return (await readGgufHeader(source)).metadata;
  } finally {
    await source.close().catch(() => {});
  }
}

/** The tokenizer of a GGUF file whose metadata has been read already (the compact form is cached
 * as for tokenizer.json, keyed by the file; arrays skipped in `meta` are read again only when
 * the cache has no entry). */
export async function tokenizerFromGguf(
  location: string,
  meta: Map<string, unknown>,
  options: TokenizerLoadOptions = {},
): Promise<Tokenizer> {
  const data = await loadData(location, options.cache ?? true, meta);
  return await ggufTokenizer(data, meta, location);
}

/** A GGUF's tokenizer from its data and its metadata's chat template, if it has one. */
async function ggufTokenizer(
  data: TokenizerData,
  meta: Map<string, unknown>,
  location: string,
): Promise<Tokenizer> {
  const template = meta.get("tokenizer.chat_template");
  return newTokenizer(
    data,
    typeof template === "string"
      ? await ChatTemplate.fromSource(template, `tokenizer.chat_template in ${location}`)
      : undefined,
    location,
  );
}

/** `new Tokenizer`, whose checks (added tokens' ids) name the file they came from. */
function newTokenizer(data: TokenizerData, template: ChatTemplate | undefined, where: string) {
  try {
    return new Tokenizer(data, template);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Loads a tokenizer from a `tokenizer.json` path or URL, from a .gguf file's tokenizer metadata
 * (the same ids as the tokenizer.json it was made from), from a model folder (path or URL)
 * holding one, or from a Hub repository by name (only its tokenizer files are downloaded). The
 * folder's chat template (tokenizer_config.json's `chat_template`, or chat_template.jinja) comes
 * along for `applyChatTemplate`.
 */
export async function loadTokenizer(
  source: string,
  options: TokenizerLoadOptions = {},
): Promise<Tokenizer> {
  if (typeof source !== "string" || source === "") {
    throw new TypeError("loadTokenizer needs a path or URL");
  }
  if (!isUrl(source) && !(await fileInfo(source)) && isRepoId(source)) {
    source = await downloadModel(source, { files: "tokenizer" });
  }
  let jsonPath = source;
  let folder: string | undefined;
  if (isGgufLocation(source)) {
    const data = await loadData(source, options.cache ?? true);
    return await ggufTokenizer(data, await ggufMetadata(source), source);
  }
  if (await isDirectory(source)) folder = source;
  else if (isUrl(source) && !/\.json$/i.test(new URL(source).pathname)) folder = source;
  else folder = source.replace(/[\\/][^\\/]*$/, "") || ".";
  if (jsonPath === folder) jsonPath = joinLocation(folder, "tokenizer.json");
  if (!isUrl(jsonPath) && !(await fileInfo(jsonPath))) {
    throw new Error(`${jsonPath}: no such file (a Gemma 3 tokenizer.json is needed)`);
  }
  const data = await loadData(jsonPath, options.cache ?? true);
  const template = await findChatTemplate(folder);
  return newTokenizer(data, template, jsonPath);
}

/** The folder's chat template, if it has one. */
async function findChatTemplate(folder: string): Promise<ChatTemplate | undefined> {
  const config = joinLocation(folder, "tokenizer_config.json");
  const jinja = joinLocation(folder, "chat_template.jinja");
  for (
    const [path, read] of [
      [jinja, async () => await readText(jinja)],
      [
        config,
        async () => ((await readJson(config)) as { chat_template?: unknown } | null)?.chat_template,
      ],
    ] as const
  ) {
    if (!isUrl(path) && !(await fileInfo(path))) continue;
    try {
      const t = await read();
      const where = path === config ? `chat_template in ${config}` : path;
      if (typeof t === "string") return await ChatTemplate.fromSource(t, where);
      if (Array.isArray(t)) {
        // Named templates: [{ name, template }]; "default" is the chat one (entries that are not
        // such objects are passed over).
        const named = t.filter((x): x is { name?: unknown; template: string } =>
          typeof x === "object" && x !== null && typeof x.template === "string"
        );
        const d = named.find((x) => x.name === "default") ?? named[0];
        if (d) {
          return await ChatTemplate.fromSource(
            d.template,
            `chat_template ${shortJson(d.name)} in ${path}`,
          );
        }
      }
    } catch (e) {
      if (!isUrl(path)) throw e;
    }
  }
  return undefined;
}
