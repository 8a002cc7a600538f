// The server's slots: a fixed number of sessions, each with its own KV cache, shared by all
// requests. A request takes the idle slot whose held tokens share the longest prefix with its
// prompt (a returning conversation then evaluates only its new tokens); when every slot is busy
// it waits in a bounded first-in-first-out queue; beyond that it is refused. Busy slots take
// turns token by token: each step of each session is one turn at the model (Session.eval waits
// for it), so requests interleave fairly without a scheduler of their own.

import type { Gemma3Model } from "../model.ts";
import type { CheckpointOptions, Session } from "../session.ts";

/** One slot: a session and whether a request holds it. */
export interface Slot {
  readonly index: number;
  readonly session: Session;
  busy: boolean;
}

/** Every slot is busy and the queue is full. */
export class QueueFullError extends Error {}

export class SlotPool {
  readonly slots: Slot[];
  readonly maxQueue: number;
  #waiting: { prompt: number[]; grant: (slot: Slot) => void }[] = [];

  /** Why there are fewer slots than asked for (undefined when all were made). */
  readonly shortfall: string | undefined;

  /** Makes `count` slots of `contextLength` tokens (default: a session's default), or as many
   * as memory allows (at least one, else it throws). */
  constructor(
    model: Gemma3Model,
    count: number,
    contextLength: number | undefined,
    maxQueue: number,
    checkpoints?: CheckpointOptions,
  ) {
    this.slots = [];
    for (let index = 0; index < count; index++) {
      try {
        const session = model.createSession({ contextLength, checkpoints });
        this.slots.push({ index, session, busy: false });
      } catch (e) {
        if (index === 0) throw e;
        this.shortfall = `${index} of ${count} slots: no memory for more KV caches of ` +
          `${this.contextLength} tokens (${(e as Error).message})`;
        break;
      }
    }
    this.maxQueue = maxQueue;
  }

  /** Tokens each slot holds, prompt and answer. */
  get contextLength(): number {
    return this.slots[0].session.contextLength;
  }

  get busy(): number {
    return this.slots.filter((s) => s.busy).length;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  /** A slot for `prompt`, now or when one frees up; QueueFullError when the queue is full.
   * `signal` aborting while queued gives up the place (and rejects). */
  acquire(prompt: number[], signal?: AbortSignal): Promise<Slot> {
    const idle = this.#bestIdle(prompt);
    if (idle) {
      idle.busy = true;
      return Promise.resolve(idle);
    }
    if (this.#waiting.length >= this.maxQueue) {
      return Promise.reject(
        new QueueFullError(
          `all ${this.slots.length} slots are busy and ${this.maxQueue} requests are queued`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const entry = { prompt, grant: resolve };
      this.#waiting.push(entry);
      signal?.addEventListener("abort", () => {
        const i = this.#waiting.indexOf(entry);
        if (i >= 0) {
          this.#waiting.splice(i, 1);
          reject(signal.reason);
        }
      }, { once: true });
    });
  }

  /** Gives a slot back: to the first queued request, or idle. */
  release(slot: Slot): void {
    const next = this.#waiting.shift();
    if (next) next.grant(slot);
    else slot.busy = false;
  }

  /** The idle slot that would compute the least of `prompt` again: the most of it kept in its
   * cache or a checkpoint (the first such, on ties). */
  #bestIdle(prompt: number[]): Slot | undefined {
    let best: Slot | undefined, bestLen = -1;
    for (const slot of this.slots) {
      if (slot.busy) continue;
      const n = slot.session.reusableTokens(prompt);
      if (n > bestLen) [best, bestLen] = [slot, n];
    }
    return best;
  }

  dispose(): void {
    for (const s of this.slots) s.session.dispose();
  }
}
