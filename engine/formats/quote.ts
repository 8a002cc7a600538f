// How a value from a file or a caller appears in an error message: escaped (control characters
// become \u escapes, so a corrupt name cannot fill a terminal with raw bytes) and cut to a
// readable length, saying how long it was.

/** `text` quoted (JSON-escaped), cut to `max` characters. */
export function quoteShort(text: string, max = 80): string {
  const cut = text.length > max ? text.slice(0, max) : text;
  return JSON.stringify(cut) + (text.length > max ? `… (${text.length} characters)` : "");
}

/** A value as JSON, cut to `max` characters (a 1 MB config value is not echoed whole). */
export function shortJson(value: unknown, max = 80): string {
  let json: string | undefined;
  if (typeof value === "bigint") return `${value}n`; // a GGUF integer read as 64 bits
  try {
    json = JSON.stringify(value, (_, v) => typeof v === "bigint" ? `${v}n` : v);
    if (json === undefined) json = String(value); // undefined, a function, a symbol
  } catch (e) {
    // Nesting deeper than the stack (a JSON file can hold 100,000 brackets), or a cycle.
    return e instanceof RangeError
      ? "(a value nested too deeply to show)"
      : "(a value with a cycle)";
  }
  return json.length > max ? `${json.slice(0, max)}… (${json.length} characters)` : json;
}

/** A value as a message shows it: its type, and a short, escaped form of it. */
export function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return `an array (${shortJson(v)})`;
  if (typeof v === "string") return `the string ${quoteShort(v)}`;
  if (typeof v === "bigint") return `the bigint ${v}n`;
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

/** A name from a file (a tensor's) as it is when it is short printable ASCII, else quoted and
 * cut as `quoteShort` does. */
export function nameShort(name: string): string {
  return /^[\x21-\x7e]{1,80}$/.test(name) ? name : quoteShort(name);
}
