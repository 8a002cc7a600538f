// The fuzzer's random source: one seeded generator per case, made from (seed, kind, index), so
// any case can be made again alone, in any order, on any machine.

/** A seeded generator with the helpers the mutators use. */
export class Random {
  #state: number;

  constructor(...parts: (number | string)[]) {
    // FNV-1a over the parts' text: the case's name decides its stream.
    let h = 0x811c9dc5;
    for (const c of parts.join("/")) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193);
    this.#state = h >>> 0;
  }

  /** A float in [0, 1) (mulberry32). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** A size spread over orders of magnitude: 0, 1, 2, ..., up to `max` (log-uniform). */
  size(max: number): number {
    return Math.min(max, Math.floor(Math.exp(this.next() * Math.log(max + 1))));
  }
}

/** Integers at the edges of the widths file formats use. */
export const EDGE_INTEGERS = [
  0,
  1,
  2,
  3,
  7,
  255,
  256,
  65535,
  65536,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  2 ** 32,
  1e9,
  1e12,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 63,
  2 ** 64 - 1,
  -1,
  -2,
  -(2 ** 31),
  -(2 ** 53),
] as const;

/** Strings a parser or a message might trip on. */
export function edgeString(r: Random): string {
  switch (r.int(12)) {
    case 0:
      return "";
    case 1:
      return "x".repeat(r.size(1 << 20)); // up to 1 MiB
    case 2:
      return "\u0000\u0001\u001b[31m\r\n\t"; // control characters and an escape sequence
    case 3:
      return "\ud800"; // a lone surrogate (not valid in UTF-8)
    case 4:
      return r.pick(["toString", "constructor", "__proto__", "hasOwnProperty", "valueOf"]);
    case 5:
      return r.pick(["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<pad>", "<unk>"]);
    case 6:
      return "▁".repeat(r.size(100_000));
    case 7:
      return String(r.pick(EDGE_INTEGERS));
    case 8:
      return "日本語🙂\u200d\ufeff";
    case 9:
      return "{{ x }}{% for %}";
    case 10:
      return "a".repeat(r.size(64)) + "\u0000";
    default:
      return r.pick(["NaN", "Infinity", "-0", "1e400", "null", "true"]);
  }
}

/** A number a JSON field might be set to. */
export function edgeNumber(r: Random, near?: number): number {
  if (near !== undefined && r.chance(0.4)) {
    return r.pick([near + 1, near - 1, near * 2, -near, near * 1e6, near + 0.5, near / 3]);
  }
  return r.chance(0.8) ? r.pick(EDGE_INTEGERS) : r.pick([0.5, -0.5, 1e-300, 1e308, -1e308, -0]);
}
