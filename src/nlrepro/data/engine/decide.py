"""The global dedup decisions of the engine, with filter_documents' semantics: documents
in global order (``gidx``); an exact duplicate (same SHA-256 of the normalised text as
an earlier document that passed the quality rules) is dropped; a near duplicate is a
document that shares a band with an earlier KEPT document whose estimated Jaccard is at
least the threshold. Plain numpy (no datatrove): band collisions come in as arrays of
datatrove's ``.dups`` records ``(rank1, row1, rank2, row2)``.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from nlrepro.data.config import FilterConfig
from nlrepro.data.filters import lsh_bands


def _band_groups(pairs: dict[int, np.ndarray], flat, sig: np.ndarray | None,
                 rows: int) -> dict[int, list]:
    """Flat index -> keys of the band buckets it shares with another document. The key
    is (band, the band's full 64-bit values): datatrove compares values folded below
    2**61-1, and re-keying on the full values makes a candidate exactly what our
    in-process LSH would have found."""
    groups: dict[int, list] = defaultdict(list)
    for band, recs in sorted(pairs.items()):
        members = set()
        for r1, d1, r2, d2 in recs.tolist():
            members.add(flat(r1, d1))
            members.add(flat(r2, d2))
        for x in sorted(members):
            groups[x].append((band, sig[x, band * rows:(band + 1) * rows].tobytes()))
    return groups


def decide(side: list, sigs: list | None, pairs: dict[int, np.ndarray], cfg: FilterConfig
           ) -> tuple[list[list[int]], dict]:
    """``side[r]``: rank r's sidecar (gidx, raw, sha per kept row); ``sigs[r]``: its
    signatures (None: near dedup off). Returns the rows to remove per rank and the
    exact_dup / near_dup counts (documents and raw characters)."""
    sizes = [len(s["gidx"]) for s in side]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    gidx = np.concatenate([s["gidx"] for s in side]) if side else np.zeros(0, np.int64)
    raw = np.concatenate([s["raw"] for s in side]) if side else np.zeros(0, np.int64)
    sha = np.concatenate([s["sha"] for s in side]) if side else np.zeros(0, "S64")
    rank_of = np.repeat(np.arange(len(side)), sizes)
    near = cfg.near_dup_threshold is not None and sigs is not None
    sig = np.concatenate(sigs) if near else None
    rows = cfg.num_perm // lsh_bands(cfg.num_perm, cfg.near_dup_threshold)[0] if near else 0
    groups = _band_groups(pairs, lambda r, d: int(offsets[r]) + d, sig, rows) if near else {}
    rules = {"exact_dup": {"docs": 0, "chars": 0}, "near_dup": {"docs": 0, "chars": 0}}
    seen: set[bytes] = set()
    kept_in: dict[tuple, list[int]] = defaultdict(list)  # band bucket -> kept members
    remove: list[list[int]] = [[] for _ in side]
    for x in np.argsort(gidx, kind="stable").tolist():
        rule = None
        if sha[x] in seen:
            rule = "exact_dup"
        seen.add(sha[x])
        keys = groups.get(x, ())
        if rule is None and any(np.mean(sig[j] == sig[x]) >= cfg.near_dup_threshold
                                for key in keys for j in kept_in[key]):
            rule = "near_dup"
        if rule is None:
            for key in keys:
                kept_in[key].append(x)
            continue
        rules[rule]["docs"] += 1
        rules[rule]["chars"] += int(raw[x])
        remove[rank_of[x]].append(x - int(offsets[rank_of[x]]))
    return [sorted(r) for r in remove], rules
