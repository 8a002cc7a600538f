// Chat templates. Gemma 3's official template is rendered by a small function written from it
// (no dependency, works everywhere); any other template (a fine-tune's own) is rendered with
// @huggingface/jinja, the ecosystem's Jinja implementation, imported only when needed.

import { describeValue } from "../formats/quote.ts";

/** A chat message; content is a string or a list of parts (text parts are used). */
export interface ChatMessage {
  /** "system", "user", "assistant" (or "model"). */
  role: "system" | "user" | "assistant" | "model" | string;
  /** The text, or parts such as `{ type: "text", text }`. */
  content: string | { type: string; text?: string }[];
}

/** The official Gemma 3 chat template (tokenizer_config.json of google/gemma-3-*-it). */
const GEMMA3_TEMPLATE = `{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
`;

const squash = (t: string) => t.replace(/\s+/g, "");

/** Python's str.strip() (Jinja's `trim`), which strips a slightly different set than JS trim(). */
const PY_SPACE = new Set(
  [..."\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"].map((c) =>
    c.charCodeAt(0)
  ),
);
for (let c = 0x2000; c <= 0x200a; c++) PY_SPACE.add(c);
function pyStrip(s: string): string {
  let a = 0, b = s.length;
  while (a < b && PY_SPACE.has(s.charCodeAt(a))) a++;
  while (b > a && PY_SPACE.has(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

/** Gemma 3's template, written out: a system message folds into the first user turn. */
function renderGemma3(messages: ChatMessage[], addGenerationPrompt: boolean, bos: string): string {
  if (messages.length === 0) throw new Error("a chat needs at least one message");
  let prefix = "";
  let loop = messages;
  if (messages[0].role === "system") {
    const c = messages[0].content;
    prefix = (typeof c === "string" ? c : (c[0]?.text ?? "")) + "\n\n";
    loop = messages.slice(1);
  }
  let out = bos;
  loop.forEach((m, i) => {
    if ((m.role === "user") !== (i % 2 === 0)) {
      throw new Error("Conversation roles must alternate user/assistant/user/assistant/...");
    }
    out += `<start_of_turn>${m.role === "assistant" ? "model" : m.role}\n${i === 0 ? prefix : ""}`;
    if (typeof m.content === "string") out += pyStrip(m.content);
    else if (Array.isArray(m.content)) {
      for (const item of m.content) {
        if (item.type === "image") out += "<start_of_image>";
        else if (item.type === "text") out += pyStrip(item.text ?? "");
      }
    } else throw new Error("Invalid content type");
    out += "<end_of_turn>\n";
  });
  if (addGenerationPrompt) out += "<start_of_turn>model\n";
  return out;
}

type Renderer = (ctx: Record<string, unknown>) => string;

/** A chat template: Gemma 3's built in, or a model's own Jinja source. */
export class ChatTemplate {
  /** The Jinja source. */
  readonly source: string;
  /** Whether this is Gemma 3's official template (rendered without Jinja). */
  readonly isGemma3: boolean;
  readonly #jinja: Renderer | undefined;
  /** Where the template came from, for errors (a model's template is the model's code). */
  readonly #where: string;

  private constructor(source: string, isGemma3: boolean, jinja?: Renderer, where = "") {
    this.source = source;
    this.isGemma3 = isGemma3;
    this.#jinja = jinja;
    this.#where = where;
  }

  /** Gemma 3's official template. */
  static gemma3(): ChatTemplate {
    return new ChatTemplate(GEMMA3_TEMPLATE, true);
  }

  /** A template from its Jinja source; anything but Gemma 3's own is compiled with Jinja now.
   * `where` names its file in errors. */
  static async fromSource(source: string, where = "the model's files"): Promise<ChatTemplate> {
    if (squash(source) === squash(GEMMA3_TEMPLATE)) return new ChatTemplate(source, true);
    try {
      return new ChatTemplate(source, false, await compileJinja(source), where);
    } catch (e) {
      // Loading still succeeds (encode/decode need no template); rendering says why it cannot.
      // @huggingface/jinja's parser reads past its last token on a template cut short, and
      // fails with a TypeError that says nothing about the template.
      const why = e instanceof TypeError
        ? "its source is not valid Jinja (the parser ran past its end: is it cut short?)"
        : `its source is not valid Jinja: ${(e as Error)?.message ?? e}`;
      const error = new Error(why, { cause: e });
      return new ChatTemplate(source, false, () => {
        throw error;
      }, where);
    }
  }

  /** Renders messages to the prompt text (which starts with the BOS text). */
  render(
    messages: ChatMessage[],
    options: { addGenerationPrompt?: boolean; bosToken?: string; eosToken?: string } = {},
  ): string {
    if (!Array.isArray(messages)) {
      throw new TypeError("messages must be an array of { role, content }");
    }
    for (const [i, m] of messages.entries()) {
      if (typeof m !== "object" || m === null || typeof m.role !== "string") {
        throw new TypeError(`message ${i} must be an object with a string role`);
      }
      const c = m.content as unknown;
      if (typeof c === "string") continue;
      if (!Array.isArray(c)) {
        throw new TypeError(
          `message ${i}: content must be a string or a list of parts, got ${describeValue(c)}`,
        );
      }
      for (const [j, part] of c.entries()) {
        if (typeof part !== "object" || part === null || typeof part.type !== "string") {
          throw new TypeError(
            `message ${i}: content[${j}] must be a part such as { type: "text", text }, got ${
              describeValue(part)
            }`,
          );
        }
        if (part.type === "text" && typeof part.text !== "string") {
          throw new TypeError(
            `message ${i}: content[${j}] is a text part whose text is ${describeValue(part.text)}`,
          );
        }
      }
    }
    const add = options.addGenerationPrompt ?? false;
    const bos = options.bosToken ?? "<bos>";
    if (this.#jinja === undefined) return renderGemma3(messages, add, bos);
    // Jinja holds every message and part as its own values while it renders, about 10 KB each:
    // 100,000 parts took 1 GB and V8's fatal abort. Gemma's built-in renderer has no such cost.
    let items = messages.length;
    for (const m of messages) if (Array.isArray(m.content)) items += m.content.length;
    if (items > TEMPLATE_BUDGET.items) {
      throw new Error(
        `the model's chat template (${this.#where}) renders at most ${TEMPLATE_BUDGET.items} ` +
          `messages and content parts in all; this chat has ${items}`,
      );
    }
    try {
      return this.#jinja({
        messages,
        add_generation_prompt: add,
        bos_token: bos,
        eos_token: options.eosToken ?? "<eos>",
      });
    } catch (e) {
      // The template is the model's code: say so, and where it came from.
      throw new Error(
        `the model's chat template (${this.#where}) failed: ${(e as Error)?.message ?? e}`,
        { cause: e },
      );
    }
  }
}

/** What a model's own template may spend on one render: evaluation steps (a chat of a hundred
 * messages takes tens of thousands), time, items made by range() in all, and messages plus
 * content parts given to it (Jinja holds each as values of about 10 KB: 10,000 take ~100 MB and
 * under a second; a 32k-token context rarely holds more). A template is the model's code:
 * `range(100000000)` would take 1.7 GB and end the process, nested loops would never end. */
export const TEMPLATE_BUDGET = {
  steps: 5_000_000,
  ms: 2_000,
  rangeItems: 1_000_000,
  items: 10_000,
};

// The parts of @huggingface/jinja used here (0.5.1): the parser (through Template), and the
// interpreter and environment it renders with, so that a render can be given a budget.
type JinjaValue = { value: unknown };
type JinjaEnvironment = { set(name: string, value: unknown): unknown };
type JinjaModule = {
  Template: new (s: string) => { parsed: unknown; render(ctx: Record<string, unknown>): string };
  Environment: new () => JinjaEnvironment;
  Interpreter: new (env: JinjaEnvironment) => {
    run(program: unknown): JinjaValue;
    evaluate(statement: unknown, environment: unknown): JinjaValue;
  };
};

async function compileJinja(source: string): Promise<Renderer> {
  let mod: JinjaModule | undefined;
  // Deno resolves npm: specifiers; Bun and Node resolve the bare name from node_modules.
  for (const spec of ["npm:@huggingface/jinja@0.5.1", "@huggingface/jinja"]) {
    try {
      mod = await import(spec) as JinjaModule;
      break;
    } catch { /* try the next way */ }
  }
  if (!mod) {
    throw new Error(
      "this model has its own chat template, which needs @huggingface/jinja: run under Deno, or " +
        "install it (npm i @huggingface/jinja)",
    );
  }
  const template = new mod.Template(source);
  const globals = jinjaGlobals(mod);
  const originalRange = globals.get("range") as (a: number, b?: number, c?: number) => number[];
  // range() is where a loop's length comes from: the items it makes, over one whole render, are
  // counted (a loop over a range makes no evaluation step when its body is empty).
  const countedRange = (made: { items: number }) => (start: number, stop?: number, step = 1) => {
    const [from, to] = stop === undefined ? [0, start] : [start, stop];
    if (step === 0) throw new Error("range() step must not be zero");
    const items = Math.max(0, Math.ceil((to - from) / step));
    made.items += items;
    if (!(made.items <= TEMPLATE_BUDGET.rangeItems)) {
      throw new Error(
        `range() made more than ${TEMPLATE_BUDGET.rangeItems} items in one render (${items} in this call)`,
      );
    }
    return originalRange(from, to, step);
  };
  // Every evaluation counts a step; the clock is looked at every 4,096 of them.
  class BudgetedInterpreter extends mod.Interpreter {
    steps = 0;
    deadline = performance.now() + TEMPLATE_BUDGET.ms;
    override evaluate(statement: unknown, environment: unknown): JinjaValue {
      if (++this.steps > TEMPLATE_BUDGET.steps) {
        throw new Error(`it ran past ${TEMPLATE_BUDGET.steps} steps`);
      }
      if ((this.steps & 4095) === 0 && performance.now() > this.deadline) {
        throw new Error(`it ran past ${TEMPLATE_BUDGET.ms} ms`);
      }
      return super.evaluate(statement, environment);
    }
  }
  return (ctx) => {
    const env = new mod!.Environment();
    const made = { items: 0 };
    for (const [name, value] of globals) {
      env.set(name, name === "range" ? countedRange(made) : value);
    }
    for (const [name, value] of Object.entries(ctx)) env.set(name, value);
    return new BudgetedInterpreter(env).run(template.parsed).value as string;
  };
}

/**
 * The globals a Template.render sets up (true, none, raise_exception, range, strftime_now, ...),
 * read off one empty render: the library does not export the function that sets them, and this
 * way they stay whatever its version defines.
 */
function jinjaGlobals(mod: JinjaModule): Map<string, unknown> {
  const globals = new Map<string, unknown>();
  const proto = mod.Environment.prototype as JinjaEnvironment;
  const set = proto.set;
  proto.set = function (this: JinjaEnvironment, name: string, value: unknown) {
    globals.set(name, value);
    return set.call(this, name, value);
  };
  try {
    new mod.Template("").render({});
  } finally {
    proto.set = set;
  }
  return globals;
}
