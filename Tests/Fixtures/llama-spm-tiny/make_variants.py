"""Variants of this folder's tokenizer.json for the other Metaspace/normalizer settings LLaMA-2 files use, with the ids
and decoded text Hugging Face tokenizers (0.23.3) gives. Usage: python make_variants.py  (writes variants.json)
Each variant replaces `normalizer` and `pre_tokenizer` of tokenizer.json: "always_split" (Metaspace prepend_scheme
always, split true), "never" (prepend_scheme never, split false), "legacy" (LLaMA-2's original file: normalizer
Sequence[Prepend "▁", Replace " " → "▁"], no pre-tokenizer); "first" is the file as it is (prepend_scheme first).
Prompts: expected.json's four, added tokens inside text, a lone space, the empty string, NBSP (byte fallback)."""
import json, os
from tokenizers import Tokenizer
here = os.path.dirname(os.path.abspath(__file__))
base = json.load(open(os.path.join(here, "tokenizer.json")))
variants = {
    "first": {"normalizer": None, "pre_tokenizer": base["pre_tokenizer"]},
    "always_split": {"normalizer": None, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}},
    "never": {"normalizer": None, "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": False}},
    "legacy": {"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                                 {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
               "pre_tokenizer": None},
}
prompts = ["Permission is hereby granted, free of charge", "  Two leading spaces and\ttabs", "Café naïve résumé in 2024",
           "Emoji 🦋 and 漢字 fall back to bytes", "<s>hello  world</s> the end", "x</s>  y", " ", "", "a\u00a0b  "]
out = {"tokenizers": "0.23.3", "variants": []}
for name, change in variants.items():
    j = dict(base); j.update(change)
    tok = Tokenizer.from_str(json.dumps(j))
    cases = []
    for p in prompts:
        ids = tok.encode(p, add_special_tokens=True).ids
        cases.append({"text": p, "input_ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    out["variants"].append({"name": name, "change": change, "cases": cases})
json.dump(out, open(os.path.join(here, "variants.json"), "w"), indent=1, ensure_ascii=False)
print("ok", [(v["name"], [len(c["input_ids"]) for c in v["cases"]]) for v in out["variants"]])
