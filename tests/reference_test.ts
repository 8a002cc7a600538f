// The test-side float64 reference (tests/support/reference.ts) must itself agree with the
// independent float64 logits shipped with tiny-a before other tests may trust it. Both are float64
// computations of the same model, so they should agree to ~1e-12; 1e-9 leaves room for summation
// order while catching any modelling difference (the smallest mistake in the fixture's sensitivity
// table moves logits by > 1e-2).

import { FIXTURES, maxAbsDiff, readSafetensorsF32 } from "./support/helpers.ts";
import { referenceLogits } from "./support/reference.ts";

Deno.test("float64 reference reproduces tiny-a's independent float64 logits", async () => {
  const dir = `${FIXTURES}tiny-a/`;
  const config = JSON.parse(await Deno.readTextFile(dir + "config.json"));
  const golden = JSON.parse(await Deno.readTextFile(dir + "golden.json"));
  const weights = readSafetensorsF32(await Deno.readFile(dir + "model.safetensors"));
  const ref = golden.float64_reference;
  const logits = referenceLogits(config, weights, golden.prompts[ref.prompt_index]);
  const d = maxAbsDiff(logits[logits.length - 1], ref.last_position_logits_f64);
  if (!(d < 1e-9)) throw new Error(`reference differs from the fixture's float64 logits by ${d}`);
});
