// What a user may name as a model, turned into a location the loaders read: a .gguf file or URL
// and a model folder or folder URL stay as given; a Hub repository name ("org/name") is downloaded
// once into the Hugging Face cache, or, where there is no file system (browsers), becomes the URL
// of its files.

import { hasFileSystem, isBrowser, isDirectory, isGgufLocation, isUrl } from "../io.ts";
import { downloadModel, type DownloadProgress, hubEndpoint, isRepoId } from "./hub.ts";

/** A model's location, and whether it is one GGUF file (else a Hugging Face folder). */
export interface ModelSource {
  location: string;
  gguf: boolean;
}

/** Options of resolveModelSource. */
export interface SourceOptions {
  /** For a Hub name: the branch, tag or commit (default "main"). */
  revision?: string;
  /** Called as a Hub name's files download. */
  onDownload?: (progress: DownloadProgress) => void;
}

/** Where the model named `source` can be read from (see the top of this file). */
export async function resolveModelSource(
  source: string,
  options: SourceOptions = {},
): Promise<ModelSource> {
  const gguf = isGgufLocation(source);
  // In a browser a path is a URL relative to the page ("/models/x.gguf", "models/", "./tiny");
  // only "org/name" without a file extension is a Hub repository there.
  if (!isUrl(source) && isBrowser() && (gguf || /^\.{0,2}\//.test(source) || !isRepoId(source))) {
    source =
      new URL(source, (globalThis as unknown as { location: { href: string } }).location.href)
        .href;
  }
  if (gguf || isUrl(source) || await isDirectory(source)) return { location: source, gguf };
  if (!isRepoId(source)) {
    throw new Error(
      `${source}: not a folder, .gguf file, URL or Hub repository name (expected a Hugging Face ` +
        `model folder with config.json, or a .gguf file)`,
    );
  }
  if (!(await hasFileSystem())) {
    return {
      location: `${hubEndpoint()}/${source}/resolve/${options.revision ?? "main"}/`,
      gguf: false,
    };
  }
  const location = await downloadModel(source, {
    revision: options.revision,
    onDownload: options.onDownload,
  });
  return { location, gguf: false };
}
