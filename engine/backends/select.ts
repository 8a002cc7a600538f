// Which backend a model runs on, and putting its weights there. Checkpoints are always read into
// WebAssembly memory first (the loaders and the quantize-on-load path work there); the WASM
// backend then rewrites them in place into the kernels' layout, the WebGPU backend uploads them and
// frees the CPU copies.

import type { Backend } from "../gemma3/backend.ts";
import { mapWeights, type ModelWeights } from "../gemma3/weights.ts";
import { weightBytes } from "../formats/quant.ts";
import { noGpuDevices } from "../io.ts";
import { interleaveWeights, WasmBackend, type WasmWeight } from "./wasm/backend.ts";
import type { WasmRuntime } from "./wasm/runtime.ts";
import { type GpuWeight, webGpuAdapter, WebGpuBackend } from "./webgpu/backend.ts";

/** The backends a model can run on. */
export type BackendName = "wasm" | "webgpu";
/** What `loadModel`'s `backend` option accepts: a backend, or "auto" to let the engine choose. */
export type BackendChoice = "auto" | BackendName;
/** Every BackendChoice, for validating options and flags. */
export const BACKEND_CHOICES: readonly BackendChoice[] = ["auto", "wasm", "webgpu"];

/** The backend chosen for a model and why; `gpu` is set when it is WebGPU. */
export interface BackendDecision {
  gpu: WebGpuBackend | null;
  reason: string;
}

/** The GPU if asked for, or ("auto") if a hardware adapter exists; else the WASM kernels. A GPU
 * asked for and missing is an error. */
export async function chooseBackend(choice: BackendChoice): Promise<BackendDecision> {
  if (choice === "wasm") return { gpu: null, reason: "asked for" };
  if (choice === "auto" && await noGpuDevices()) {
    return {
      gpu: null,
      reason: "this machine has no GPU device (no /dev/dri render node or NVIDIA device)",
    };
  }
  const found = await webGpuAdapter();
  if ("reason" in found) {
    if (choice === "webgpu") throw new Error(`backend "webgpu": ${found.reason}`);
    return { gpu: null, reason: `${found.reason}; running on the CPU` };
  }
  if (choice === "auto" && found.software) {
    return {
      gpu: null,
      reason: `the only WebGPU adapter is a software one (${
        found.adapter.info.description || "fallback"
      }), slower than the CPU kernels`,
    };
  }
  const gpu = await WebGpuBackend.create(found.adapter);
  return {
    gpu,
    reason: choice === "webgpu"
      ? `asked for (${gpu.description})`
      : `a WebGPU adapter exists (${gpu.description})`,
  };
}

/** The backend a model runs on, its weights there, and how to free them. */
export interface PlacedModel {
  name: BackendName;
  reason: string;
  backend: Backend<unknown, unknown>;
  weights: ModelWeights<unknown>;
  release: () => void;
}

/** Puts loaded weights (in the runtime's memory, `allocations` holding them) on the chosen
 * backend. */
export function placeWeights(
  decision: BackendDecision,
  rt: WasmRuntime,
  weights: ModelWeights<WasmWeight>,
  allocations: number[],
): PlacedModel {
  const freeCpuCopies = () => {
    for (const p of allocations) rt.free(p);
  };
  const gpu = decision.gpu;
  if (!gpu) {
    return {
      name: "wasm",
      reason: decision.reason,
      backend: new WasmBackend(rt) as Backend<unknown, unknown>,
      weights: interleaveWeights(rt, weights),
      release: freeCpuCopies,
    };
  }
  // mapWeights calls this once per distinct weight (a tied head is the embedding).
  const uploaded: GpuWeight[] = [];
  const onGpu = mapWeights(weights, (w) => {
    const bytes = rt.u8(w.ptr, weightBytes(w.dtype, w.rows, w.cols));
    const g = gpu.uploadWeight(w.dtype, w.rows, w.cols, bytes);
    uploaded.push(g);
    return g;
  });
  freeCpuCopies();
  return {
    name: "webgpu",
    reason: decision.reason,
    backend: gpu as Backend<unknown, unknown>,
    weights: onGpu as ModelWeights<unknown>,
    release: () => {
      for (const g of uploaded) gpu.freeWeight(g);
      gpu.dispose();
    },
  };
}
