"""Makes the GGUF test fixtures under test/fixtures/gguf/ with the real gguf-py package (0.19).

    /work/venv/bin/python scripts/make_gguf_fixtures.py [names] [quants] [models]

- names.json: for every tensor of the tiny HF fixture models (test/fixtures/models/*), the GGUF
  name gguf-py's TensorNameMap gives it (the table convert_hf_to_gguf.py uses), and the llama q/k
  row permutation of a small matrix computed by the converter's formula (reshape/swapaxes).
"""
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from safetensors import safe_open

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "test" / "fixtures" / "gguf"
MODELS = ROOT / "test" / "fixtures" / "models"

ARCHS = {
    "llama_untied": gguf.MODEL_ARCH.LLAMA,
    "llama_gqa_tied": gguf.MODEL_ARCH.LLAMA,
    "qwen2": gguf.MODEL_ARCH.QWEN2,
    "qwen3": gguf.MODEL_ARCH.QWEN3,
    "gpt2": gguf.MODEL_ARCH.GPT2,
    "gpt2_noprefix": gguf.MODEL_ARCH.GPT2,
}


def converter_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    # convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def make_names():
    models = {}
    for folder, arch in ARCHS.items():
        cfg = json.loads((MODELS / folder / "config.json").read_text())
        n_layer = cfg.get("num_hidden_layers", cfg.get("n_layer"))
        tmap = gguf.get_tensor_name_map(arch, n_layer)
        f = safe_open(str(MODELS / folder / "model.safetensors"), "np")
        pairs = []
        for key in sorted(f.keys()):
            pairs.append([key, tmap.get_name(key, try_suffixes=(".weight", ".bias"))])
        models[folder] = {"arch": gguf.MODEL_ARCH_NAMES[arch], "names": pairs}
    # permutation examples: rows numbered so every row is distinguishable
    perms = []
    for rows, cols, n_head, n_kv in [(8, 3, 2, None), (12, 2, 3, None), (16, 1, 4, 2), (24, 5, 6, 3)]:
        w = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
        perms.append({"rows": rows, "cols": cols, "n_head": n_head, "n_head_kv": n_kv,
                      "input": w.flatten().tolist(),
                      "output": converter_permute(w, n_head, n_kv).flatten().tolist()})
    (OUT / "names.json").write_text(json.dumps({"gguf_version": "0.19.0", "models": models, "permute": perms}, indent=1) + "\n")
    print("names.json:", {k: len(v["names"]) for k, v in models.items()})


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    what = sys.argv[1:] or ["names", "quants", "models"]
    if "names" in what:
        make_names()
