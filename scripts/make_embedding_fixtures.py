"""Fixtures for LoRA on embeddings, modules_to_save and trainable_token_indices (issue #15, part 3),
made by the real transformers + PEFT on the tiny fixture models in test/fixtures/models.

Each case is an adapter folder written by PEFT's save_pretrained and expected.json: the logits and
loss of the adapter as PEFT loads it (PeftModel.from_pretrained on a fresh base), and the gradient of
that loss with respect to every trainable tensor, under the key PEFT saves it as.

  llama_tied_embed        tied llama, target_modules embed_tokens,q_proj,v_proj; written with
                          save_embedding_layers=False (no base_layer.weight)
  llama_tied_embed_base   the same adapter with PEFT's default save_embedding_layers="auto", after the
                          base embedding was changed (as a resized or trained embedding): the file holds
                          embed_tokens.base_layer.weight, which replaces the embedding on load
  gpt2_wte                tied GPT-2, target_modules wte,c_attn
  llama_modules_to_save   tied llama, q_proj,v_proj + modules_to_save ["lm_head", "norm"] (PEFT matches
                          by plain suffix: "norm" is every norm)
  llama_trainable_tokens  tied llama, q_proj,v_proj + trainable_token_indices [3, 5, 60] (the tied head
                          follows the trained rows)

Run with the venv of the README:
    /work/venv/bin/python scripts/make_embedding_fixtures.py
"""

import json
import os
import shutil

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(__file__)
MODELS = os.path.join(HERE, "..", "test", "fixtures", "models")
OUT = os.path.join(HERE, "..", "test", "fixtures", "peft-embedding")
MADE_BY = f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}"


def arr(t):
    t = t.detach().float().contiguous()
    return {"shape": list(t.shape), "data": [round(float(x), 8) for x in t.flatten()]}


def lm_loss(logits, ids):
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1)
    )


def base(name):
    return AutoModelForCausalLM.from_pretrained(os.path.join(MODELS, name), dtype=torch.float32).eval()


def saved_key(param_name):
    """A trainable parameter's name in the PeftModel -> its key in adapter_model.safetensors."""
    k = param_name.replace("modules_to_save.default.", "").replace(".default", "")
    return k


def perturb(model, g, std):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)


def expected_of(adapter_dir, base_name, ids, extra=None):
    """What PEFT gives for the adapter as it loads it: logits, loss and the trainable tensors' gradients."""
    model = PeftModel.from_pretrained(base(base_name), adapter_dir, is_trainable=True)
    model.eval()
    logits = model(ids).logits
    loss = lm_loss(logits, ids)
    loss.backward()
    grads = {saved_key(n): arr(p.grad) for n, p in model.named_parameters() if p.requires_grad}
    out = {
        "made_by": MADE_BY,
        "input_ids": ids.tolist(),
        "logits": arr(logits),
        "loss": float(loss),
        "grads": grads,
    }
    with torch.no_grad():
        out["logits_disabled"] = None
        with model.disable_adapter():
            out["logits_disabled"] = arr(model(ids).logits)
    out.update(extra or {})
    return out


def write(case, expected):
    with open(os.path.join(OUT, case, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")


def make(case, base_name, config, std, seed, save_kwargs=None, before_save=None, T=7):
    torch.manual_seed(seed)
    model = get_peft_model(base(base_name), config)
    g = torch.Generator().manual_seed(seed)
    perturb(model, g, std)  # every trained tensor moves away from its initial value
    if before_save:
        before_save(model, g)
    d = os.path.join(OUT, case)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, **(save_kwargs or {}))
    os.remove(os.path.join(d, "README.md"))
    path = os.path.join(d, "adapter_config.json")  # the base named from the checkout's root, as the other fixtures
    with open(path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = f"test/fixtures/models/{base_name}"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(seed + 1))
    ids[0, 1] = 3  # trainable token rows appear in the input
    ids[1, 2] = 60
    ids[1, 4] = 5
    return d, ids


os.makedirs(OUT, exist_ok=True)

# --- LoRA on a tied llama's embed_tokens --------------------------------------------------------
cfg = dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj", "v_proj"])
d, ids = make(
    "llama_tied_embed",
    "llama_gqa_tied",
    LoraConfig(**cfg),
    0.3,
    1,
    save_kwargs={"save_embedding_layers": False},
)
write("llama_tied_embed", expected_of(d, "llama_gqa_tied", ids))

# PEFT's initial embedding LoRA: A = 0, B ~ N(0, 1), so the adapted embedding equals the base.
torch.manual_seed(0)
fresh = get_peft_model(base("llama_gqa_tied"), LoraConfig(**cfg))
emb = fresh.base_model.model.model.embed_tokens
init = {
    "lora_embedding_A_all_zero": bool((emb.lora_embedding_A["default"] == 0).all()),
    "lora_embedding_B_std": float(emb.lora_embedding_B["default"].std()),
    # the head keeps the base weight: the embedding's delta does not reach it
    "head_is_base_weight": fresh.base_model.model.lm_head.weight is emb.base_layer.weight,
}


def change_embedding(model, g):
    with torch.no_grad():
        w = model.base_model.model.model.embed_tokens.base_layer.weight
        w.add_(torch.randn(w.shape, generator=g) * 0.5)


d, ids = make("llama_tied_embed_base", "llama_gqa_tied", LoraConfig(**cfg), 0.3, 1, before_save=change_embedding)
loaded = PeftModel.from_pretrained(base("llama_gqa_tied"), d)
head_follows = bool(
    torch.equal(
        loaded.base_model.model.lm_head.weight,
        loaded.base_model.model.model.embed_tokens.base_layer.weight,
    )
)
write(
    "llama_tied_embed_base",
    expected_of(d, "llama_gqa_tied", ids, {"init": init, "head_follows_loaded_embedding": head_follows}),
)

# --- GPT-2: wte --------------------------------------------------------------------------------
d, ids = make("gpt2_wte", "gpt2", LoraConfig(r=4, lora_alpha=16, target_modules=["wte", "c_attn"]), 0.3, 2)
write("gpt2_wte", expected_of(d, "gpt2", ids))

# --- modules_to_save ----------------------------------------------------------------------------
d, ids = make(
    "llama_modules_to_save",
    "llama_gqa_tied",
    LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head", "norm"]),
    0.1,
    3,
)
write("llama_modules_to_save", expected_of(d, "llama_gqa_tied", ids))

# --- trainable_token_indices -------------------------------------------------------------------
d, ids = make(
    "llama_trainable_tokens",
    "llama_gqa_tied",
    LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], trainable_token_indices=[3, 5, 60]),
    0.5,
    4,
)
write("llama_trainable_tokens", expected_of(d, "llama_gqa_tied", ids))

for case in sorted(os.listdir(OUT)):
    from safetensors import safe_open

    with safe_open(os.path.join(OUT, case, "adapter_model.safetensors"), "pt") as f:
        print(case, {k: list(f.get_slice(k).get_shape()) for k in f.keys() if "layers" not in k})
