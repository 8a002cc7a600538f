// Stop strings: generation ends where the text contains one of them. They are matched on the
// decoded text, not on tokens, because a string such as "\n\n" or "User:" may be split across
// tokens in any way (or share a token with text before it). A stream must therefore hold back
// the end of the text while it could still be the start of a stop string; everything else leaves
// at once, and the stop string itself is never emitted.

/** Matches stop strings in streamed text. push() each piece; flush() at the end. */
export class StopStrings {
  readonly #stops: string[];
  #held = "";
  #stopped = false;

  /** `stops`: the strings that end generation (none: everything passes through). */
  constructor(stops: readonly string[] = []) {
    if (!Array.isArray(stops)) throw new TypeError("stop strings must be an array of strings");
    for (const [i, s] of stops.entries()) {
      if (typeof s !== "string" || s === "") {
        throw new TypeError(
          `stop string ${i} must be a non-empty string, got ${JSON.stringify(s)}`,
        );
      }
    }
    this.#stops = [...new Set(stops)];
  }

  /** Whether a stop string has been found (nothing more is emitted after it). */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** The stop string found, or undefined. */
  matched: string | undefined;

  /**
   * Adds generated text; returns what can be emitted now: the text up to a stop string (and then
   * `stopped` is true), or all of it but the end that could still begin one.
   */
  push(text: string): string {
    if (this.#stopped) return "";
    const buf = this.#held + text;
    // The earliest stop string wins; at the same place, the longest.
    let at = -1;
    for (const s of this.#stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > this.matched!.length))) {
        at = i;
        this.matched = s;
      }
    }
    if (at >= 0) {
      this.#stopped = true;
      this.#held = "";
      return buf.slice(0, at);
    }
    const keep = this.#longestPartial(buf);
    this.#held = buf.slice(buf.length - keep);
    return buf.slice(0, buf.length - keep);
  }

  /** At the end of generation: the text held back (it never became a stop string). */
  flush(): string {
    const rest = this.#held;
    this.#held = "";
    return rest;
  }

  /** The length of the longest end of `buf` that is a proper start of some stop string. */
  #longestPartial(buf: string): number {
    let best = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > best; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
