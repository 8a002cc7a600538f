// The WASM runtime's memory: the allocator behind every weight, cache and activation buffer.

import { rt } from "./support/kernel_memory.ts";

Deno.test("allocator reuses freed memory and coalesces neighbours", () => {
  const a = rt.alloc(1000), b = rt.alloc(1000), c = rt.alloc(1000);
  rt.free(a);
  rt.free(b);
  const d = rt.alloc(2000); // fits only in a and b merged
  if (d !== a) throw new Error(`expected reuse of ${a}, got ${d}`);
  rt.free(c);
  rt.free(d);
});
