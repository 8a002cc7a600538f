// Stop strings (engine/stop_strings.ts): matched on text across any split into pieces, the stop
// string never emitted, and only what could still become one held back. Checked against a
// brute-force statement of those rules on random texts and splits, then through model.chat and
// the CLI on tiny-a.

import { deepStrictEqual, ok, throws } from "node:assert/strict";
import { loadModel, StopStrings } from "../mod.ts";
import { FIXTURES, rng } from "./support/helpers.ts";

/** What must have been emitted after seeing `text` (the rules, written out the slow way). */
function expected(text: string, stops: string[]): { emitted: string; stopped: boolean } {
  let first = -1;
  for (let i = 0; i < text.length && first < 0; i++) {
    if (stops.some((s) => text.startsWith(s, i))) first = i;
  }
  if (first >= 0) return { emitted: text.slice(0, first), stopped: true };
  // Hold back the longest end of the text that some stop string starts with.
  let hold = 0;
  for (let n = 1; n <= text.length; n++) {
    const end = text.slice(text.length - n);
    if (stops.some((s) => s.length > n && s.startsWith(end))) hold = n;
  }
  return { emitted: text.slice(0, text.length - hold), stopped: false };
}

Deno.test("stop strings: random texts, stops and splits against the rules", () => {
  const rand = rng(7);
  const pick = (alphabet: string, n: number) =>
    Array.from({ length: n }, () => alphabet[Math.floor(rand() * alphabet.length)]).join("");
  for (let trial = 0; trial < 2000; trial++) {
    const text = pick("ab\nc", 1 + Math.floor(rand() * 30));
    const stops = Array.from(
      { length: 1 + Math.floor(rand() * 3) },
      () => pick("ab\nc", 1 + Math.floor(rand() * 4)),
    );
    const m = new StopStrings(stops);
    let seen = "", emitted = "";
    for (let i = 0; i < text.length && !m.stopped;) {
      const n = 1 + Math.floor(rand() * 4);
      const piece = text.slice(i, i + n);
      i += n;
      seen += piece;
      emitted += m.push(piece);
      const want = expected(seen, stops);
      const where = `text ${JSON.stringify(seen)}, stops ${JSON.stringify(stops)}`;
      deepStrictEqual(emitted, want.emitted, where);
      deepStrictEqual(m.stopped, want.stopped, where);
    }
    if (!m.stopped) deepStrictEqual(emitted + m.flush(), text, "flush gives back what was held");
    else ok(stops.includes(m.matched!), "matched names the stop string");
  }
});

Deno.test("stop strings: the earliest match wins, then the longest; a piece after it is dropped", () => {
  const m = new StopStrings(["lo wor", "ld", "lo"]);
  deepStrictEqual(m.push("hel"), "he", "the 'l' could still become 'lo' or 'ld'");
  deepStrictEqual(m.push("lo world"), "l");
  deepStrictEqual(m.stopped, true);
  deepStrictEqual(m.matched, "lo wor", "'lo' and 'lo wor' start at the same place");
  deepStrictEqual(m.push("more"), "");
  deepStrictEqual(m.flush(), "");
  const u = new StopStrings(["🙂!"]);
  deepStrictEqual(u.push("ok 🙂"), "ok ");
  deepStrictEqual(u.push("?"), "🙂?");
  deepStrictEqual(new StopStrings().push("anything"), "anything");
});

Deno.test("stop strings: bad lists are refused by name", () => {
  throws(() => new StopStrings([""]), /stop string 0 must be a non-empty string/);
  throws(() => new StopStrings(["a", 3 as unknown as string]), /stop string 1/);
  throws(() => new StopStrings("abc" as unknown as string[]), /array of strings/);
});

Deno.test("model.chat and cli.ts run stop at a string that spans tokens, and do not emit it", async () => {
  const tinyGguf = `${FIXTURES}tiny-a/model.gguf`;
  const model = await loadModel(tinyGguf, { threads: 1 });
  const messages = [{ role: "user" as const, content: "hello" }];
  const options = { maxTokens: 30, temperature: 0, stopTokens: [] };
  const pieces: string[] = [];
  for await (const t of model.chat(messages, options)) pieces.push(t);
  const full = pieces.join("");
  // A stop string made of the end of one piece and the start of the next.
  const k = pieces.findIndex((p, i) => i > 2 && p.length >= 2 && (pieces[i + 1] ?? "").length >= 2);
  ok(k > 0, `no two pieces to join in ${JSON.stringify(pieces)}`);
  const stop = pieces[k].slice(-2) + pieces[k + 1].slice(0, 2);
  const want = full.slice(0, full.indexOf(stop));
  let got = "";
  for await (const t of model.chat(messages, { ...options, stop: [stop] })) got += t;
  deepStrictEqual(got, want);
  await model.dispose();

  const cli = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../cli.ts", import.meta.url).pathname,
      "run",
      "hello",
      "--model",
      tinyGguf,
      "--temperature",
      "0",
      "-n",
      "30",
      "--stop",
      "zzz-never",
      "--stop",
      stop,
      "--json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  ok(cli.success, new TextDecoder().decode(cli.stderr));
  deepStrictEqual(JSON.parse(new TextDecoder().decode(cli.stdout)).text, want);
});
