// Sets of Unicode code points as sorted inclusive ranges: what character classes are.

/** Inclusive [first, last] code-point ranges. */
export type Ranges = [number, number][];

/** Sorted, merged ranges. */
export function normalize(ranges: Ranges): Ranges {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Ranges = [];
  for (const [a, b] of sorted) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** Every code point not in `ranges`. */
export function complement(ranges: Ranges): Ranges {
  const out: Ranges = [];
  let from = 0;
  for (const [a, b] of normalize(ranges)) {
    if (a > from) out.push([from, a - 1]);
    from = b + 1;
  }
  if (from <= 0x10ffff) out.push([from, 0x10ffff]);
  return out;
}

/** `ranges` without [x, y]. */
export function subtract(ranges: Ranges, [x, y]: [number, number]): Ranges {
  const out: Ranges = [];
  for (const [a, b] of ranges) {
    if (b < x || a > y) out.push([a, b]);
    else {
      if (a < x) out.push([a, x - 1]);
      if (b > y) out.push([y + 1, b]);
    }
  }
  return out;
}
