// Random blocks of every block format, for the format and kernel tests.

import { f32ToF16, type QuantType } from "../../engine/formats/dtypes.ts";
import { QUANT } from "../../engine/formats/quant.ts";
import { rng } from "./helpers.ts";

/** Every block format. */
export const FORMATS = Object.keys(QUANT) as QuantType[];

/** `blocks` random blocks of a format: random bytes everywhere (every bit of every field is
 * exercised), then each f16 scale replaced by a random moderate half so values stay finite; in
 * every third block a subnormal half (below 2^-14: the real Q6_K files hold mostly these, and
 * the kernels convert them apart). */
export function randomBlocks(type: QuantType, blocks: number, seed: number): Uint8Array {
  const fmt = QUANT[type];
  const r = rng(seed);
  const bytes = Uint8Array.from({ length: blocks * fmt.blockBytes }, () => Math.floor(r() * 256));
  const v = new DataView(bytes.buffer);
  const halves = { q8_0: [0], q4_0: [0], q5_0: [0], q4_k: [0, 2], q6_k: [208] }[type];
  for (let b = 0; b < blocks; b++) {
    for (const at of halves) {
      const scale = b % 3 === 2 ? (r() - 0.3) * 8e-5 : (r() - 0.3) * 0.01;
      v.setUint16(b * fmt.blockBytes + at, f32ToF16(scale), true);
    }
  }
  return bytes;
}
