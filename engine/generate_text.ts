// Generation as text, shared by model.chat and the server: keep what the session already holds
// of the prompt, evaluate the rest, then stream decoded text, holding back what could still
// become a stop string; each token's log-probabilities travel with the text its token starts in.

import type { FinishReason, GenerateOptions, GenerationEnd, Session } from "./session.ts";
import { checkTopLogprobs, logprobsOf, type TokenLogprob, validateSampling } from "./sampling.ts";
import { compileConstraint } from "./grammar/constraint.ts";
import type { Tokenizer } from "./tokenizer/tokenizer.ts";
import { StopStrings } from "./stop_strings.ts";
import { lookupSettings } from "./prompt_lookup.ts";

/** Options of text generation: generate's, plus stop strings and cancellation. */
export interface TextGenerationOptions extends GenerateOptions {
  /** Strings that end the answer where they appear in its text (matched across token
   * boundaries; the stop string itself is not yielded). */
  stop?: string[];
  /** Stops generation when it fires (finish reason "abort"). */
  signal?: AbortSignal;
}

/** A token's log-probabilities with its text, as OpenAI's chat API gives them. */
export interface TextLogprob {
  /** The token's text. */
  token: string;
  /** Its log-probability (natural log, before sampling filters and grammar masks). */
  logprob: number;
  /** Its bytes (a token may hold part of a character). */
  bytes: number[];
  /** The most likely tokens at that step, best first. */
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** A piece of streamed text and the log-probabilities of the tokens that start in it. */
export interface TextPiece {
  /** Text to show (never part of a stop string, never half a character). */
  text: string;
  /** The tokens whose text starts in `text`. */
  logprobs: TextLogprob[];
  /** Where each of those tokens' text starts in the whole answer (UTF-16 offsets). */
  offsets: number[];
}

/** How a text generation went. */
export interface TextGenerationEnd {
  /** Why it ended ("abort": the signal fired). */
  finishReason: FinishReason | "abort";
  /** Tokens in the prompt. */
  promptTokens: number;
  /** Prompt tokens not computed again (kept from the session's earlier work). */
  cachedTokens: number;
  /** Tokens generated. */
  completionTokens: number;
  /** Time to evaluate the prompt (what the session did not hold), in ms. */
  promptMs: number;
  /** Time generating, in ms. */
  generateMs: number;
  /** With `speculative`: what the drafts did (GenerationEnd.speculative). */
  speculative?: GenerationEnd["speculative"];
  /** With `logprobs`: every token whose text was yielded. */
  logprobs?: TextLogprob[];
  /** Where each of those tokens' text starts in the answer (UTF-16 offsets). */
  textOffsets?: number[];
}

/** Generates text after `prompt` (token ids) on `session`. */
export async function* generateText(
  session: Session,
  tokenizer: Tokenizer,
  prompt: number[],
  options: TextGenerationOptions = {},
): AsyncGenerator<TextPiece, TextGenerationEnd> {
  if (prompt.length > session.contextLength) {
    throw new RangeError(
      `the prompt is ${prompt.length} tokens, more than the context length ${session.contextLength}`,
    );
  }
  // Bad options fail here, before the prompt is evaluated (and the session changed).
  const stops = new StopStrings(options.stop);
  checkTopLogprobs(options.logprobs);
  validateSampling(options);
  compileConstraint(options);
  lookupSettings(options.speculative);
  const kept = session.reusePrefix(prompt);
  // Reported as cached: what is not computed again. A sliding-window layer's ring may have
  // overwritten keys the kept tokens need; then truncate has them evaluated again.
  const cachedTokens = session.evaluatedTokens;
  const t0 = performance.now();
  await session.eval(prompt.slice(kept));
  const promptMs = performance.now() - t0;
  const decoder = tokenizer.streamDecoder({ skipSpecialTokens: true });
  const entry = (id: number, logprob: number) => ({
    token: tokenizer.decode([id]),
    logprob,
    bytes: [...tokenizer.tokenBytes(id)],
  });
  const textLogprob = (l: TokenLogprob): TextLogprob => ({
    ...entry(l.id, l.logprob),
    top_logprobs: l.top.map((t) => entry(t.id, t.logprob)),
  });
  // Each token's log-probabilities and where its text starts; they go out with the text the
  // token starts in, and those of a stop string's tokens (never sent) are dropped.
  const top = options.logprobs;
  const lps: TokenLogprob[] = [];
  const offsets: number[] = [];
  const sent: TextLogprob[] = [];
  let decoded = 0, emitted = 0;
  // A token's logits come before it is yielded (with speculative decoding, several tokens'
  // before the first of them is): its text offset is taken when it is yielded.
  const onLogits = top === undefined ? options.onLogits : (logits: Float32Array, id: number) => {
    lps.push(logprobsOf(logits, id, top));
    options.onLogits?.(logits, id);
  };
  const piece = (text: string): TextPiece => {
    emitted += text.length;
    const from = sent.length;
    while (sent.length < offsets.length && offsets[sent.length] < emitted) {
      sent.push(textLogprob(lps[sent.length]));
    }
    return { text, logprobs: sent.slice(from), offsets: offsets.slice(from, sent.length) };
  };
  const tokens = session.generate([], { ...options, logprobs: undefined, onLogits });
  let n = 0;
  let finishReason: FinishReason | "abort" | undefined;
  let speculative: GenerationEnd["speculative"];
  const t1 = performance.now();
  for (let step = await tokens.next();; step = await tokens.next()) {
    if (step.done) {
      finishReason = step.value.finishReason;
      speculative = step.value.speculative;
      break;
    }
    n++;
    if (options.signal?.aborted) {
      finishReason = "abort";
      break;
    }
    if (top !== undefined) offsets.push(decoded);
    const text = decoder.push(step.value);
    decoded += text.length;
    const p = piece(stops.push(text));
    if (p.text || p.logprobs.length) yield p;
    if (stops.stopped) {
      finishReason = "stop";
      break;
    }
  }
  // Stopped early: the session's generator ends too (tokens it decided but did not yield yet,
  // with speculative decoding, leave the context).
  if (finishReason === "stop" || finishReason === "abort") await tokens.return(undefined as never);
  else {
    const p = piece(stops.push(decoder.flush()) + stops.flush());
    if (p.text || p.logprobs.length) yield p;
  }
  const end: TextGenerationEnd = {
    finishReason: finishReason!,
    promptTokens: prompt.length,
    cachedTokens,
    completionTokens: n,
    promptMs,
    generateMs: performance.now() - t1,
    ...speculative && { speculative },
  };
  if (top !== undefined) {
    end.logprobs = sent;
    end.textOffsets = offsets.slice(0, sent.length);
  }
  return end;
}
