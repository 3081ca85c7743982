"""Makes the GGUF test fixtures under test/fixtures/gguf/ with the real gguf-py package (0.19).

    /work/venv/bin/python scripts/make_gguf_fixtures.py [names] [quants] [models]

- names.json: for every tensor of the tiny HF fixture models (test/fixtures/models/*), the GGUF
  name gguf-py's TensorNameMap gives it (the table convert_hf_to_gguf.py uses), and the llama q/k
  row permutation of a small matrix computed by the converter's formula (reshape/swapaxes).
- values.gguf / values.json: a file GGUFWriter writes with every metadata value type (nested
  arrays, u64 and negative i64, unicode strings), alignment 64 and tensors of several ggml types;
  the JSON holds the values written (f32 rounded; GGUFReader flattens nested arrays) with the
  value types GGUFReader reads back, and GGUFReader's tensor names, ne, types, absolute offsets.
- quants.json: for F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K, the bytes of two rows of
  256 values and what gguf-py's numpy `gguf.quants.dequantize` makes of them. The legacy types are
  quantised from random normals by `gguf.quants.quantize`; gguf-py cannot quantise K-quants, so
  their blocks are random bytes with finite f16 scales `d`/`dmin`.
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


def make_values():
    path = OUT / "values.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4294967295)
    w.add_int32("t.i32", -2147483648)
    w.add_float32("t.f32", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓ \u2581world")
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", -1.25e-300)
    w.add_array("t.arr_str", ["a", "", "ü"])
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, -1.5])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    rng = np.random.default_rng(0)
    w.add_tensor("a.f32", rng.standard_normal((2, 3)).astype(np.float32))
    w.add_tensor("b.f16", rng.standard_normal((4,)).astype(np.float16))
    q = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("c.q8_0", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("d.f32_4d", np.arange(2 * 1 * 3 * 2, dtype=np.float32).reshape(2, 1, 3, 2))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = gguf.GGUFReader(str(path))
    def plain(v):
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and abs(int(v)) > 2**53:
            return {"bigint": str(int(v))}
        if isinstance(v, (np.floating, float)):
            return float(v)
        if isinstance(v, (np.integer,)):
            return int(v)
        return v
    written = {"general.architecture": "llama", "general.alignment": 64, "t.u8": 255, "t.i8": -128,
               "t.u16": 65535, "t.i16": -32768, "t.u32": 4294967295, "t.i32": -2147483648,
               "t.f32": float(np.float32(0.1)), "t.bool": True, "t.str": "héllo ✓ \u2581world",
               "t.u64": 2**64 - 1, "t.i64": -(2**63), "t.f64": -1.25e-300, "t.arr_str": ["a", "", "ü"],
               "t.arr_i32": [1, -2, 3], "t.arr_f32": [0.5, -1.5], "t.arr_nested": [[1, 2], [3]]}
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        meta[k] = {"type": int(f.types[0]), "value": plain(written[k])}
    assert set(meta) == set(written)
    tensors = [{"name": t.name, "ne": [int(x) for x in t.shape], "type": int(t.tensor_type),
                "offset": int(t.data_offset), "bytes": int(t.n_bytes)} for t in r.tensors]
    (OUT / "values.json").write_text(json.dumps({"version": 3, "metadata": meta, "tensors": tensors}, indent=1, ensure_ascii=False) + "\n")
    print("values.gguf:", path.stat().st_size, "bytes")


def make_quants():
    import base64
    T = gguf.GGMLQuantizationType
    rng = np.random.default_rng(14)
    x = (rng.standard_normal((2, 256)) * 0.7).astype(np.float32)
    out = {}
    for t in [T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q5_0, T.Q5_1, T.Q4_K, T.Q5_K, T.Q6_K]:
        block, size = gguf.GGML_QUANT_SIZES[t]
        if t in (T.Q4_K, T.Q5_K, T.Q6_K):
            q = rng.integers(0, 256, size=(2, 256 // block * size), dtype=np.uint8)
            for b in range(q.size // size):
                blk = q.reshape(-1, size)[b]
                if t == T.Q6_K:  # f16 d last
                    blk[208:210] = np.frombuffer(np.float16(rng.uniform(0.001, 0.05)).tobytes(), np.uint8)
                else:  # f16 d, f16 dmin first
                    blk[0:2] = np.frombuffer(np.float16(rng.uniform(0.001, 0.05)).tobytes(), np.uint8)
                    blk[2:4] = np.frombuffer(np.float16(rng.uniform(0.001, 0.05)).tobytes(), np.uint8)
        else:
            q = gguf.quants.quantize(x, t)
        y = gguf.quants.dequantize(q, t).astype(np.float32)
        assert y.shape == (2, 256)
        out[t.name] = {"type": int(t), "elements": 512,
                       "bytes": base64.b64encode(np.ascontiguousarray(q).view(np.uint8).tobytes()).decode(),
                       "values": [float(v) for v in y.flatten()]}
    (OUT / "quants.json").write_text(json.dumps(out) + "\n")
    print("quants.json:", (OUT / "quants.json").stat().st_size, "bytes")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    what = sys.argv[1:] or ["names", "values", "quants", "models"]
    if "names" in what:
        make_names()
    if "values" in what:
        make_values()
    if "quants" in what:
        make_quants()
