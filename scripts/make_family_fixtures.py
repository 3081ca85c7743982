"""Fixtures for the newer model families, made by the real Hugging Face stack (issue #13).

Each fixture is a tiny random checkpoint built from its transformers config class and saved with
`save_pretrained` (transformers 5 writes `rope_parameters`), a PEFT adapter made with `get_peft_model`
(init_lora_weights=False, so B is nonzero), and expected.json in the format of make_fixtures.py:
base and adapter logits and losses, the LoRA gradients of the adapter loss, PEFT's merged logits, and one
torch.optim.SGD step from the adapter (the LoRA weights after it, and the loss they give).

Run with the venv of the README (torch, transformers and peft from pip):
    python3 -m venv V && V/bin/pip install torch transformers peft
    V/bin/python scripts/make_family_fixtures.py [name ...]   (no names: every fixture)
The tests need no Python; they read what this writes under test/fixtures/models/.
"""

import json
import os
import shutil
import sys

import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "models")
VOCAB = 71
SGD_LR = 0.5
ONLY = set(sys.argv[1:])


def arr(t):
    t = t.detach().float().contiguous()
    return {"shape": list(t.shape), "data": [round(float(x), 8) for x in t.flatten()]}


def lm_loss(logits, ids):
    # mean next-token cross-entropy over every position but the last, as transformers' labels=ids
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)
    )


def make(name, config, targets, T, seed=0, attn=None, cls=None):
    if ONLY and name not in ONLY:
        return
    torch.manual_seed(seed)
    extra = {"attn_implementation": attn} if attn else {}
    if cls:  # a class AutoModelForCausalLM does not build (the multimodal Gemma 3)
        model = cls._from_config(config, dtype=torch.float32, **extra).eval()
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **extra).eval()
    with torch.no_grad():
        for p in model.parameters():  # weights large enough that every feature moves the logits
            p.normal_(0.0, 0.2)
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, VOCAB, (2, T), generator=g)
    with torch.no_grad():
        logits = model(ids).logits
    expected = {
        "made_by": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "input_ids": ids.tolist(),
        "logits_base": arr(logits),
        "loss_base": float(lm_loss(logits, ids)),
    }
    if targets:
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, lora_dropout=0.0)
        peft = get_peft_model(model, lora)
        peft.eval()
        out = peft(ids).logits
        loss = lm_loss(out, ids)
        loss.backward()
        expected["logits_adapter"] = arr(out)
        expected["loss_adapter"] = float(loss)
        expected["grads_adapter"] = {
            f"{n.replace('.default', '')}": arr(p.grad) for n, p in peft.named_parameters() if "lora_" in n
        }
        peft.save_pretrained(os.path.join(d, "adapter"))
        # one SGD step from the saved adapter, then back to it for the merge
        lora_params = {n.replace(".default", ""): p for n, p in peft.named_parameters() if "lora_" in n}
        saved = {n: p.detach().clone() for n, p in lora_params.items()}
        torch.optim.SGD(list(lora_params.values()), lr=SGD_LR).step()
        with torch.no_grad():
            expected["sgd"] = {
                "lr": SGD_LR,
                "loss_after": float(lm_loss(peft(ids).logits, ids)),
                "weights_after": {n: arr(p) for n, p in lora_params.items()},
            }
            for n, p in lora_params.items():
                p.copy_(saved[n])
        with torch.no_grad():
            merged = peft.merge_and_unload()(ids).logits
        expected["logits_merged"] = arr(merged)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(name, {k: v for k, v in expected.items() if k.startswith("loss")})


small = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)

# Llama 3.x rope: head_dim 16 at theta 10000 gives wavelengths below high_freq_wavelen (16), between
# the two, and above low_freq_wavelen (64), so every branch of the llama3 rule is used; T = 80 > 64.
make(
    "llama3_rope",
    transformers.LlamaConfig(
        **small,
        max_position_embeddings=256,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    ["q_proj", "v_proj"],
    T=80,
)
make(
    "llama_rope_linear",
    transformers.LlamaConfig(
        **small, max_position_embeddings=64, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    ),
    ["q_proj", "k_proj"],
    T=40,
)
# dynamic NTK grows the base once the sequence passes max_position_embeddings (32): T = 48
make(
    "llama_rope_dynamic",
    transformers.LlamaConfig(
        **small,
        max_position_embeddings=32,
        rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    ),
    ["q_proj", "v_proj"],
    T=48,
)
# Qwen3: q/k RMSNorm over head_dim per head, an explicit head_dim (12) unequal to hidden/heads (16),
# q/k/v/o biases, an untied head
make(
    "qwen3",
    transformers.Qwen3Config(
        **{**small, "tie_word_embeddings": False},
        head_dim=12,
        attention_bias=True,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    ),
    ["q_proj", "k_proj", "v_proj", "o_proj"],
    T=24,
)
# SmolLM3: no_rope_layers[i] = 1 means layer i uses RoPE; layer 1 is a NoPE layer
make(
    "smollm3",
    transformers.SmolLM3Config(
        **small,
        max_position_embeddings=64,
        no_rope_layers=[1, 0],
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
    ),
    ["q_proj", "v_proj", "down_proj"],
    T=24,
)
# Mistral: every layer attends over a sliding window of 8 keys; T = 24
make(
    "mistral_window",
    transformers.MistralConfig(**small, max_position_embeddings=64, sliding_window=8),
    ["q_proj", "v_proj"],
    T=24,
)
# Gemma 3 text: (1+w) RMSNorms (four per layer, and q/k norms), embeddings scaled by sqrt(hidden), a
# query_pre_attn_scalar unequal to head_dim, gelu_pytorch_tanh, sliding layers (window 6, local theta)
# beside a full one (global theta, linear scaling); T = 20 > window
make(
    "gemma3_text",
    transformers.Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        query_pre_attn_scalar=32,
        max_position_embeddings=64,
        sliding_window=6,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
        },
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    ),
    ["q_proj", "v_proj", "o_proj", "gate_proj"],
    T=20,
)
# Phi-3 / Phi-4-mini: fused qkv_proj and gate_up_proj, RoPE on 3/4 of each head (12 of 16 dims),
# LongRoPE (T = 24 > original 16: the long factors, and the attention factor of 64/16), a sliding window
R2 = 6
make(
    "phi3",
    transformers.Phi3Config(
        **small,
        max_position_embeddings=64,
        original_max_position_embeddings=16,
        sliding_window=10,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.75,
            "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5][:R2],
            "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0][:R2],
            "original_max_position_embeddings": 16,
        },
        pad_token_id=0,
    ),
    ["qkv_proj", "gate_up_proj"],
    T=24,
)
# Gemma 3 text with both soft caps set small enough to bite (Gemma 2 ships 50 and 30; Gemma 3 null): the
# raw attention scores (scaled by 4^-1/2) and logits of this random model pass 5 and 3. Eager attention,
# the implementation that could cap; transformers' Gemma3Attention never passes attn_logit_softcapping
# on, so only the final cap changes these logits (the test checks both facts).
make(
    "gemma3_softcap",
    transformers.Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=4,
        max_position_embeddings=64,
        sliding_window=6,
        layer_types=["sliding_attention", "full_attention"],
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    ),
    ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
    T=16,
    attn="eager",
)

# The multimodal Gemma 3 (model_type "gemma3", Gemma3ForConditionalGeneration): a text model as above
# inside it, a one-layer SigLIP vision tower and the projector, which text-only input never reaches.
# transformers 5 saves the checkpoint as transformers 4 laid it out (language_model.model.*, vision_tower.*,
# multi_modal_projector.*) and holds the modules as model.language_model.*, model.vision_tower.*; PEFT names
# the adapter after the latter. The targets are a regex over the language model (PEFT has no default for
# gemma3; a plain list would adapt the vision tower's q_proj and v_proj too).
make(
    "gemma3_multimodal",
    transformers.Gemma3Config(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=64,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            max_position_embeddings=64,
            sliding_window=6,
            layer_types=["sliding_attention", "full_attention"],
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
        ),
        mm_tokens_per_image=4,
        image_token_index=VOCAB - 1,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
    ),
    r"model\.language_model\..*\.(q_proj|v_proj|down_proj)",
    T=16,
    cls=transformers.Gemma3ForConditionalGeneration,
)

if not ONLY or "gemma3_multimodal" in ONLY:
    # a plain target list, as PEFT applies it to the whole model: the vision tower's q_proj/v_proj too
    d = os.path.join(OUT, "gemma3_multimodal")
    whole = transformers.Gemma3ForConditionalGeneration.from_pretrained(d, dtype=torch.float32)
    get_peft_model(whole, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(
        os.path.join(d, "adapter_with_vision")
    )


def attention_softcap_cases():
    """Attention with a soft cap, computed by transformers' own Gemma 2 eager attention (the one that passes
    softcap on): causal and sliding-window masks built as additive -inf masks, GQA, its own scale."""
    from types import SimpleNamespace

    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    cases = {}
    torch.manual_seed(5)
    for name, (B, T, Hq, Hkv, D, scale, cap, window) in {
        "attention_softcap_causal": (2, 6, 4, 2, 8, 0.5, 1.5, 0),
        "attention_softcap_window": (1, 9, 2, 1, 6, 0.7, 2.0, 3),
        "attention_softcap_wide": (1, 5, 2, 2, 4, 1.0, 50.0, 0),
    }.items():
        q, k, v = (torch.randn(B, T, h, D, dtype=torch.float64).float() * s for h, s in ((Hq, 2), (Hkv, 2), (Hkv, 1)))
        for t in (q, k, v):
            t.requires_grad_(True)
        i = torch.arange(T)
        visible = (i[None, :] <= i[:, None]) & ((i[:, None] - i[None, :] < window) if window else True)
        mask = torch.zeros(T, T).masked_fill(~visible, float("-inf"))[None, None]
        module = SimpleNamespace(num_key_value_groups=Hq // Hkv, head_dim=D, training=False)
        out, _ = eager_attention_forward(
            module, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, scaling=scale, softcap=cap
        )  # [B, T, Hq, D]
        g = torch.randn_like(out)
        out.backward(g)
        attrs = {"causal": True, "scale": scale, "softcap": cap}
        if window:
            attrs["window"] = window
        cases[name] = {
            "op": "attention",
            "attrs": attrs,
            "inputs": {"q": arr(q), "k": arr(k), "v": arr(v)},
            "ints": {},
            "out": arr(out),
            "grad_out": arr(g),
            "grads": {"q": arr(q.grad), "k": arr(k.grad), "v": arr(v.grad)},
        }
    path = os.path.join(OUT, "..", "ops", "attention_softcap.json")
    with open(path, "w") as f:
        json.dump({"made_by": f"transformers {transformers.__version__}, torch {torch.__version__}", **cases}, f)
    print("attention_softcap", list(cases))


if not ONLY or "attention_softcap" in ONLY:
    attention_softcap_cases()
