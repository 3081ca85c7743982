"""DoRA (use_dora: true) reference values from the real PEFT (issue #15).

Everything here is computed by PEFT 0.21's own LoRA/DoRA layers (peft/tuners/lora/dora.py,
variants.py DoraLinearVariant), not by a re-implementation:

  test/fixtures/dora/linear.json
      one nn.Linear(7 -> 5, bias) wrapped by PEFT with use_dora, r 3, lora_alpha 6 (scale 2):
      - "init": A and B drawn by PEFT (init_lora_weights=False, so B is not zero) and the magnitude
        PEFT computes for them, ‖W0 + s·B·A‖ per output row;
      - "eval": the forward in eval mode and the gradients of sum(out · grad_out) for A, B, the
        magnitude and x, with the magnitude moved away from its initial value;
      - "dropout": the same in training mode with lora_dropout 0.25, PEFT's dropout replaced by a
        fixed mask (recorded as "mask", 0 or 1/(1 - p)), so PEFT's dropout path
        (base(x) + (m/‖·‖ - 1)·W0·x' + m/‖·‖·s·B·A·x', x' = dropout(x)) is checked exactly;
      - "merged": the weight PEFT's merge_adapter() writes, m/‖W0 + s·B·A‖ · (W0 + s·B·A).
  test/fixtures/dora/llama_untied/adapter/
      a PEFT DoRA adapter (save_pretrained) for test/fixtures/models/llama_untied: q_proj, v_proj
      and down_proj, r 2, lora_alpha 6, use_rslora, B and the magnitude moved off their init;
  test/fixtures/dora/llama_untied/expected.json
      that adapter's logits and mean next-token loss on two rows, the gradients of the loss for
      every lora_A, lora_B and lora_magnitude_vector (PEFT's saved key names), and the logits after
      merge_and_unload().

Inputs are drawn in float32; the forward and gradients run in float64 and are stored rounded to
float32 (the shortest repr that gives that float32 back), as scripts/make_fixtures.py does.

Run with the venv of the README:  /work/venv/bin/python scripts/make_dora_fixtures.py
"""

import copy
import json
import os

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures")
OUT = os.path.join(ROOT, "dora")


def f32(t):
    return [float(str(np.float32(v))) for v in t.detach().double().reshape(-1).tolist()]


def tj(t):
    return {"shape": list(t.shape), "data": f32(t)}


def randn(g, *shape, std=1.0):
    return (torch.randn(*shape, generator=g) * std).float()


class MaskDropout(torch.nn.Module):
    """PEFT's lora_dropout with a fixed mask: x * mask (the mask holds 0 or 1/(1 - p))."""

    def __init__(self, mask):
        super().__init__()
        self.mask = mask

    def forward(self, x):
        return x * self.mask


class Tiny(torch.nn.Module):
    def __init__(self, g):
        super().__init__()
        self.proj = torch.nn.Linear(7, 5)
        with torch.no_grad():
            self.proj.weight.copy_(randn(g, 5, 7, std=0.5))
            self.proj.bias.copy_(randn(g, 5, std=0.1))

    def forward(self, x):
        return self.proj(x)


def linear_fixture():
    g = torch.Generator().manual_seed(15)
    torch.manual_seed(15)
    config = LoraConfig(r=3, lora_alpha=6, target_modules=["proj"], use_dora=True, init_lora_weights=False)
    model = get_peft_model(Tiny(g), config)
    layer = model.base_model.model.proj
    W0 = layer.base_layer.weight.detach().clone()
    bias = layer.base_layer.bias.detach().clone()
    A = layer.lora_A["default"].weight.detach().clone()
    B = layer.lora_B["default"].weight.detach().clone()
    m_init = layer.lora_magnitude_vector["default"].weight.detach().clone()
    s = layer.scaling["default"]
    assert s == 2.0
    direct = (W0.double() + s * B.double() @ A.double()).norm(dim=1)
    assert torch.allclose(m_init.double(), direct, rtol=1e-6), "PEFT's magnitude at init is ‖W0 + s·B·A‖"

    # move the magnitude off its init so that m/‖·‖ is not 1
    m = (m_init * (1 + 0.2 * randn(g, 5))).float()
    x = randn(g, 2, 3, 7)
    grad_out = randn(g, 2, 3, 5)
    p = 0.25
    mask = (torch.rand(2, 3, 7, generator=g) >= p).double() / (1 - p)
    model = model.double()
    layer = model.base_model.model.proj
    with torch.no_grad():
        layer.lora_magnitude_vector["default"].weight.copy_(m.double())

    def run(training):
        model.train(training)
        for prm in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
            prm.grad = None
        mag = layer.lora_magnitude_vector["default"].weight
        mag.grad = None
        xi = x.double().clone().requires_grad_(True)
        out = model(xi)
        (out * grad_out.double()).sum().backward()
        return {
            "out": tj(out),
            "grad_A": tj(layer.lora_A["default"].weight.grad),
            "grad_B": tj(layer.lora_B["default"].weight.grad),
            "grad_magnitude": tj(mag.grad),
            "grad_x": tj(xi.grad),
        }

    ev = run(False)
    layer.lora_dropout["default"] = MaskDropout(mask)
    dr = run(True)
    model.eval()
    merged = copy.deepcopy(model)
    merged.merge_adapter()
    merged_w = merged.base_model.model.proj.base_layer.weight.detach().clone()
    merged.unmerge_adapter()
    unmerged = merged.base_model.model.proj.base_layer.weight.detach()
    assert torch.allclose(unmerged, W0.double(), atol=1e-12), "PEFT's unmerge restores W0"
    return {
        "r": 3,
        "lora_alpha": 6,
        "scaling": s,
        "W0": tj(W0),
        "bias": tj(bias),
        "A": tj(A),
        "B": tj(B),
        "magnitude_init": tj(m_init),
        "magnitude": tj(m),
        "x": tj(x),
        "grad_out": tj(grad_out),
        "eval": ev,
        "dropout": {"p": p, "mask": tj(mask), **dr},
        "merged": tj(merged_w),
    }


def llama_fixture():
    base_dir = os.path.join(ROOT, "models", "llama_untied")
    g = torch.Generator().manual_seed(1515)
    torch.manual_seed(1515)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=2,
        lora_alpha=6,
        target_modules=["q_proj", "v_proj", "down_proj"],
        use_dora=True,
        use_rslora=True,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("lora_B.default.weight"):
                prm.copy_(randn(g, *prm.shape, std=0.3))
            elif name.endswith("lora_magnitude_vector.default.weight"):
                prm.copy_((prm * (1 + 0.1 * randn(g, *prm.shape))).float())
    folder = os.path.join(OUT, "llama_untied", "adapter")
    model.save_pretrained(folder)
    os.remove(os.path.join(folder, "README.md"))  # PEFT's model card template, not part of the format
    cfg_path = os.path.join(folder, "adapter_config.json")
    cfg = json.load(open(cfg_path))
    cfg["base_model_name_or_path"] = "test/fixtures/models/llama_untied"
    json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)
    open(cfg_path, "a").write("\n")

    # the adapter as saved, read back by PEFT, in float64
    base64 = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).double()
    model = PeftModel.from_pretrained(base64, folder, is_trainable=True).double().eval()
    ids = torch.randint(0, 89, (2, 9), generator=g)
    logits = model(ids).logits
    V = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    loss.backward()
    grads = {}
    for name, prm in model.named_parameters():
        if prm.grad is None:
            continue
        key = name.replace(".default.weight", ".weight").replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
        grads[key] = tj(prm.grad)
    with torch.no_grad():
        merged = model.merge_and_unload()(ids).logits
    return {
        "input_ids": ids.tolist(),
        "logits_adapter": tj(logits),
        "loss_adapter": f32(loss.reshape(1))[0],
        "grads_adapter": grads,
        "logits_merged": tj(merged),
    }


os.makedirs(OUT, exist_ok=True)
lin = linear_fixture()
with open(os.path.join(OUT, "linear.json"), "w") as f:
    json.dump(lin, f)
llama = llama_fixture()
with open(os.path.join(OUT, "llama_untied", "expected.json"), "w") as f:
    json.dump(llama, f)
print(f"linear.json: eval out {lin['eval']['out']['data'][:3]}..., merged {lin['merged']['data'][:3]}...")
print(f"llama_untied: loss {llama['loss_adapter']}, {len(llama['grads_adapter'])} gradients")
