"""nlrepro's filter rules as datatrove pipeline steps.

Global order: every document carries ``gidx``, its position in the concatenation of the
sources (sorted by name, each in ingest order), written into the input parts. Global
decisions (exact dup, near dup) are taken in ``gidx`` order by one task, so they do not
depend on how many tasks read the parts. This module imports datatrove: import it only
when the engine runs.
"""
from __future__ import annotations

import io
import json

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer

from nlrepro.data.config import FilterConfig
from nlrepro.data.engine.decide import decide
from nlrepro.data.filters import MinHasher, content_hash, lsh_bands, normalize, quality_rule

# datatrove's 64-bit band reader stops at 2**61-1 (its hashes live below it).
MERSENNE = np.uint64((1 << 61) - 1)


def minhash_config(cfg: FilterConfig) -> MinhashConfig:
    """datatrove's banding set to ours (128 perms, threshold 0.8 -> 8 bands x 16 rows)."""
    bands, rows = lsh_bands(cfg.num_perm, cfg.near_dup_threshold)
    return MinhashConfig(n_grams=cfg.shingle_words, num_buckets=bands, hashes_per_bucket=rows,
                         hash_config=HashConfig(precision=64, hash_fc="sha1"))


class _KeepEmpty:
    """datatrove readers skip documents with empty text; ours counts them (too_short)."""

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file):
        return Document(**self.adapter(data, source_file, id_in_file))


def part_adapter(self, data: dict, path: str, id_in_file) -> dict:
    """A row of an input part -> a Document with its source and global index."""
    return {"text": data["text"], "id": data["doc_id"],
            "metadata": {"gidx": int(data["gidx"]), "source": data["source"]}}


class PartReader(_KeepEmpty, ParquetReader):
    """The input parts (nlrepro.data.engine.parts); rank r reads parts[r::world]."""

    def __init__(self, folder: str, batch_size: int = 1000):
        super().__init__(folder, glob_pattern="*.parquet", adapter=part_adapter,
                         read_metadata=True, batch_size=batch_size)


class RankFileReader(_KeepEmpty, JsonlReader):
    """Read back exactly the file this rank wrote in an earlier stage (a plain listing
    would shift ranks when a task wrote nothing)."""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        name = f"{rank:05d}.jsonl.gz"
        if self.data_folder.exists(name):
            yield from self.read_files_shard([name])


def _write_bytes(folder, name: str, payload: bytes) -> None:
    with get_datafolder(folder).open(name, "wb") as f:
        f.write(payload)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class QualityFilter(BaseFilter):
    """normalize() then our per-document rules (the text that goes on is the normalised
    one); counts documents in per source and drops per rule, in raw characters, into
    ``{rank:05d}.json`` (filter_documents' FilterStats, for this rank's share)."""
    name = "nlrepro quality"

    def __init__(self, cfg: FilterConfig, stats_folder: str):
        super().__init__()
        self.cfg, self.stats_folder = cfg, stats_folder
        self.counts = {"sources": {}, "rules": {}}

    def filter(self, doc):
        raw = len(doc.text)
        src = self.counts["sources"].setdefault(doc.metadata["source"], [0, 0])
        src[0], src[1] = src[0] + 1, src[1] + raw
        doc.metadata["raw_chars"] = raw
        doc.text = normalize(doc.text)
        rule = quality_rule(doc.text, self.cfg)
        if rule is None:
            return True
        drop = self.counts["rules"].setdefault(rule, [0, 0])
        drop[0], drop[1] = drop[0] + 1, drop[1] + raw
        return False, rule

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        yield from super().run(data, rank, world_size)
        _write_bytes(self.stats_folder, f"{rank:05d}.json", json.dumps(self.counts).encode())


class Sidecar(PipelineStep):
    """Pass-through: records gidx, raw length and SHA-256 of every kept document of this
    rank, in stream order, into ``{rank:05d}.npz`` (input of the dedup decisions)."""
    name = "nlrepro sidecar"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        gidx, raw, sha = [], [], []
        for doc in data:
            gidx.append(doc.metadata["gidx"])
            raw.append(doc.metadata["raw_chars"])
            sha.append(content_hash(doc.text))
            yield doc
        _write_bytes(self.folder, f"{rank:05d}.npz", _npz(
            gidx=np.array(gidx, np.int64), raw=np.array(raw, np.int64),
            sha=np.array(sha, dtype="S64")))


class _NoTok(WordTokenizer):  # our shingling splits on whitespace itself: no spaCy
    def word_tokenize(self, text): return text.split()
    def sent_tokenize(self, text): return [text]
    def span_tokenize(self, text): return [(0, len(text))]


class Signature(MinhashDedupSignature):
    """datatrove's MinHash stage 1 with OUR MinHash: band files in datatrove's format (so
    its MinhashDedupBuckets finds band collisions across all ranks), plus the full
    signatures in ``{rank:05d}.npz`` for our Jaccard check."""
    name = "nlrepro MinHash signature"

    def __init__(self, output_folder: str, sig_folder: str, cfg: FilterConfig):
        super().__init__(output_folder, config=minhash_config(cfg), language=_NoTok())
        self.hasher = MinHasher(cfg.num_perm, cfg.shingle_words)
        self.sig_folder = sig_folder
        self._sigs: list[np.ndarray] = []

    def get_shingles(self, text):  # our signature, computed from the text directly
        sig = self.hasher.signature(text)
        self._sigs.append(sig)
        return sig.reshape(-1, 1)

    def get_signature(self, sig):
        # fold below 2**61-1 (only band equality matters there; the npz keeps the values)
        return [b.tolist() for b in np.split(sig.ravel() % MERSENNE, self.config.num_buckets)]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        super().run(data, rank, world_size)  # a sink: it yields nothing
        width = self.hasher.salts.size
        sigs = np.stack(self._sigs) if self._sigs else np.zeros((0, width), np.uint64)
        _write_bytes(self.sig_folder, f"{rank:05d}.npz", _npz(sig=sigs))


class Decide(PipelineStep):
    """One task: exact and near dedup in global order (nlrepro.data.engine.decide);
    writes datatrove's ``{rank:06d}.remove`` files, so its MinhashDedupFilter applies
    them, and ``rules.json`` (exact_dup and near_dup counts)."""
    name = "nlrepro dedup decisions"

    def __init__(self, sidecar: str, sigs: str | None, dups: str | None, output: str,
                 cfg: FilterConfig, world: int):
        super().__init__()
        self.sidecar, self.sigs, self.dups, self.output = sidecar, sigs, dups, output
        self.cfg, self.world = cfg, world

    def _load(self, folder: str, name: str):
        with get_datafolder(folder).open(name, "rb") as f:
            return np.load(io.BytesIO(f.read()))

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        side = [self._load(self.sidecar, f"{r:05d}.npz") for r in range(self.world)]
        sigs = ([self._load(self.sigs, f"{r:05d}.npz")["sig"] for r in range(self.world)]
                if self.sigs else None)
        dups = get_datafolder(self.dups) if self.dups else None
        pairs: dict[int, list] = {}
        for name in sorted(dups.list_files(glob_pattern="*.dups")) if dups else []:
            band = int(name.split("_")[0])  # {band:05d}_{worker:02d}.dups
            with dups.open(name, "rb") as f:
                pairs.setdefault(band, []).append(
                    np.frombuffer(f.read(), dtype="<u4").reshape(-1, 4))
        pairs = {b: np.concatenate(p) for b, p in pairs.items()}
        remove, rules = decide(side, sigs, pairs, self.cfg)
        out = get_datafolder(self.output)
        for r, rows in enumerate(remove):
            with out.open(f"{r:06d}.remove", "wb") as f:
                f.write(np.asarray(rows, dtype="<u4").tobytes())
        with out.open("rules.json", "w") as f:
            json.dump(rules, f)
