"""Text clean-up rules copied from lm-evaluation-harness 0.4, so our prompts and targets
are byte-identical to the ones lm-eval scores (``tasks/hellaswag/utils.py``,
``tasks/wikitext/preprocess_wikitext.py``)."""
from __future__ import annotations

import re


def hellaswag_preprocess(text: str) -> str:
    """Strip, turn the WikiHow ``" [title]"`` marker into a sentence break, drop every other
    ``[...]`` tag, and replace double spaces by single ones (one pass, as lm-eval does)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def wikitext_detokenize(page: str) -> str:
    """Undo WikiText's tokenisation (``" @-@ "`` -> ``"-"``, spaces before punctuation and
    inside brackets and quotes, ``= = Title = =`` -> ``== Title ==``), rule by rule and in
    lm-eval's order; the order matters because later rules see earlier rules' output."""
    s = page
    # contractions
    s = s.replace("s '", "s'")
    # Verbatim from lm-eval: this pattern only matches a literal "/' 5/", so it is almost
    # always a no-op; kept so our text is exactly the harness's.
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    # number separators
    s = s.replace(" @-@ ", "-")
    s = s.replace(" @,@ ", ",")
    s = s.replace(" @.@ ", ".")
    # punctuation
    s = s.replace(" : ", ": ")
    s = s.replace(" ; ", "; ")
    s = s.replace(" . ", ". ")
    s = s.replace(" ! ", "! ")
    s = s.replace(" ? ", "? ")
    s = s.replace(" , ", ", ")
    # brackets and quotes
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    # headings and the rest
    s = s.replace("= = = =", "====")
    s = s.replace("= = =", "===")
    s = s.replace("= =", "==")
    s = s.replace(" " + chr(176) + " ", chr(176))
    s = s.replace(" \n", "\n")
    s = s.replace("\n ", "\n")
    s = s.replace(" N ", " 1 ")
    s = s.replace(" 's", "'s")
    return s


def count_words(page: str) -> int:
    """Words of the RAW page, as lm-eval counts them for word perplexity:
    ``len(re.split(r"\\s+", page))`` (a leading or trailing whitespace run adds one)."""
    return len(re.split(r"\s+", page))


def count_bytes(page: str) -> int:
    """UTF-8 bytes of the raw page (lm-eval's wikitext counts bytes before detokenising)."""
    return len(page.encode("utf-8"))
