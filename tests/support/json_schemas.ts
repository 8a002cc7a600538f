// The JSON Schemas constrained decoding is tested with (tests/fixtures/json-schemas/), and an
// independent validator for them.

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

/** 22 schemas: nested objects, arrays of enums, recursive $ref, patterns, formats, ... */
export const SCHEMAS: Record<string, unknown> = JSON.parse(
  Deno.readTextFileSync(new URL("../fixtures/json-schemas/schemas.json", import.meta.url)),
);

/** An independent validator: ajv, JSON Schema 2020-12, with ajv-formats' date, time, date-time
 * and uuid (full mode: real calendar days). */
export function validator(schema: unknown): (value: unknown) => boolean {
  // deno-lint-ignore no-explicit-any
  const ajv = new (Ajv2020 as any)({
    strict: true,
    allowUnionTypes: true,
    strictTuples: false,
    allErrors: true,
  });
  // deno-lint-ignore no-explicit-any
  (addFormats as any)(ajv);
  return ajv.compile(schema);
}
