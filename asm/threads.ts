// The multi-threaded build: every kernel of kernels.ts, plus a worker loop and parallel versions
// of the heavy ops, over one shared memory.
//
// All threads run an instance of this module. Workers sit in `workerLoop`; the calling thread
// runs `parMatmul`/`parAttention`, which write the op and its arguments into a control block in
// shared memory, bump a generation counter, do their own share, and wait until every worker has
// done its share. Waiting is spin-then-wait: a short spin catches the next op when ops follow
// each other closely (a decoded token is ~150 of them), and a futex wait (memory.atomic.wait32)
// stops idle threads from burning a core.
//
// Each thread gets a fixed slice (rows of a matrix, heads of attention) that depends only on the
// thread count, and every row or head is computed exactly as the single-threaded kernel does, so
// the output is bit-identical for any number of threads.

export * from "./kernels";
import { attention, geglu, matmulBF16, matmulF32, matmulQuant, quantizeBlocksQ8, rmsNorm, ropeInPlace, streamRead } from "./kernels";

// Control block layout (byte offsets).
const GENERATION = 0; // bumped by the caller for each op
const OP = 4;
const DONE = 8; // workers that finished the current op
const ARGS = 64; // 8-byte argument slots
const RESULTS = 256; // 8-byte per-thread results (streamRead)

const OP_EXIT: i32 = 0;
const OP_MATMUL_F32: i32 = 1;
const OP_MATMUL_BF16: i32 = 2;
const OP_ATTENTION: i32 = 3;
const OP_STREAM: i32 = 4;
const OP_GEGLU: i32 = 5;
const OP_ROPE: i32 = 6;
const OP_RMSNORM: i32 = 7;
const OP_MATMUL_QUANT: i32 = 8;
const OP_QUANTIZE: i32 = 9;

/** Loads of the shared counter before a thread falls back to a futex wait (~100 µs here). Ops of
 * a decoded token come tens of µs apart; with a shorter spin (20,000) a worker that finished its
 * share early often fell asleep, and the 60-70 µs futex wake made a 256-row product 4x slower. */
const SPIN: i32 = 200000;

let ctrl: usize = 0;
let threads: i32 = 1;
let callerCanWait: bool = true;

/** Sets up the calling thread: the control block address and the number of threads (itself
 * included). `canWait` is 0 where the calling thread may not block (a browser's main thread). */
export function threadsInit(control: usize, n: i32, canWait: i32): void {
  ctrl = control;
  threads = n;
  callerCanWait = canWait != 0;
}

@inline function arg<T>(i: i32): T {
  return load<T>(ctrl + ARGS + (<usize>i << 3));
}
@inline function setArg<T>(i: i32, v: T): void {
  store<T>(ctrl + ARGS + (<usize>i << 3), v);
}

/** This thread's share [lo, hi) of n items, in multiples of `align` (the last thread takes the rest). */
@inline function shareLo(n: i32, t: i32, align: i32): i32 {
  const per = ((n + threads * align - 1) / (threads * align)) * align;
  const lo = per * t;
  return lo < n ? lo : n;
}
@inline function shareHi(n: i32, t: i32, align: i32): i32 {
  return shareLo(n, t + 1, align);
}

function runOp(op: i32, t: i32): void {
  if (op == OP_MATMUL_F32 || op == OP_MATMUL_BF16) {
    const rows = arg<i32>(3);
    // Multiples of eight: a share starts at a group of interleaved rows.
    const lo = shareLo(rows, t, 8), hi = shareHi(rows, t, 8);
    if (lo >= hi) return;
    if (op == OP_MATMUL_F32) matmulF32(arg<usize>(0), arg<usize>(1), arg<usize>(2), rows, arg<i32>(4), arg<i32>(5), lo, hi, arg<i32>(6));
    else matmulBF16(arg<usize>(0), arg<usize>(1), arg<usize>(2), rows, arg<i32>(4), arg<i32>(5), lo, hi, arg<i32>(6));
  } else if (op == OP_ATTENTION) {
    const heads = arg<i32>(9);
    const lo = shareLo(heads, t, 1), hi = shareHi(heads, t, 1);
    if (lo >= hi) return;
    // Each thread has its own score scratch.
    const scores = arg<usize>(6) + <usize>t * arg<usize>(15);
    attention(
      arg<usize>(0), arg<usize>(1), arg<usize>(2), arg<usize>(3), arg<usize>(4), arg<usize>(5), scores,
      arg<i32>(7), arg<i32>(8), heads, arg<i32>(10), arg<i32>(11), arg<i32>(12), arg<i32>(13), arg<f32>(14), lo, hi,
    );
  } else if (op == OP_MATMUL_QUANT) {
    const rows = arg<i32>(5);
    const lo = shareLo(rows, t, 4), hi = shareHi(rows, t, 4);
    if (lo < hi) matmulQuant(arg<i32>(0), arg<usize>(1), arg<usize>(2), arg<usize>(3), arg<usize>(4), rows, arg<i32>(6), arg<i32>(7), lo, hi, arg<i32>(8));
  } else if (op == OP_GEGLU) {
    const n = arg<i32>(3);
    geglu(arg<usize>(0), arg<usize>(1), arg<usize>(2), shareLo(n, t, 4), shareHi(n, t, 4));
  } else if (op == OP_ROPE) {
    const tokens = arg<i32>(1);
    ropeInPlace(arg<usize>(0), shareLo(tokens, t, 1), shareHi(tokens, t, 1), arg<i32>(2), arg<i32>(3), arg<i32>(4), arg<f64>(5), arg<f64>(6));
  } else if (op == OP_RMSNORM) {
    const rows = arg<i32>(3), n = arg<i32>(4);
    const lo = shareLo(rows, t, 1), hi = shareHi(rows, t, 1);
    if (lo < hi) {
      const off = (<usize>lo * <usize>n) << 2;
      rmsNorm(arg<usize>(0) + off, arg<usize>(1), arg<usize>(2) + off, hi - lo, n, arg<f32>(5));
    }
  } else if (op == OP_QUANTIZE) {
    const blocks = arg<i32>(4);
    const lo = shareLo(blocks, t, 1), hi = shareHi(blocks, t, 1);
    if (lo < hi) quantizeBlocksQ8(arg<usize>(0), arg<usize>(1), arg<usize>(2), arg<usize>(3), lo, hi);
  } else if (op == OP_STREAM) {
    const bytes = arg<i32>(1);
    const lo = shareLo(bytes >> 6, t, 1) << 6, hi = shareHi(bytes >> 6, t, 1) << 6;
    store<f32>(ctrl + RESULTS + (<usize>t << 3), streamRead(arg<usize>(0), <usize>lo, <usize>hi));
  }
}

/**
 * Runs `op` on every thread and returns when all are done: 0, or -1 if the workers did not finish
 * within `timeoutMs` (a worker died): the caller then stops using threads.
 */
function dispatch(op: i32, timeoutMs: i32): i32 {
  atomic.store<i32>(ctrl + DONE, 0);
  atomic.store<i32>(ctrl + OP, op);
  atomic.add<i32>(ctrl + GENERATION, 1);
  atomic.notify(ctrl + GENERATION, threads - 1);
  runOp(op, 0);
  let spins = 0;
  let waitedMs: i64 = 0;
  for (;;) {
    const done = atomic.load<i32>(ctrl + DONE);
    if (done >= threads - 1) return 0;
    if (++spins < SPIN) continue;
    spins = 0;
    if (callerCanWait) {
      // 10 ms slices: a finished worker notifies, so this returns as soon as the op is done.
      memory.atomic.wait32(ctrl + DONE, done, 10_000_000);
      waitedMs += 10;
    } else waitedMs += 1; // a browser's main thread may only spin: count spin rounds instead
    if (waitedMs > <i64>timeoutMs) return -1;
  }
  return 0; // not reached
}

/** A worker's life: wait for an op, do this thread's share, report, repeat until OP_EXIT. */
export function workerLoop(control: usize, index: i32, n: i32, generation: i32): void {
  ctrl = control;
  threads = n;
  let seen = generation;
  for (;;) {
    let spins = 0;
    let gen = atomic.load<i32>(ctrl + GENERATION);
    while (gen == seen) {
      if (++spins >= SPIN) {
        memory.atomic.wait32(ctrl + GENERATION, seen, -1);
        spins = 0;
      }
      gen = atomic.load<i32>(ctrl + GENERATION);
    }
    seen = gen;
    const op = atomic.load<i32>(ctrl + OP);
    if (op != OP_EXIT) runOp(op, index);
    if (atomic.add<i32>(ctrl + DONE, 1) + 1 == threads - 1) atomic.notify(ctrl + DONE, 1);
    if (op == OP_EXIT) return;
  }
}

/**
 * One op of a worker whose waiting loop runs in JavaScript (used on Node 20, whose baseline wasm
 * compiler mis-runs workerLoop's wait loop): runs this thread's share of the current op, reports
 * it done, and returns the op (OP_EXIT = 0 means stop).
 */
export function workerStep(control: usize, index: i32, n: i32): i32 {
  ctrl = control;
  threads = n;
  // The caller may have grown the shared memory since the last op. Node 20's V8 does not pass the
  // new size on to a worker that was blocked meanwhile (it traps out of bounds) until that worker
  // asks for the memory size itself; growing by 0 pages does.
  memory.grow(0);
  const op = atomic.load<i32>(ctrl + OP);
  if (op != OP_EXIT) runOp(op, index);
  if (atomic.add<i32>(ctrl + DONE, 1) + 1 == threads - 1) atomic.notify(ctrl + DONE, 1);
  return op;
}

/** matmulF32/BF16 over all rows, split across the threads. Returns 0, or -1 on a timeout. */
export function parMatmul(bf16: i32, w: usize, x: usize, y: usize, rows: i32, cols: i32, tokens: i32, interleaved: i32, timeoutMs: i32): i32 {
  setArg<usize>(0, w);
  setArg<usize>(1, x);
  setArg<usize>(2, y);
  setArg<i32>(3, rows);
  setArg<i32>(4, cols);
  setArg<i32>(5, tokens);
  setArg<i32>(6, interleaved);
  return dispatch(bf16 ? OP_MATMUL_BF16 : OP_MATMUL_F32, timeoutMs);
}

/** attention over all heads, split across the threads; `scoresStride` bytes of scratch each. */
export function parAttention(
  q: usize, k: usize, v: usize, kCache: usize, vCache: usize, out: usize, scores: usize,
  tokens: i32, startPos: i32, heads: i32, kvHeads: i32, headDim: i32,
  capacity: i32, window: i32, scale: f32, scoresStride: usize, timeoutMs: i32,
): i32 {
  setArg<usize>(0, q);
  setArg<usize>(1, k);
  setArg<usize>(2, v);
  setArg<usize>(3, kCache);
  setArg<usize>(4, vCache);
  setArg<usize>(5, out);
  setArg<usize>(6, scores);
  setArg<i32>(7, tokens);
  setArg<i32>(8, startPos);
  setArg<i32>(9, heads);
  setArg<i32>(10, kvHeads);
  setArg<i32>(11, headDim);
  setArg<i32>(12, capacity);
  setArg<i32>(13, window);
  setArg<f32>(14, scale);
  setArg<usize>(15, scoresStride);
  return dispatch(OP_ATTENTION, timeoutMs);
}

/** matmulQuant over all rows (x already quantized), split across the threads. */
export function parMatmulQuant(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, interleaved: i32, timeoutMs: i32): i32 {
  setArg<i32>(0, fmt);
  setArg<usize>(1, w);
  setArg<usize>(2, qx);
  setArg<usize>(3, sx);
  setArg<usize>(4, y);
  setArg<i32>(5, rows);
  setArg<i32>(6, cols);
  setArg<i32>(7, tokens);
  setArg<i32>(8, interleaved);
  return dispatch(OP_MATMUL_QUANT, timeoutMs);
}

/** geglu over n elements, split across the threads. */
export function parGeglu(gate: usize, up: usize, out: usize, n: i32, timeoutMs: i32): i32 {
  setArg<usize>(0, gate);
  setArg<usize>(1, up);
  setArg<usize>(2, out);
  setArg<i32>(3, n);
  return dispatch(OP_GEGLU, timeoutMs);
}

/** ropeInPlace over all tokens, split across the threads by token. */
export function parRope(x: usize, tokens: i32, heads: i32, headDim: i32, startPos: i32, base: f64, factor: f64, timeoutMs: i32): i32 {
  setArg<usize>(0, x);
  setArg<i32>(1, tokens);
  setArg<i32>(2, heads);
  setArg<i32>(3, headDim);
  setArg<i32>(4, startPos);
  setArg<f64>(5, base);
  setArg<f64>(6, factor);
  return dispatch(OP_ROPE, timeoutMs);
}

/** rmsNorm over all rows, split across the threads by row. */
export function parRmsNorm(x: usize, w: usize, out: usize, rows: i32, n: i32, eps: f32, timeoutMs: i32): i32 {
  setArg<usize>(0, x);
  setArg<usize>(1, w);
  setArg<usize>(2, out);
  setArg<i32>(3, rows);
  setArg<i32>(4, n);
  setArg<f32>(5, eps);
  return dispatch(OP_RMSNORM, timeoutMs);
}

/** quantizeRowsQ8 over all blocks, split across the threads. */
export function parQuantizeRowsQ8(x: usize, tokens: i32, cols: i32, qx: usize, sx: usize, timeoutMs: i32): i32 {
  const blocks = tokens * (cols / 32);
  setArg<usize>(0, x);
  setArg<usize>(1, qx);
  setArg<usize>(2, sx);
  setArg<usize>(3, sx + (<usize>blocks << 2));
  setArg<i32>(4, blocks);
  return dispatch(OP_QUANTIZE, timeoutMs);
}

/** Reads `bytes` at p with every thread (a bandwidth probe); returns the sum of their sums. */
export function parStreamRead(p: usize, bytes: i32, timeoutMs: i32): f32 {
  setArg<usize>(0, p);
  setArg<i32>(1, bytes);
  if (dispatch(OP_STREAM, timeoutMs) != 0) return <f32>NaN;
  let s: f32 = 0;
  for (let t = 0; t < threads; t++) s += load<f32>(ctrl + RESULTS + (<usize>t << 3));
  return s;
}

/** Stops every worker (they return from workerLoop). */
export function threadsExit(timeoutMs: i32): i32 {
  return dispatch(OP_EXIT, timeoutMs);
}
