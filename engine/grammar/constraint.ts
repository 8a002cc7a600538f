// What generate and chat take to constrain their output, compiled once and kept: a server sees
// the same schema on request after request, and a compiled grammar also keeps the states and
// masks it has built.

import { Grammar } from "./automaton.ts";
import { GrammarError } from "./gbnf.ts";
import { jsonSchemaToGbnf } from "./json_schema.ts";

/** Output constraints: at most one of them. */
export interface ConstraintOptions {
  /** The output is JSON that validates against this JSON Schema (see README for the keywords
   * supported; any other keyword is an error). Objects take no properties beyond `properties`
   * unless `additionalProperties` says so. `true` or `{}`: any JSON value. */
  jsonSchema?: unknown;
  /** The output is a sentence of this grammar (GBNF, llama.cpp's notation; rule `root`). */
  grammar?: string;
}

const CACHE_SIZE = 32;
/** A kept grammar whose table has grown past this many states (about 1 KiB each) is compiled
 * afresh next time, so a long-running server's memory stays bounded. */
const MAX_STATES = 50_000;
const cache = new Map<string, Grammar>();

/** The compiled grammar of the options (undefined when they constrain nothing). Throws
 * GrammarError naming what is wrong or not supported. */
export function compileConstraint(options: ConstraintOptions): Grammar | undefined {
  const { jsonSchema, grammar } = options;
  if (jsonSchema !== undefined && grammar !== undefined) {
    throw new GrammarError("give jsonSchema or grammar, not both");
  }
  if (grammar !== undefined && typeof grammar !== "string") {
    throw new GrammarError("grammar must be GBNF text (a string)");
  }
  if (jsonSchema === undefined && grammar === undefined) return undefined;
  let key: string;
  try {
    key = grammar !== undefined ? `gbnf:${grammar}` : `schema:${JSON.stringify(jsonSchema)}`;
  } catch {
    throw new GrammarError("jsonSchema must be JSON (it has a cycle or a BigInt)");
  }
  let g = cache.get(key);
  cache.delete(key); // put back below as the most recently used
  if (!g || g.cacheSize.states > MAX_STATES) {
    try {
      g = new Grammar(grammar ?? jsonSchemaToGbnf(jsonSchema));
    } catch (e) {
      // The parsers refuse deep nesting (MAX_NESTING); a chain of rules, each naming the next,
      // can still recurse as deep as it is long. Said as what it is, not as V8's RangeError.
      if (e instanceof RangeError && /call stack/i.test(e.message)) {
        throw new GrammarError(
          `the ${grammar !== undefined ? "grammar" : "JSON Schema"} nests too deeply to compile ` +
            "(rules or references that each lead to the next, thousands deep)",
        );
      }
      throw e;
    }
  }
  cache.set(key, g);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return g;
}
