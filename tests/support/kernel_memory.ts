// One single-threaded kernel instance and its memory for the kernel tests, with helpers to put
// operands into the memory and read results back.

import { WasmRuntime } from "../../engine/backends/wasm/runtime.ts";

export const rt = await WasmRuntime.create();
export const k = rt.kernels;

export function put(values: ArrayLike<number> | Uint16Array | Int32Array, bytesPer = 4): number {
  const ptr = rt.alloc(values.length * bytesPer);
  if (values instanceof Uint16Array) {
    new Uint16Array(rt.memory.buffer, ptr, values.length).set(values);
  } else if (values instanceof Int32Array) rt.i32(ptr, values.length).set(values);
  else rt.f32(ptr, values.length).set(values);
  return ptr;
}

export const read = (ptr: number, n: number) => Float32Array.from(rt.f32(ptr, n));
