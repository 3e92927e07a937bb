"""Two tiny SentencePiece models and what sentencepiece makes of a few prompts, for
Tests/TextTests/SentencePieceModelTests. Run with a Python that has `sentencepiece` (pip):
  python make_fixture.py            (writes bpe.model, unigram.model, expected.json here)

- bpe.model: model_type=bpe, vocab 500, byte_fallback, split_digits, normalization_rule_name=identity,
  add_dummy_prefix, remove_extra_whitespaces=false (LLaMA-2's settings), a user-defined piece <sep>.
- unigram.model: model_type=unigram, vocab 250, no byte fallback (unknown characters → <unk>), the
  default add_dummy_prefix / remove_extra_whitespaces, and a precompiled charsmap built by sentencepiece
  from a rule table that is NFKC (Python's unicodedata) restricted to a few hundred characters (full-width
  ASCII, ligatures, NBSP, ideographic space, superscripts, circled digits, a decomposed é) plus
  nmt_nfkc's control characters → space: the same Darts double-array format as the default nmt_nfkc,
  whose 240 KB table would not keep the fixture small.
The training text is written here (our own sentences)."""
import json
import os
import random
import unicodedata

import sentencepiece as spm

here = os.path.dirname(os.path.abspath(__file__))
work = os.path.join(here, "_work")  # training input and rules (removed at the end)
os.makedirs(work, exist_ok=True)

sentences = [
    "The small fox walked along the river and counted the stones one by one.",
    "A café on the corner sells crêpes, piñatas and naïve paintings of the façade.",
    "In 2024 the library held 13579 books, 246 maps and 80 old photographs.",
    "Der Bär läuft über die Brücke, während die Vögel im Wald singen.",
    "東京の朝は静かで、駅の前に小さな本屋があります。",
    "我们在河边散步，看见很多鸟在树上唱歌。",
    "Weather today: sunny ☀️, tomorrow rain 🌧️, then snow ❄️ and a rainbow 🌈.",
    "Numbers like 3.14159, 2.71828 and 1.41421 appear in many textbooks.",
    "She said: “Let us meet at 10:30 near the old bridge.”",
    "Les élèves étudient la géographie et l'histoire à l'école.",
    "Tokenizers split text into pieces; pieces become ids; ids become vectors.",
    "The garden has roses, tulips, daisies and a tall sunflower.",
    "Ήλιος και θάλασσα στο νησί.",
    "Привет, как дела? Всё хорошо, спасибо.",
    "Code: for i in range(10): print(i * i)",
    "Emoji party 🎉🎉 with cake 🎂 and music 🎵!",
]
lines = []
for k in range(12):
    for i, s in enumerate(sentences):
        lines.append(s if (i + k) % 3 else s.lower())
        if (i * 7 + k) % 5 == 0:
            lines.append(f"Line {k * 31 + i}: {s.split()[0]}   and  spaces\tand tabs.")
corpus = os.path.join(work, "corpus.txt")
with open(corpus, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")

# NFKC restricted to a few hundred characters, plus nmt_nfkc's "control characters → space".
chars = [chr(c) for c in range(0xFF01, 0xFF5F)] + [chr(c) for c in range(0xFB00, 0xFB07)]
chars += list("\u00a0\u3000\u00b2\u00b3\u00b9\u00bd\u2122\u2103\u2460\u2461\u2462\u2463\u2464\u3231\u2026\u00aa\u2077")
rules = []
for c in chars:
    n = unicodedata.normalize("NFKC", c)
    if n != c:
        rules.append((c, n))
rules.append(("e\u0301", "\u00e9"))  # a two-code-point source: longest match in the trie
rules += [("\t", " "), ("\n", " "), ("\r", " "), ("\u200b", "")]
tsv = os.path.join(work, "rules.tsv")
with open(tsv, "w", encoding="utf-8") as f:
    for src, dst in rules:
        f.write(" ".join("%X" % ord(x) for x in src) + "\t" + " ".join("%X" % ord(x) for x in dst) + "\n")

common = dict(input=corpus, character_coverage=0.995, num_threads=1, minloglevel=2, input_sentence_size=0, shuffle_input_sentence=False)
spm.SentencePieceTrainer.train(
    model_prefix=os.path.join(work, "bpe"), model_type="bpe", vocab_size=500, byte_fallback=True, split_digits=True,
    normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False, user_defined_symbols=["<sep>"],
    allow_whitespace_only_pieces=True, **common)
spm.SentencePieceTrainer.train(
    model_prefix=os.path.join(work, "unigram"), model_type="unigram", vocab_size=250, normalization_rule_tsv=tsv,
    user_defined_symbols=["<sep>"], **common)
for name in ("bpe", "unigram"):
    os.replace(os.path.join(work, name + ".model"), os.path.join(here, name + ".model"))

prompts = [
    "",
    " ",
    "Hello world",
    "  leading and   internal runs   of spaces  ",
    "tab\there\tand\nnewline",
    "no\u00a0break\u00a0space",
    "Café naïve façade crêpe e\u0301",
    "東京の朝、我们在河边 🌈🎉 ☀️",
    "1234567 and 3.14159 or ²³ ½ ①②",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＢＣ １２３ ﬁ ﬂ ™",
    "rare: ǅ ꙮ 𓂀 ∮ Ω",
    "a<sep>b <sep> c",
]
# 200 seeded random strings over the corpus's characters, whitespace of several kinds, the rule table's
# sources, rare characters, a literal U+2581 and the user-defined piece.
rng = random.Random(0)
pool = sorted(set("".join(sentences))) + [" ", "  ", "   ", "\t", "\n", "\u00a0", "\u3000", "\u2581", "\u200b", "e\u0301", "<sep>", "ǅ", "𓂀", "∮"]
pool += [src for src, _ in rules[:40]]
randoms = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 30))) for _ in range(200)]
out = {"prompts": prompts, "models": {}}
for name in ("bpe", "unigram"):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(here, name + ".model"))
    cases = []
    for p in prompts:
        ids = sp.encode(p)
        cases.append({"text": p, "ids": ids, "pieces": sp.encode(p, out_type=str), "decoded": sp.decode(ids)})
    byte = lambda b: sp.piece_to_id("<0x%02X>" % b)
    hand = [[sp.bos_id(), sp.eos_id()], [sp.unk_id()], [sp.unk_id(), sp.unk_id()], list(range(min(40, sp.get_piece_size())))]
    hand.append(list(range(sp.get_piece_size() - 30, sp.get_piece_size())))
    if sp.piece_to_id("<0x41>") != sp.unk_id():
        # valid 3-byte é…, a lone continuation byte, a truncated sequence then ASCII, an overlong form, a surrogate
        hand += [[byte(0xE6), byte(0x9D), byte(0xB1)], [byte(0x80)], [sp.piece_to_id("▁a"), byte(0xE6), byte(0x9D), byte(0x41)],
                 [byte(0xC0), byte(0xAF)], [byte(0xED), byte(0xA0), byte(0x80)], [byte(0xF0), byte(0x9F), byte(0x8C), byte(0x88), byte(0xFF)]]
    out["models"][name] = {
        "cases": cases,
        "random": [{"text": p, "ids": sp.encode(p), "decoded": sp.decode(sp.encode(p))} for p in randoms],
        "decode": [{"ids": ids, "text": sp.decode(ids)} for ids in hand],
        "size": sp.get_piece_size(), "bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id(),
    }
with open(os.path.join(here, "expected.json"), "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    f.write("\n")
print({n: os.path.getsize(os.path.join(here, n + ".model")) for n in ("bpe", "unigram")}, spm.__version__)
import shutil

shutil.rmtree(work)
