#!/usr/bin/env python3
"""Token ids from open_clip's tokenizer (open_clip_torch 3.3, ftfy) for edge cases: run in the
`make bench-reference` venv. Writes cases.json: [{"text", "ids" (77, zero-padded)}]."""
import json
import open_clip

texts = [
    "", " ", "a photo of a cat.", "A Photo Of A CAT!!", "a photo of Animalia Chordata Aves Passeriformes Corvidae Corvus corax.",
    "a photo of Corvus corax with common name common raven.", "it's they're we've I'm you'll he'd", "''s 'x rock'n'roll",
    "café naïve résumé", "cafe\u0301 (decomposed)", "東京 タワー 日本語", "emoji 🐦‍⬛ 🦜🦩 ok", "numbers 12345 3.14159 1,000,000",
    "tabs\tand\nnewlines\r\n  many   spaces  ", "\u201ccurly\u201d \u2018quotes\u2019", "ﬁne ﬂower ligatures", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ１２３",
    "&amp; &lt;b&gt; &eacute;t&eacute; &#233; &#x1F426; &amp;amp;", "<b>tag</b> &amp;amp; stays", "control\x07chars\x1b[31mred\x1b[0m",
    "hyphen-ated under_score slash/path back\\slash", "Ünïcödé ÀÉÎÕÜ ß ẞ İstanbul", "Ελληνικά Русский עברית العربية",
    "<start_of_text>literal<end_of_text> specials", "a " * 100, "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "\u00a0nbsp\u2009thin\u3000ideographic", "C1 \x93quoted\x94 \x85", "x" * 300, "Homo sapiens sapiens (Linnaeus, 1758)",
]
tok = open_clip.get_tokenizer("ViT-L-14")
ids = tok(texts)
json.dump({"note": "open_clip_torch " + open_clip.__version__ + " SimpleTokenizer (clean='lower'), context 77",
           "cases": [{"text": t, "ids": row.tolist()} for t, row in zip(texts, ids)]},
          open("cases.json", "w"), ensure_ascii=False, indent=0)
print(len(texts), "cases")
