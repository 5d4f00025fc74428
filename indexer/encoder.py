"""Turns item and query text into normalised vectors: sentence-transformers on torch, or its ONNX export
(indexer/onnx_encoder.py) where settings ask for it; one model per process and role."""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from indexer.settings import Settings

log = logging.getLogger(__name__)

# The one text template for items: title first (it carries most of the meaning), then the
# description, then the tags as a comma list. Changing it changes every text_hash, so a
# reindex will embed everything again, which is what a template change needs.
ITEM_TEXT_TEMPLATE = "{title}. {description} Tags: {tags}"


def item_text(title: str, description: str | None, tags: Sequence[str] | None) -> str:
    """The text embedded for an item (see ITEM_TEXT_TEMPLATE)."""
    text = ITEM_TEXT_TEMPLATE.format(
        title=title.strip(), description=(description or "").strip(), tags=", ".join(tags or [])
    )
    return " ".join(text.split())


def text_hash(text: str) -> str:
    """Stable fingerprint of an item's embedded text; unchanged hash + same model = no re-embedding."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_id(model: str) -> str:
    """The vector space's name for a model path or name: its last path part (the bundled package keeps the
    weights in a folder called model/, which is all-MiniLM-L6-v2)."""
    name = model.rstrip("/").split("/")[-1]
    return "all-MiniLM-L6-v2" if name == "model" else name


class Encoder(Protocol):
    """What the indexer and the read path need from an encoder. `model_id` names the vector space (stored
    with each item, so the same model on another backend needs no re-embedding); `backend` says how it runs."""

    model_id: str
    dim: int
    device: str
    backend: str
    batch_size: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of shape (len(texts), dim), L2-normalised, float32."""
        ...


class TorchEncoder:
    """A sentence-transformers model on torch with normalised float32 output."""

    def __init__(self, model: str, device: str = "auto", batch_size: int = 64) -> None:
        import torch
        from sentence_transformers import SentenceTransformer  # heavy import: only when an encoder is built

        resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.device = resolved
        self.backend = "torch"
        self.batch_size = batch_size
        self.model_id = model_id(model)
        self._model = SentenceTransformer(model, device=resolved, local_files_only=True)
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        self.dim = int(dim or 0)
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of shape (len(texts), dim), L2-normalised, float32."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # torch modules are not re-entrant across threads sharing one model
            vectors = self._model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=8)
def _encoder(model: str, device: str, batch_size: int, backend: str, onnx_dir: str) -> Encoder:
    began = time.perf_counter()
    encoder = _load(model, device, batch_size, backend, onnx_dir)
    log.info("encoder %s (%s) loaded in %.2f s", model, encoder.backend, time.perf_counter() - began)
    return encoder


def _load(model: str, device: str, batch_size: int, backend: str, onnx_dir: str) -> Encoder:
    if backend != "torch" and device != "cuda":  # asked for a GPU: torch runs there, the export is CPU only
        from indexer.onnx_encoder import OnnxEncoder, OnnxExportMissing

        try:
            return OnnxEncoder.load(model, Path(onnx_dir), "int8" if backend == "onnx-int8" else "fp32", batch_size)
        except OnnxExportMissing as exc:
            # Same vectors, only slower and with torch loaded: serving stays right, so this warns, not fails.
            log.warning("encoder %s: %s; falling back to torch (run `hybridrec encoder export` to create it)",
                        backend, exc)
    return TorchEncoder(model, device, batch_size)


def get_encoder(settings: Settings) -> Encoder:
    """The process-wide item encoder (settings.index_encoder), loaded once, on first use."""
    return _encoder(settings.model, settings.device, settings.batch_size, settings.index_encoder,
                    str(settings.onnx_dir))


def get_query_encoder(settings: Settings) -> Encoder:
    """The process-wide query-text encoder (settings.query_encoder), loaded once, on first use."""
    return _encoder(settings.model, settings.device, settings.batch_size, settings.query_encoder,
                    str(settings.onnx_dir))
