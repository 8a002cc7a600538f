// A float64 Gemma 3 forward pass for tests, written from the Hugging Face modeling code
// (Gemma3ForCausalLM) without a KV cache: every position is recomputed from scratch. It reads the
// raw config.json keys itself and shares no code with engine/, so it checks the engine's config
// handling as well as its arithmetic. It is validated against shared/fixtures' independent
// float64 logits in tests/reference_test.ts.

type Cfg = Record<string, unknown>;

function layerIsSliding(c: Cfg, i: number): boolean {
  const types = c.layer_types as string[] | undefined;
  if (types) return types[i] === "sliding_attention";
  const pattern = (c.sliding_window_pattern ?? c._sliding_window_pattern ?? 6) as number;
  return (i + 1) % pattern !== 0;
}

/** Logits at every position of `ids`, [tokens][vocab], in float64. */
export function referenceLogits(
  config: Cfg,
  weights: Record<string, Float32Array>,
  ids: number[],
): Float64Array[] {
  const c = config as Record<string, number>;
  const H = c.hidden_size, nh = c.num_attention_heads, nkv = c.num_key_value_heads, d = c.head_dim;
  const F = c.intermediate_size, V = c.vocab_size, eps = c.rms_norm_eps, T = ids.length;
  const scaling = config.rope_scaling as
    | { rope_type?: string; type?: string; factor: number }
    | null;
  const linearFactor = scaling && (scaling.rope_type ?? scaling.type) === "linear"
    ? scaling.factor
    : 1;
  const W = (n: string) => {
    const w = weights[n];
    if (!w) throw new Error(`reference: no tensor ${n}`);
    return w;
  };
  const norm = (x: Float64Array, w: Float32Array): Float64Array => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const inv = 1 / Math.sqrt(ss / x.length + eps);
    return x.map((v, i) => v * inv * (1 + w[i]));
  };
  const linear = (x: Float64Array, w: Float32Array, rows: number): Float64Array => {
    const cols = x.length, out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = 0; k < cols; k++) s += w[r * cols + k] * x[k];
      out[r] = s;
    }
    return out;
  };
  const rope = (x: Float64Array, pos: number, base: number, factor: number) => {
    const half = d / 2;
    for (let i = 0; i < half; i++) {
      const a = (pos / factor) * Math.pow(base, -(2 * i) / d);
      const x1 = x[i], x2 = x[i + half];
      x[i] = x1 * Math.cos(a) - x2 * Math.sin(a);
      x[i + half] = x2 * Math.cos(a) + x1 * Math.sin(a);
    }
  };
  const gelu = (x: number) =>
    0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

  const emb = W("model.embed_tokens.weight");
  const scale = Math.fround(Math.sqrt(H)); // Hugging Face: sqrt(hidden) in the activation dtype
  let xs = ids.map((id) => Float64Array.from(emb.subarray(id * H, (id + 1) * H), (v) => v * scale));
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const sliding = layerIsSliding(config, l);
    const base = sliding ? (c.rope_local_base_freq ?? 10000) : (c.rope_theta ?? 1e6);
    const factor = sliding ? 1 : linearFactor;
    const qs: Float64Array[][] = [], ks: Float64Array[][] = [], vs: Float64Array[][] = [];
    for (let t = 0; t < T; t++) {
      const h = norm(xs[t], W(p + "input_layernorm.weight"));
      const q = linear(h, W(p + "self_attn.q_proj.weight"), nh * d);
      const k = linear(h, W(p + "self_attn.k_proj.weight"), nkv * d);
      const v = linear(h, W(p + "self_attn.v_proj.weight"), nkv * d);
      qs.push(Array.from({ length: nh }, (_, i) => {
        const qh = norm(q.slice(i * d, (i + 1) * d), W(p + "self_attn.q_norm.weight"));
        rope(qh, t, base, factor);
        return qh;
      }));
      ks.push(Array.from({ length: nkv }, (_, i) => {
        const kh = norm(k.slice(i * d, (i + 1) * d), W(p + "self_attn.k_norm.weight"));
        rope(kh, t, base, factor);
        return kh;
      }));
      vs.push(Array.from({ length: nkv }, (_, i) => v.slice(i * d, (i + 1) * d)));
    }
    const scale = (c.query_pre_attn_scalar as number) ** -0.5;
    xs = xs.map((x, t) => {
      const attn = new Float64Array(nh * d);
      for (let hd = 0; hd < nh; hd++) {
        const g = Math.floor(hd / (nh / nkv));
        // HF's sliding mask: key j is visible to query t when t - j < sliding_window.
        const lo = sliding ? Math.max(0, t - c.sliding_window + 1) : 0;
        const s: number[] = [];
        for (let j = lo; j <= t; j++) {
          let dot = 0;
          for (let i = 0; i < d; i++) dot += qs[t][hd][i] * ks[j][g][i];
          s.push(dot * scale);
        }
        const m = Math.max(...s);
        const e = s.map((v) => Math.exp(v - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = lo; j <= t; j++) {
          for (let i = 0; i < d; i++) attn[hd * d + i] += (e[j - lo] / z) * vs[j][g][i];
        }
      }
      const o = norm(
        linear(attn, W(p + "self_attn.o_proj.weight"), H),
        W(p + "post_attention_layernorm.weight"),
      );
      const h1 = x.map((v, i) => v + o[i]);
      const n = norm(h1, W(p + "pre_feedforward_layernorm.weight"));
      const gate = linear(n, W(p + "mlp.gate_proj.weight"), F);
      const up = linear(n, W(p + "mlp.up_proj.weight"), F);
      const down = linear(gate.map((g, i) => gelu(g) * up[i]), W(p + "mlp.down_proj.weight"), H);
      const f = norm(down, W(p + "post_feedforward_layernorm.weight"));
      return h1.map((v, i) => v + f[i]);
    });
  }
  const head = config.tie_word_embeddings === false ? W("lm_head.weight") : emb;
  return xs.map((x) => linear(norm(x, W("model.norm.weight")), head, V));
}
