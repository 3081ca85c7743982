/**
 * The benchmark's model presets: random weights (seeded) in the shapes the issue names.
 * Each preset is a Hugging Face config.json object plus the LoRA targets and the batch shape.
 */

export interface ModelPreset {
  /** Short id used on the command line (--models a,b). */
  id: string;
  /** One line for the table. */
  label: string;
  /** config.json as Hugging Face writes it. */
  config: Record<string, unknown>;
  /** LoRA target_modules (PEFT's default for the family). */
  targets: string[];
  note?: string;
  batch: number;
  seq: number;
  /** Shorter sequence for --quick runs. */
  quickSeq: number;
}

export const PRESETS: Record<string, ModelPreset> = {
  a: {
    id: "a",
    label: "gpt2-small (L12 d768 H12 V50257)",
    config: {
      model_type: "gpt2",
      activation_function: "gelu_new",
      vocab_size: 50257,
      n_positions: 1024,
      n_embd: 768,
      n_layer: 12,
      n_head: 12,
      layer_norm_epsilon: 1e-5,
    },
    targets: ["c_attn"],
    note: "LoRA on c_attn: GPT-2 fuses q, k, v in one Conv1D, so the issue's \"q and v\" is c_attn (PEFT's GPT-2 default) on both sides",
    batch: 1,
    seq: 256,
    quickSeq: 64,
  },
  b: {
    id: "b",
    label: "llama-small (L4 d256 H8 I688 V8192)",
    config: {
      model_type: "llama",
      hidden_act: "silu",
      vocab_size: 8192,
      hidden_size: 256,
      intermediate_size: 688,
      num_hidden_layers: 4,
      num_attention_heads: 8,
      num_key_value_heads: 8,
      max_position_embeddings: 512,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      tie_word_embeddings: false,
    },
    targets: ["q_proj", "v_proj"],
    batch: 8,
    seq: 256,
    quickSeq: 32,
  },
  /** A toy model for smoke tests of the harness itself. */
  tiny: {
    id: "tiny",
    label: "llama-tiny (L2 d32 H4 I64 V128)",
    config: {
      model_type: "llama",
      hidden_act: "silu",
      vocab_size: 128,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 4,
      max_position_embeddings: 128,
      rms_norm_eps: 1e-6,
      rope_theta: 10000,
      tie_word_embeddings: false,
    },
    targets: ["q_proj", "v_proj"],
    batch: 2,
    seq: 16,
    quickSeq: 16,
  },
};

export function preset(id: string): ModelPreset {
  const p = PRESETS[id];
  if (!p) throw new Error(`unknown model "${id}"; available: ${Object.keys(PRESETS).join(", ")}`);
  return p;
}
