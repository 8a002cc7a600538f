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
// The work of an op (rows of a matrix, tokens and heads of attention, blocks) is cut into chunks that
// threads claim one at a time, whoever is running: on cores shared with other processes a thread
// that is not scheduled leaves its chunks to the others, where fixed halves made everyone wait
// for it (2 threads ran at 0.73x of 1 thread beside one busy process; bench/decode.ts --busy 1). Chunks are
// multiples of the kernels' row groups, and every row or head is computed exactly as the
// single-threaded kernel does, so the output is bit-identical for any number of threads and any
// claiming order.
//
// A claim is one 64-bit compare-and-swap on (generation, chunk count, next chunk): a thread that
// wakes late, after its op is over, finds another generation there (or no chunk left) and claims
// nothing, so the caller waits for the chunks to be completed, not for every thread to have
// looked. The chunk count is in the claimed word, and the op's parameters are read only after a
// claim succeeds: a claim of an op proves it is not over, so the caller has not begun writing the
// next op's. (Read before the claim, a late thread could take the next op's chunk count with the
// last op's exhausted claim word, claim a chunk nobody had posted, and count it completed: the
// caller then returned with a chunk still unwritten, 54 times in 100,000 op pairs here.)

export * from "./kernels";
import { attention, geglu, matmulBF16, matmulF32, matmulQuant, quantizeBlocksQ8, rmsNorm, ropeApply, streamRead } from "./kernels";
import { activationHalfSums, activationSums, activationWide, activationWideBlocks } from "./kernels/shared";

// Control block layout (byte offsets).
const GENERATION = 0; // bumped by the caller for each op
const OP = 4;
const DONE = 8; // workers that saw OP_EXIT
const CLAIM = 16; // i64: the op's generation (bits 32-63), its chunks (16-31), its next unclaimed chunk (0-15)
const COMPLETED = 24; // chunks of the current op completed
const ITEMS = 32; // items (rows, heads, ...) of the current op
const CHUNK = 36; // items per chunk
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

/** Loads of the completed count before the caller, its own chunks done, sleeps on it (~10 µs).
 * With every chunk claimed the rest are running, so the wait is short unless a thread holding
 * one is not: then the caller's spinning would keep a core that thread may be waiting for. */
const CALLER_SPIN: i32 = 20000;

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

/** Chunks per thread an op is cut into: enough that a thread descheduled mid-op holds back
 * little (an eighth of its share), few enough that claiming stays rare. */
const CHUNKS_PER_THREAD: i32 = 8;

/** Runs items [lo, hi) of `op` on thread t (its scratch and result slot are its own). */
function runRange(op: i32, t: i32, lo: i32, hi: i32): void {
  if (op == OP_MATMUL_F32) {
    matmulF32(arg<usize>(0), arg<usize>(1), arg<usize>(2), arg<i32>(3), arg<i32>(4), arg<i32>(5), lo, hi, arg<i32>(6));
  } else if (op == OP_MATMUL_BF16) {
    matmulBF16(arg<usize>(0), arg<usize>(1), arg<usize>(2), arg<i32>(3), arg<i32>(4), arg<i32>(5), lo, hi, arg<i32>(6));
  } else if (op == OP_ATTENTION) {
    // Each thread has its own scratch.
    const scratch = arg<usize>(6) + <usize>t * arg<usize>(15);
    attention(
      arg<usize>(0), arg<usize>(1), arg<usize>(2), arg<usize>(3), arg<usize>(4), arg<usize>(5), scratch,
      arg<i32>(7), arg<i32>(8), arg<i32>(9), arg<i32>(10), arg<i32>(11), arg<i32>(12), arg<i32>(13), arg<f32>(14), lo, hi,
    );
  } else if (op == OP_MATMUL_QUANT) {
    // Each thread has its own packing scratch.
    const packed = arg<usize>(9) == 0 ? 0 : arg<usize>(9) + <usize>t * arg<usize>(10);
    matmulQuant(arg<i32>(0), arg<usize>(1), arg<usize>(2), arg<usize>(3), arg<usize>(4), arg<i32>(5), arg<i32>(6), arg<i32>(7), lo, hi, arg<i32>(8), packed);
  } else if (op == OP_GEGLU) {
    geglu(arg<usize>(0), arg<usize>(1), arg<usize>(2), lo, hi);
  } else if (op == OP_ROPE) {
    ropeApply(arg<usize>(0), arg<usize>(1), lo, hi, arg<i32>(3), arg<i32>(4));
  } else if (op == OP_RMSNORM) {
    const n = arg<i32>(4);
    const off = (<usize>lo * <usize>n) << 2;
    rmsNorm(arg<usize>(0) + off, arg<usize>(1), arg<usize>(2) + off, hi - lo, n, arg<f32>(5));
  } else if (op == OP_QUANTIZE) {
    quantizeBlocksQ8(arg<usize>(0), arg<usize>(1), arg<usize>(2), arg<usize>(3), arg<usize>(4), arg<usize>(5), arg<i32>(6), lo, hi);
  } else if (op == OP_STREAM) {
    const slot = ctrl + RESULTS + (<usize>t << 3);
    store<f32>(slot, load<f32>(slot) + streamRead(arg<usize>(0), <usize>lo << 6, <usize>hi << 6));
  }
}

/** Claims and runs chunks of the op of generation `gen` until none is left (or the op is over). */
function runChunks(t: i32, gen: i32): void {
  for (;;) {
    const claim = atomic.load<i64>(ctrl + CLAIM);
    if (<i32>(claim >>> 32) != gen) return; // the op is over
    const c = <i32>(claim & 0xffff), chunks = <i32>((claim >>> 16) & 0xffff);
    if (c >= chunks) return;
    if (atomic.cmpxchg<i64>(ctrl + CLAIM, claim, claim + 1) != claim) continue;
    // Claimed, so the op is not over and these are its parameters.
    const op = atomic.load<i32>(ctrl + OP);
    const items = atomic.load<i32>(ctrl + ITEMS), chunk = atomic.load<i32>(ctrl + CHUNK);
    const lo = c * chunk, end = lo + chunk;
    runRange(op, t, lo, end < items ? end : items);
    if (atomic.add<i32>(ctrl + COMPLETED, 1) + 1 == chunks) atomic.notify(ctrl + COMPLETED, 1);
  }
}

/**
 * Runs `op` over `items` on every thread that is running and returns when all its chunks are
 * done: 0, or -1 if they were not within `timeoutMs` (a worker died holding one): the caller
 * then stops using threads.
 */
function dispatch(op: i32, items: i32, align: i32, timeoutMs: i32): i32 {
  // Chunks of at least `align` items (a kernel's row group, so a row's group and its bits do not
  // depend on the chunking), CHUNKS_PER_THREAD per thread: at most 8 · 64 threads, well inside
  // the claim word's 16 bits.
  const per = (items + threads * CHUNKS_PER_THREAD - 1) / (threads * CHUNKS_PER_THREAD);
  const chunk = max(align, ((per + align - 1) / align) * align);
  const chunks = (items + chunk - 1) / chunk;
  const gen = atomic.load<i32>(ctrl + GENERATION) + 1;
  atomic.store<i32>(ctrl + OP, op);
  atomic.store<i32>(ctrl + ITEMS, items);
  atomic.store<i32>(ctrl + CHUNK, chunk);
  atomic.store<i32>(ctrl + COMPLETED, 0);
  atomic.store<i64>(ctrl + CLAIM, (<i64>gen << 32) | (<i64>chunks << 16));
  atomic.store<i32>(ctrl + GENERATION, gen);
  atomic.notify(ctrl + GENERATION, threads - 1);
  runChunks(0, gen);
  return waitFor(ctrl + COMPLETED, chunks, timeoutMs, CALLER_SPIN);
}

/** Waits until the counter at `at` reaches `target`: 0, or -1 after `timeoutMs` (a worker died
 * holding a chunk, or never saw OP_EXIT). */
function waitFor(at: usize, target: i32, timeoutMs: i32, spin: i32 = SPIN): i32 {
  let spins = 0;
  let waitedMs: i64 = 0;
  for (;;) {
    const done = atomic.load<i32>(at);
    if (done >= target) return 0;
    if (++spins < spin) continue;
    spins = 0;
    if (callerCanWait) {
      // 10 ms slices: the thread that reaches the target notifies, so this returns at once.
      memory.atomic.wait32(at, done, 10_000_000);
      waitedMs += 10;
    } else waitedMs += 1; // a browser's main thread may only spin: count spin rounds instead
    if (waitedMs > <i64>timeoutMs) return -1;
  }
  return 0; // not reached
}

/** A worker's life: wait for an op, claim and run its chunks, repeat until OP_EXIT. */
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
    if (workerOp(index, gen) == OP_EXIT) return;
  }
}

/** The op of generation `gen` on worker `index`: its chunks, or for OP_EXIT a report that this
 * worker has seen it. Returns the op. */
function workerOp(index: i32, gen: i32): i32 {
  const op = atomic.load<i32>(ctrl + OP);
  if (op != OP_EXIT) runChunks(index, gen);
  else if (atomic.add<i32>(ctrl + DONE, 1) + 1 == threads - 1) atomic.notify(ctrl + DONE, 1);
  return op;
}

/**
 * One op of a worker whose waiting loop runs in JavaScript (used on Node 20, whose baseline wasm
 * compiler mis-runs workerLoop's wait loop): claims and runs chunks of the op of generation `gen`
 * (the one it saw), and returns the op (OP_EXIT = 0 means stop).
 */
export function workerStep(control: usize, index: i32, n: i32, gen: i32): i32 {
  ctrl = control;
  threads = n;
  // The caller may have grown the shared memory since the last op. Node 20's V8 does not pass the
  // new size on to a worker that was blocked meanwhile (it traps out of bounds) until that worker
  // asks for the memory size itself; growing by 0 pages does.
  memory.grow(0);
  return workerOp(index, gen);
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
  // Multiples of eight: a chunk starts at a group of interleaved rows.
  return dispatch(bf16 ? OP_MATMUL_BF16 : OP_MATMUL_F32, rows, 8, timeoutMs);
}

/** attention over every token and head, split across the threads; `scratchStride` bytes of
 * scratch each. */
export function parAttention(
  q: usize, k: usize, v: usize, kCache: usize, vCache: usize, out: usize, scratch: usize,
  tokens: i32, startPos: i32, heads: i32, kvHeads: i32, headDim: i32,
  capacity: i32, window: i32, scale: f32, scratchStride: usize, timeoutMs: i32,
): i32 {
  setArg<usize>(0, q);
  setArg<usize>(1, k);
  setArg<usize>(2, v);
  setArg<usize>(3, kCache);
  setArg<usize>(4, vCache);
  setArg<usize>(5, out);
  setArg<usize>(6, scratch);
  setArg<i32>(7, tokens);
  setArg<i32>(8, startPos);
  setArg<i32>(9, heads);
  setArg<i32>(10, kvHeads);
  setArg<i32>(11, headDim);
  setArg<i32>(12, capacity);
  setArg<i32>(13, window);
  setArg<f32>(14, scale);
  setArg<usize>(15, scratchStride);
  // Items are (token, head) pairs. Chunks of whole KV-head groups let a token's heads share one
  // pass over the keys; with fewer groups than threads (one token: a decode step), chunks of a
  // thread's share of a group's heads.
  const group = heads / kvHeads;
  const align = tokens * kvHeads >= threads ? group : max(1, group / threads);
  return dispatch(OP_ATTENTION, tokens * heads, align, timeoutMs);
}

/** matmulQuant over all rows (x already quantized), split across the threads; thread t packs into
 * packed + t · packedStride (packed 0: no packing). */
export function parMatmulQuant(fmt: i32, w: usize, qx: usize, sx: usize, y: usize, rows: i32, cols: i32, tokens: i32, interleaved: i32, packed: usize, packedStride: usize, timeoutMs: i32): i32 {
  setArg<i32>(0, fmt);
  setArg<usize>(1, w);
  setArg<usize>(2, qx);
  setArg<usize>(3, sx);
  setArg<usize>(4, y);
  setArg<i32>(5, rows);
  setArg<i32>(6, cols);
  setArg<i32>(7, tokens);
  setArg<i32>(8, interleaved);
  setArg<usize>(9, packed);
  setArg<usize>(10, packedStride);
  return dispatch(OP_MATMUL_QUANT, rows, 4, timeoutMs);
}

/** geglu over n elements, split across the threads. */
export function parGeglu(gate: usize, up: usize, out: usize, n: i32, timeoutMs: i32): i32 {
  setArg<usize>(0, gate);
  setArg<usize>(1, up);
  setArg<usize>(2, out);
  setArg<i32>(3, n);
  return dispatch(OP_GEGLU, n, 4, timeoutMs);
}

/** ropeApply over all tokens, split across the threads by token. */
export function parRope(x: usize, table: usize, tokens: i32, heads: i32, headDim: i32, timeoutMs: i32): i32 {
  setArg<usize>(0, x);
  setArg<usize>(1, table);
  setArg<i32>(2, tokens);
  setArg<i32>(3, heads);
  setArg<i32>(4, headDim);
  return dispatch(OP_ROPE, tokens, 1, timeoutMs);
}

/** rmsNorm over all rows, split across the threads by row. */
export function parRmsNorm(x: usize, w: usize, out: usize, rows: i32, n: i32, eps: f32, timeoutMs: i32): i32 {
  setArg<usize>(0, x);
  setArg<usize>(1, w);
  setArg<usize>(2, out);
  setArg<i32>(3, rows);
  setArg<i32>(4, n);
  setArg<f32>(5, eps);
  return dispatch(OP_RMSNORM, rows, 1, timeoutMs);
}

/** quantizeRowsQ8 over all blocks, split across the threads. */
export function parQuantizeRowsQ8(x: usize, tokens: i32, cols: i32, qx: usize, sx: usize, timeoutMs: i32): i32 {
  const blocks = tokens * (cols / 32);
  setArg<usize>(0, x);
  setArg<usize>(1, qx);
  setArg<usize>(2, sx);
  setArg<usize>(3, activationSums(sx, blocks));
  setArg<usize>(4, activationHalfSums(sx, blocks));
  setArg<usize>(5, activationWide(sx, tokens, cols, blocks));
  setArg<i32>(6, activationWideBlocks(tokens, cols));
  return dispatch(OP_QUANTIZE, blocks, 1, timeoutMs);
}

/** Reads `bytes` at p with every thread (a bandwidth probe); returns the sum of their sums. */
export function parStreamRead(p: usize, bytes: i32, timeoutMs: i32): f32 {
  setArg<usize>(0, p);
  setArg<i32>(1, bytes);
  for (let t = 0; t < threads; t++) store<f32>(ctrl + RESULTS + (<usize>t << 3), 0);
  if (dispatch(OP_STREAM, bytes >> 6, 1, timeoutMs) != 0) return <f32>NaN;
  let s: f32 = 0;
  for (let t = 0; t < threads; t++) s += load<f32>(ctrl + RESULTS + (<usize>t << 3));
  return s;
}

/** Stops every worker (they return from workerLoop): 0, or -1 if not all saw it in time. */
export function threadsExit(timeoutMs: i32): i32 {
  atomic.store<i32>(ctrl + DONE, 0);
  atomic.store<i32>(ctrl + OP, OP_EXIT);
  atomic.add<i32>(ctrl + GENERATION, 1);
  atomic.notify(ctrl + GENERATION, threads - 1);
  return waitFor(ctrl + DONE, threads - 1, timeoutMs);
}
