"""sentencepiece's own ids for this folder's tokenizer.model (copied from ../shared/fixtures/llama-spm-tiny, the
model transformers converted into tokenizer.json) on the prompts of expected.json and variants.json: spm_expected.json,
read by Tests/TextTests/SentencePieceModelTests. ids are [bos] + sp.encode(text), as transformers' sentencepiece-backed
LlamaTokenizer (add_bos_token) gives them; decoded is sp.decode(sp.encode(text)). Run with a Python that has sentencepiece."""
import json
import os

import sentencepiece as spm

here = os.path.dirname(os.path.abspath(__file__))
sp = spm.SentencePieceProcessor(model_file=os.path.join(here, "tokenizer.model"))
texts = [p["text"] for p in json.load(open(os.path.join(here, "expected.json")))["prompts"]]
for v in json.load(open(os.path.join(here, "variants.json")))["variants"]:
    texts += [c["text"] for c in v["cases"] if c["text"] not in texts]
out = {"sentencepiece": spm.__version__,
       "prompts": [{"text": t, "ids": [sp.bos_id()] + sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in texts]}
with open(os.path.join(here, "spm_expected.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(len(texts), "prompts")
