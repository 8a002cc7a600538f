// The numeric kernels of the Gemma 3 forward pass, compiled to WebAssembly with SIMD.
//
// Every function here is a pure operation over pointers into linear memory (the memory is
// imported: engine/backends/wasm/runtime.ts owns it and lays out weights, KV cache and
// activations). The kernels know nothing about models or tensor names; engine/gemma3/forward.ts
// decides what to call.
//
// Conventions:
// - Pointers are byte addresses (usize). Activations are f32, row-major: a batch of `tokens`
//   vectors lies one after the other.
// - A weight matrix has `rows` output features, each a row of `cols` inputs (PyTorch's
//   nn.Linear layout), stored as f32 or bf16. Products always accumulate in f32.
// - No kernel allocates. Scratch space, when needed, is passed in.
//
// The kernels, by family (each file says why its loops look as they do):
//   kernels/matmul_float.ts   f32 and bf16 products, interleaved rows, embedding gather
//   kernels/matmul_quant.ts   block-quantized products (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K), interleaved
//                             blocks, int8 activations, embedding gather
//   kernels/attention.ts      causal attention over the KV cache, appending to it
//   kernels/elementwise.ts    RMSNorm, RoPE, GeGLU, residual add, streaming read
//   kernels/shared.ts         helpers the families inline
// This file is the build's entry (asm/build.ts): its exports are the module's exports, and
// asm/build.ts generates the engine's TypeScript view of them.

export * from "./kernels/matmul_float";
export * from "./kernels/matmul_quant";
export * from "./kernels/attention";
export * from "./kernels/elementwise";
