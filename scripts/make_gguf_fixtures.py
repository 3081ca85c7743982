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
- models/{name}.{outtype}.gguf + .json: tiny HF fixture models (test/fixtures/models/*) converted to
  GGUF by convert_hf_to_gguf.py's rules, written with gguf-py's GGUFWriter (the converter itself is
  not available offline here): gguf-py's TensorNameMap names, LlamaModel.permute on llama q/k,
  GPT-2's Conv1D weights transposed and its tied output written as output.weight; outtype f32, f16
  or q8_0 (1-D tensors and norms stay f32; a 2-D tensor whose row is not a multiple of the block
  falls back to f16, as the converter does); plus "mixed" (Q4_0, Q5_0, Q5_1, Q8_0 by tensor). The
  JSON holds the logits transformers computes (float32) on the fixture's input_ids after loading
  the weights gguf-py's GGUFReader reads back from the file, dequantised and un-permuted: the
  reference a GGUF loader must reproduce.
- models/llama_kquant.gguf + .json: a llama of rows of 256 (K-quants need them) that exists only as
  GGUF: random Q4_K (attention), Q5_K (MLP) and Q6_K (embedding, head) blocks with small f16 scales
  (gguf-py cannot quantise K-quants), f32 norms; the JSON holds transformers' logits for a
  LlamaForCausalLM of that config given the weights GGUFReader dequantises, un-permuted.
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
    "llama3_rope": gguf.MODEL_ARCH.LLAMA,
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


def make_models():
    import torch
    from transformers import AutoModelForCausalLM
    T = gguf.GGMLQuantizationType
    dest = OUT / "models"
    dest.mkdir(exist_ok=True)
    jobs = [("llama3_rope", "f32"), ("llama_untied", "f32"), ("llama_untied", "q8_0"), ("llama_untied", "mixed"), ("llama_gqa_tied", "f16"),
            ("qwen2", "f32"), ("qwen2", "q8_0"), ("qwen3", "f32"), ("qwen3", "q8_0"), ("gpt2", "f32")]
    for folder, outtype in jobs:
        src = MODELS / folder
        cfg = json.loads((src / "config.json").read_text())
        arch = ARCHS[folder]
        arch_name = gguf.MODEL_ARCH_NAMES[arch]
        path = dest / f"{folder}.{outtype}.gguf"
        w = gguf.GGUFWriter(str(path), arch_name)
        w.add_name(folder)
        if arch == gguf.MODEL_ARCH.GPT2:
            w.add_context_length(cfg["n_ctx"])
            w.add_embedding_length(cfg["n_embd"])
            w.add_feed_forward_length(4 * cfg["n_embd"])
            w.add_block_count(cfg["n_layer"])
            w.add_head_count(cfg["n_head"])
            w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
        else:
            n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
            head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
            w.add_vocab_size(cfg["vocab_size"])
            w.add_context_length(cfg["max_position_embeddings"])
            w.add_embedding_length(cfg["hidden_size"])
            w.add_block_count(cfg["num_hidden_layers"])
            w.add_feed_forward_length(cfg["intermediate_size"])
            w.add_rope_dimension_count(head_dim)
            w.add_head_count(n_head)
            w.add_head_count_kv(n_kv)
            rope = cfg.get("rope_parameters") or {}
            w.add_rope_freq_base(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
            w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
            if cfg.get("head_dim"):
                w.add_key_length(head_dim)
                w.add_value_length(head_dim)
        w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7, "mixed": 7}[outtype])
        tmap = gguf.get_tensor_name_map(arch, cfg.get("num_hidden_layers", cfg.get("n_layer")))
        f = safe_open(str(src / "model.safetensors"), "pt")
        mixed_cycle = [T.Q4_0, T.Q5_0, T.Q5_1, T.Q8_0]
        k = 0
        written = []
        for name in sorted(f.keys()):
            if name.endswith((".attn.bias", ".attn.masked_bias")):
                continue
            data = f.get_tensor(name).float()
            if arch == gguf.MODEL_ARCH.LLAMA:
                if name.endswith(("q_proj.weight", "q_proj.bias")):
                    data = torch.from_numpy(converter_permute(data.numpy(), n_head, n_head))
                if name.endswith(("k_proj.weight", "k_proj.bias")):
                    data = torch.from_numpy(converter_permute(data.numpy(), n_head, n_kv))
            if arch == gguf.MODEL_ARCH.GPT2 and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
                data = data.transpose(1, 0)
            new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
            assert new is not None, name
            outs = [(new, data)]
            if arch == gguf.MODEL_ARCH.GPT2 and new == "token_embd.weight":
                outs.append(("output.weight", data))
            for new_name, t in outs:
                arr = t.contiguous().numpy().astype(np.float32)
                if arr.ndim <= 1 or new_name.endswith("_norm.weight") or outtype == "f32":
                    qtype = T.F32
                elif outtype == "f16":
                    qtype = T.F16
                else:
                    qtype = T.Q8_0 if outtype == "q8_0" else mixed_cycle[k % len(mixed_cycle)]
                    k += 1
                    if arr.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] != 0:
                        qtype = T.F16
                if qtype == T.F32:
                    w.add_tensor(new_name, arr)
                elif qtype == T.F16:
                    w.add_tensor(new_name, arr.astype(np.float16))
                else:
                    q = gguf.quants.quantize(arr, qtype)
                    w.add_tensor(new_name, q, raw_shape=q.shape, raw_dtype=qtype)
                written.append(new_name)
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        if arch == gguf.MODEL_ARCH.LLAMA and rope.get("rope_type") == "llama3":
            # LlamaModel.generate_extra_tensors: one factor per frequency, as rope_freqs.weight
            import math
            base = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
            dim = head_dim
            freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
            factor = rope.get("factor", 8.0)
            low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
            old = rope.get("original_max_position_embeddings", 8192)
            low_wl, high_wl = old / low, old / high
            factors = []
            for fr in freqs:
                wl = 2 * math.pi / fr
                if wl < high_wl:
                    factors.append(1)
                elif wl > low_wl:
                    factors.append(factor)
                else:
                    smooth = (old / wl - low) / (high - low)
                    factors.append(1 / ((1 - smooth) / factor + smooth))
            w.add_tensor("rope_freqs.weight", torch.tensor(factors, dtype=torch.float32).numpy())
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

        # the reference: transformers on the weights gguf-py reads back from the file
        r = gguf.GGUFReader(str(path))
        state = {}
        for t in r.tensors:
            if t.name == "rope_freqs.weight":
                continue  # no HF tensor: config.json's rope_parameters say it
            arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            arr = arr.reshape([int(x) for x in reversed(t.shape)]) if len(t.shape) > 1 else arr.reshape(-1)
            hf = None
            for key in f.keys():
                if tmap.get_name(key, try_suffixes=(".weight", ".bias")) == t.name:
                    hf = key
            if t.name == "output.weight" and hf is None:
                continue  # GPT-2's tied copy
            if arch == gguf.MODEL_ARCH.LLAMA and hf.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")):
                n = n_head if "q_proj" in hf else n_kv
                shape = arr.shape
                arr = arr.reshape(n, arr.shape[0] // n // 2, 2, *arr.shape[1:]).swapaxes(1, 2).reshape(shape)
            if arch == gguf.MODEL_ARCH.GPT2 and hf.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
                arr = arr.T
            state[hf] = torch.from_numpy(np.ascontiguousarray(arr))
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
        model.eval()
        sd = model.state_dict()
        for key, v in state.items():
            if key.startswith("h.") and "transformer." + key in sd:
                key = "transformer." + key
            assert sd[key].shape == v.shape, (key, sd[key].shape, v.shape)
            sd[key].copy_(v)
        if outtype == "f32":  # a lossless conversion gives back the HF weights exactly
            for key, v in state.items():
                assert torch.equal(f.get_tensor(key).float(), v), key
        ids = json.loads((src / "expected.json").read_text())["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor(ids)).logits.float()
        (dest / f"{folder}.{outtype}.json").write_text(json.dumps({
            "input_ids": ids,
            "types": {t.name: t.tensor_type.name for t in r.tensors},
            "logits": {"shape": list(logits.shape), "data": [float(np.float32(x)) for x in logits.flatten().tolist()]},
        }) + "\n")
        print(f"{path.name}: {path.stat().st_size} bytes, {len(written)} tensors")


def make_kquant():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    T = gguf.GGMLQuantizationType
    rng = np.random.default_rng(256)
    cfg = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, rms_norm_eps=1e-5,
               rope_theta=10000.0, tie_word_embeddings=False)
    n_head, n_kv, hd = 4, 2, 64
    path = OUT / "models" / "llama_kquant.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("llama_kquant")
    w.add_vocab_size(64)
    w.add_context_length(64)
    w.add_embedding_length(256)
    w.add_block_count(1)
    w.add_feed_forward_length(256)
    w.add_rope_dimension_count(hd)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(15)  # MOSTLY_Q4_K_M

    def kblocks(qtype, rows, cols):
        _, size = gguf.GGML_QUANT_SIZES[qtype]
        q = rng.integers(0, 256, size=(rows, cols // 256 * size), dtype=np.uint8)
        for blk in q.reshape(-1, size):
            d = np.frombuffer(np.float16(rng.uniform(0.00005, 0.0002)).tobytes(), np.uint8)
            if qtype == T.Q6_K:
                blk[208:210] = d
            else:
                blk[0:2] = d
                blk[2:4] = np.frombuffer(np.float16(rng.uniform(0.00005, 0.0002)).tobytes(), np.uint8)
        return q
    tensors = [("token_embd.weight", T.Q6_K, 64, 256), ("output.weight", T.Q6_K, 64, 256),
               ("blk.0.attn_q.weight", T.Q4_K, 256, 256), ("blk.0.attn_k.weight", T.Q4_K, 128, 256),
               ("blk.0.attn_v.weight", T.Q4_K, 128, 256), ("blk.0.attn_output.weight", T.Q4_K, 256, 256),
               ("blk.0.ffn_gate.weight", T.Q5_K, 256, 256), ("blk.0.ffn_up.weight", T.Q5_K, 256, 256),
               ("blk.0.ffn_down.weight", T.Q6_K, 256, 256)]
    for name, qtype, rows, cols in tensors:
        q = kblocks(qtype, rows, cols)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
    for name in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"]:
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(256)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = gguf.GGUFReader(str(path))
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 1)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    sd = model.state_dict()
    hf_of = {tmap.get_name(k, try_suffixes=(".weight",)): k for k in sd}
    for t in r.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        hf = hf_of[t.name]
        if "q_proj" in hf or "k_proj" in hf:
            n = n_head if "q_proj" in hf else n_kv
            arr = arr.reshape(n, arr.shape[0] // n // 2, 2, *arr.shape[1:]).swapaxes(1, 2).reshape(arr.shape)
        assert sd[hf].shape == arr.shape, (hf, arr.shape)
        sd[hf].copy_(torch.from_numpy(np.ascontiguousarray(arr)))
    ids = [[int(x) for x in rng.integers(0, 64, 12)]]
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.float()
    (OUT / "models" / "llama_kquant.json").write_text(json.dumps({
        "input_ids": ids,
        "types": {t.name: t.tensor_type.name for t in r.tensors},
        "logits": {"shape": list(logits.shape), "data": [float(np.float32(x)) for x in logits.flatten().tolist()]},
    }) + "\n")
    print(f"{path.name}: {path.stat().st_size} bytes; logits range", float(logits.min()), float(logits.max()))


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    what = sys.argv[1:] or ["names", "values", "quants", "models", "kquant"]
    if "names" in what:
        make_names()
    if "values" in what:
        make_values()
    if "quants" in what:
        make_quants()
    if "models" in what:
        make_models()
    if "kquant" in what:
        make_kquant()
