// The full-size random-weight Gemma 3 270M (bench/random_model.ts's config and weights) as a
// Q8_0 GGUF with Gemma's real tokenizer: the worst case for constrained decoding (its free output
// is garbage), and a file llama.cpp reads too. Written once (about half a minute).

import { ensureRandomGguf } from "../../bench/random_model.ts";
import { gemmaTokenizerDir } from "./gemma_tokenizer.ts";

/** The GGUF's path (Q8_0 unless `format` says otherwise), written on first use. */
export async function random270mGguf(format = "q8_0"): Promise<string> {
  return ensureRandomGguf(format, `${await gemmaTokenizerDir()}tokenizer.json`);
}
