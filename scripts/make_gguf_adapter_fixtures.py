"""Makes test/fixtures/gguf-adapter/: PEFT adapters written by the real PEFT, what llama.cpp's own
converter (convert_lora_to_gguf.py) makes of them, and the update each module must apply in GGUF's
layout, computed by PEFT (`get_delta_weight`: its scaling with rsLoRA, rank_pattern and alpha_pattern)
and permuted with the converter's own `LlamaModel.permute` for the llama q/k rows. Also a GGUF of the
GPT-2 fixture model made by the converter (convert_hf_to_gguf.py), for the opt-in llama.cpp check.

    /work/venv/bin/python scripts/make_gguf_adapter_fixtures.py LLAMA_CPP_SOURCE

LLAMA_CPP_SOURCE is a llama.cpp checkout; the one node-llama-cpp 3.21.1 ships works:
    git clone <node_modules>/node-llama-cpp/llama/gitRelease.bundle /tmp/llamacpp-src
Needs torch, transformers and peft (and the checkout's gguf-py, which it puts on the path).
"""

import json
import os
import subprocess
import sys
import zlib

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

src = os.path.abspath(sys.argv[1])
root = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.chdir(root)  # relative paths, so that base_model_name_or_path in the fixtures names no machine's folder
fixtures = os.path.join("test", "fixtures")
out_root = os.path.join(fixtures, "gguf-adapter")
sys.path.insert(0, src)
sys.path.insert(1, os.path.join(src, "gguf-py"))
from conversion.llama import LlamaModel  # noqa: E402  (the converter's permutation)

env = {**os.environ, "PYTHONPATH": os.path.join(src, "gguf-py")}
env.pop("NO_LOCAL_GGUF", None)

# GGUF names of the modules the fixtures adapt (gguf-py's TensorNameMap, as the converter uses)
LLAMA_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GPT2_NAMES = {"attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}


def gguf_name(arch, path):
    parts = path.split(".")
    i = parts.index("h" if arch == "gpt2" else "layers")
    inner = ".".join(parts[i + 2 :])
    names = GPT2_NAMES if arch == "gpt2" else LLAMA_NAMES
    return f"blk.{parts[i + 1]}.{names[inner]}.weight"


def make(model_name, variant, arch, **lora):
    base = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, "models", model_name), dtype=torch.float32)
    cfg = base.config
    peft_model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **lora))
    delta = {}
    for path, module in peft_model.base_model.model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        # non-zero A and B, one seed per tensor
        for which, lin in (("A", module.lora_A["default"]), ("B", module.lora_B["default"])):
            g = torch.Generator().manual_seed(zlib.crc32(f"{model_name}/{variant}/{path}/{which}".encode()))
            with torch.no_grad():
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.2)
        with torch.no_grad():
            d = module.get_delta_weight("default").float()  # PEFT's scale * B @ A (transposed for Conv1D)
        if arch == "gpt2":
            d = d.T  # Conv1D's [in, out] -> GGUF's [out, in] (the converter transposes the base weight so)
        elif arch == "llama" and path.endswith("q_proj"):
            d = LlamaModel.permute(d, cfg.num_attention_heads, cfg.num_attention_heads)
        elif arch == "llama" and path.endswith("k_proj"):
            d = LlamaModel.permute(d, cfg.num_attention_heads, cfg.num_key_value_heads)
        delta[gguf_name(arch, path)] = d.contiguous()
    out = os.path.join(out_root, model_name, variant)
    peft_model.save_pretrained(out)
    # the folder PEFT writes has a README.md model card; the fixtures keep only the two adapter files
    for extra in os.listdir(out):
        if extra not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(out, extra))
    # PEFT keeps target_modules as a set: sorted, so that a rerun writes the same bytes
    path = os.path.join(out, "adapter_config.json")
    with open(path) as f:
        config = json.load(f)
    config["target_modules"] = sorted(config["target_modules"])
    with open(path, "w") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True))
    save_file(delta, os.path.join(out, "delta.safetensors"), metadata={"format": "pt"})
    return out


def convert_lora(adapter, model_name, outtype):
    out = os.path.join(adapter, f"converter-{outtype}.gguf")
    cmd = [sys.executable, os.path.join(src, "convert_lora_to_gguf.py"), "--base",
           os.path.join(fixtures, "models", model_name), "--outtype", outtype, "--outfile", out, adapter]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    last = (r.stderr.strip().splitlines() or [""])[-1]
    print(f"convert_lora_to_gguf.py {adapter} --outtype {outtype}: exit {r.returncode}: {last}")
    if r.returncode != 0 and os.path.exists(out):
        os.remove(out)
    return r.returncode


all_linear = list(LLAMA_NAMES.keys())
all_linear = [k.split(".")[1] for k in all_linear]
plain = make("llama_gqa_tied", "plain", "llama", r=4, lora_alpha=8, target_modules=all_linear)
for t in ("f32", "f16", "bf16"):
    assert convert_lora(plain, "llama_gqa_tied", t) == 0
patterns = make(
    "llama_gqa_tied", "patterns", "llama", r=4, lora_alpha=8, target_modules=all_linear,
    rank_pattern={"k_proj": 2, "down_proj": 6}, alpha_pattern={"v_proj": 32, "model.layers.1.self_attn.q_proj": 3},
)
assert convert_lora(patterns, "llama_gqa_tied", "f32") == 0
rslora = make("llama_gqa_tied", "rslora", "llama", r=4, lora_alpha=8, use_rslora=True,
              target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
assert convert_lora(rslora, "llama_gqa_tied", "f32") == 0
# qwen2 and qwen3 keep HF's q/k layout (llama.cpp runs them with NEOX RoPE): no permutation
for qwen in ("qwen2", "qwen3"):
    adapter = make(qwen, "plain", qwen, r=4, lora_alpha=8, target_modules=all_linear)
    assert convert_lora(adapter, qwen, "f32") == 0
gpt2 = make("gpt2", "plain", "gpt2", r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
# llama.cpp's converter transposes GPT-2's Conv1D LoRA as it transposes the weights; we record whether it
# succeeds, and do not keep its output (the opt-in llama.cpp check decides what llama.cpp loads)
convert_lora(gpt2, "gpt2", "f32")
for f in os.listdir(gpt2):
    if f.startswith("converter-"):
        os.replace(os.path.join(gpt2, f), os.path.join("/tmp", f"gpt2-{f}"))

# The GPT-2 fixture model as a GGUF, by convert_hf_to_gguf.py. The fixture has no tokenizer, so the
# converter's vocabulary step is replaced by a stand-in GPT-2 BPE vocabulary of the fixture's size
# (one printable character per id, and one merge); the tensors are the converter's own.
gpt2_gguf = os.path.join(out_root, "gpt2", "model.gguf")
# the fixture stores GPT-2's attn.bias causal-mask buffers, which this converter cannot map: a copy
# without them (they are not weights) is converted
from safetensors.torch import load_file  # noqa: E402

gpt2_dir = os.path.join("/tmp", "gguf-adapter-gpt2-model")
os.makedirs(gpt2_dir, exist_ok=True)
weights = load_file(os.path.join(fixtures, "models", "gpt2", "model.safetensors"))
save_file({k: v for k, v in weights.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))},
          os.path.join(gpt2_dir, "model.safetensors"), metadata={"format": "pt"})
with open(os.path.join(fixtures, "models", "gpt2", "config.json")) as f, open(os.path.join(gpt2_dir, "config.json"), "w") as g:
    g.write(f.read())
script = f"""
import sys
sys.path.insert(0, {src!r})
sys.argv = ["convert_hf_to_gguf.py", {gpt2_dir!r}, "--outtype", "f32", "--outfile", {gpt2_gguf!r}]
import convert_hf_to_gguf as c
from conversion.gpt2 import GPT2Model
def set_vocab(self):
    n = self.hparams["vocab_size"]
    w = self.gguf_writer
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([chr(0x21 + i) for i in range(n - 1)] + ["!\\""])
    w.add_token_types([1] * n)
    w.add_token_merges(["! \\""])  # llama.cpp needs at least one merge
    w.add_bos_token_id(self.hparams["bos_token_id"])
    w.add_eos_token_id(self.hparams["eos_token_id"])
GPT2Model.set_vocab = set_vocab
c.main()
"""
r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
print(f"convert_hf_to_gguf.py gpt2: exit {r.returncode}: {(r.stderr.strip().splitlines() or [''])[-1]}")
assert r.returncode == 0, r.stderr
for dirpath, _, files in sorted(os.walk(out_root)):
    for f in sorted(files):
        p = os.path.join(dirpath, f)
        print(f"{p}: {os.path.getsize(p)} bytes")
