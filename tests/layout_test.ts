// The architecture as a test: the module graph that Deno itself resolves (`deno info --json`)
// from every entry point has no import cycle, and imports between the engine's parts run one way,
// from the top of this list down (README, "Where things go"). Type-only imports count: a cycle of
// types is still two files that cannot be read or moved one without the other.

import { deepStrictEqual } from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

/** The parts of the program, lowest first; a file may import its own part or a lower one. */
const LAYERS: [part: string, matches: (path: string) => boolean][] = [
  ["engine/io.ts", (p) => p === "engine/io.ts" || p === "engine/node_builtins.ts"],
  ["engine/formats/", (p) => p.startsWith("engine/formats/")],
  ["engine/gemma3/", (p) => p.startsWith("engine/gemma3/")],
  ["engine/backends/", (p) => p.startsWith("engine/backends/")],
  ["engine/loading/", (p) => p.startsWith("engine/loading/")],
  ["engine/tokenizer/", (p) => p.startsWith("engine/tokenizer/")],
  ["engine/grammar/", (p) => p.startsWith("engine/grammar/")],
  ["engine/*.ts", (p) => /^engine\/[^/]+\.ts$/.test(p)],
  ["engine/server/", (p) => p.startsWith("engine/server/")],
  ["mod.ts", (p) => p === "mod.ts"],
  ["cli/", (p) => p.startsWith("cli/")],
  ["cli.ts", (p) => p === "cli.ts"],
];

function layerOf(path: string): number {
  const i = LAYERS.findIndex(([, matches]) => matches(path));
  if (i < 0) throw new Error(`${path} belongs to no layer: add it to LAYERS and the README`);
  return i;
}

interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier?: string }; type?: { specifier?: string } }[];
}

/** The repository's own files reachable from the entry points, each with what it imports. */
async function moduleGraph(entries: string[]): Promise<Map<string, Set<string>>> {
  const graph = new Map<string, Set<string>>();
  const local = (s?: string) =>
    s?.startsWith(ROOT.href) ? decodeURIComponent(s.slice(ROOT.href.length)) : undefined;
  for (const entry of entries) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
    for (const m of info.modules) {
      const from = local(m.specifier);
      if (!from) continue;
      const to = graph.get(from) ?? new Set<string>();
      for (const d of m.dependencies ?? []) {
        for (const s of [d.code?.specifier, d.type?.specifier]) {
          const target = local(s);
          if (target) to.add(target);
        }
      }
      graph.set(from, to);
    }
  }
  return graph;
}

/** Every import cycle, each as the files on it (Tarjan's strongly connected components). */
function cycles(graph: Map<string, Set<string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>(), found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || graph.get(v)?.has(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

const graph = await moduleGraph(["mod.ts", "cli.ts"]);

Deno.test("layout: the cycle finder finds a planted cycle (so its silence below means something)", () => {
  const planted = new Map([
    ["a.ts", new Set(["b.ts"])],
    ["b.ts", new Set(["c.ts"])],
    ["c.ts", new Set(["a.ts"])],
    ["d.ts", new Set(["a.ts"])],
  ]);
  deepStrictEqual(cycles(planted), [["a.ts", "b.ts", "c.ts"]]);
});

Deno.test("layout: no import cycle among the files mod.ts and cli.ts reach", () => {
  if (!graph.has("engine/gemma3/forward.ts")) throw new Error("the graph misses the forward pass");
  deepStrictEqual(cycles(graph), []);
});

Deno.test("layout: imports between the engine's parts run one way", () => {
  const upward: string[] = [];
  for (const [from, targets] of graph) {
    if (from.startsWith("asm/")) continue; // generated kernels module only; no engine imports
    for (const to of targets) {
      if (layerOf(to) > layerOf(from)) {
        upward.push(
          `${from} imports ${to} (${LAYERS[layerOf(to)][0]} sits above ${
            LAYERS[layerOf(from)][0]
          })`,
        );
      }
    }
  }
  deepStrictEqual(upward, []);
});

Deno.test("layout: the CLI's commands reach the engine only through mod.ts", () => {
  const direct: string[] = [];
  for (const [from, targets] of graph) {
    if (from !== "cli.ts" && !from.startsWith("cli/")) continue;
    for (const to of targets) if (to.startsWith("engine/")) direct.push(`${from} imports ${to}`);
  }
  deepStrictEqual(direct, []);
});
