"""Each filter rule on crafted input, exact and near dedup, normalisation, determinism."""
import numpy as np

from nlrepro.data.config import FilterConfig
from nlrepro.data.filters import (MinHasher, filter_documents, lsh_bands, normalize,
                                  stopword_fraction)

CFG = FilterConfig(min_chars=50, max_chars=2000, min_alpha_frac=0.6, min_stopword_frac=0.1,
                   near_dup_threshold=0.8, shingle_words=3, num_perm=128)

PROSE = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
         "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
         "incredulity, it was the season of light, it was the season of darkness.")
OTHER = ("Now is the winter of our discontent made glorious summer by this sun of York; "
         "and all the clouds that lour'd upon our house in the deep bosom of the ocean buried.")


def run(texts, cfg=CFG):
    docs = [(f"d{i}", "s", t) for i, t in enumerate(texts)]
    kept, stats = filter_documents(docs, cfg)
    return [d for d, _, _ in kept], stats


def test_normalize_keeps_newlines_and_indentation_but_drops_noise():
    raw = "Line one  \r\n\tindented\r\n\n\n\nafter\x07 blanks\u0065\u0301   "
    assert normalize(raw) == "Line one\n\tindented\n\nafter blanks\u00e9"


def test_too_short_and_too_long():
    ids, stats = run([PROSE, "Too short.", PROSE * 20])
    assert ids == ["d0"]
    assert stats.rules["too_short"] == {"docs": 1, "chars": len("Too short.")}
    assert stats.rules["too_long"] == {"docs": 1, "chars": len(PROSE * 20)}


def test_low_alpha_drops_tables_of_numbers():
    table = "\n".join(f"{i} | {i * 37 % 101} | {i * 13 % 7}.{i}" for i in range(30))
    ids, stats = run([table, PROSE])
    assert ids == ["d1"] and stats.rules["low_alpha"]["docs"] == 1


def test_not_english_drops_text_without_function_words():
    german = ("Zwischen grauen Bergen liegt heute ruhig ein kleines Dorf mit alten Häusern, "
              "schmalen Gassen, hölzernen Brücken und blühenden Gärten am Fluss entlang.")
    assert stopword_fraction(german) < 0.1 < stopword_fraction(PROSE)
    ids, stats = run([german, PROSE])
    assert ids == ["d1"] and stats.rules["not_english"]["docs"] == 1


def test_exact_duplicates_after_normalisation_keep_the_first():
    ids, stats = run([PROSE, OTHER, PROSE.replace(" ", " ", 1) + "  \r\n", PROSE])
    assert ids == ["d0", "d1"]
    assert stats.rules["exact_dup"]["docs"] == 2


def test_near_duplicates_are_removed_and_distinct_texts_kept():
    near = PROSE.replace("season of darkness", "season of darkness, truly")
    ids, stats = run([PROSE, OTHER, near])
    assert ids == ["d0", "d1"]
    assert stats.rules["near_dup"] == {"docs": 1, "chars": len(near)}
    ids, _ = run([PROSE, OTHER, near], FilterConfig(**{**CFG.__dict__, "near_dup_threshold": None}))
    assert ids == ["d0", "d1", "d2"]


def test_minhash_estimates_jaccard():
    hasher = MinHasher(num_perm=1024, shingle_words=1)
    a = " ".join(f"w{i}" for i in range(100))
    b = " ".join(f"w{i}" for i in range(50, 150))  # Jaccard 50/150
    est = np.mean(hasher.signature(a) == hasher.signature(b))
    assert abs(est - 1 / 3) < 0.05


def test_lsh_bands_cover_the_signature_and_sit_near_the_threshold():
    b, r = lsh_bands(128, 0.8)
    assert b * r == 128
    assert abs((1 / b) ** (1 / r) - 0.8) < 0.1


def test_counts_in_and_out_per_source():
    docs = [("a", "x", PROSE), ("b", "y", OTHER), ("c", "y", "short")]
    _, stats = filter_documents(docs, CFG)
    assert stats.sources["x"] == {"docs_in": 1, "chars_in": len(PROSE), "docs_out": 1,
                                  "chars_out": len(PROSE)}
    assert stats.sources["y"]["docs_in"] == 2 and stats.sources["y"]["docs_out"] == 1


def test_filter_is_deterministic():
    texts = [PROSE, OTHER, PROSE + " Again.", OTHER.upper()]
    assert run(texts) == run(texts)
