"""The bundled sentence-transformers model as an ONNX Runtime graph: exported once at setup time (torch),
then run with onnxruntime and the tokenizers library only, so a process that loads it never imports torch."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from indexer.encoder import model_id

log = logging.getLogger(__name__)

Variant = Literal["fp32", "int8"]
MANIFEST = "manifest.json"
FILES: dict[Variant, str] = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FORMAT = 1  # bump when the exported graph's inputs or outputs change: an older export is then refused


class OnnxExportMissing(RuntimeError):
    """No usable export in the ONNX folder (absent, or made from other weights): `hybridrec encoder export`."""


def weights_digest(model_dir: Path) -> str:
    """sha256 over the source model's weight and tokenizer files: ties an export to the weights it came from."""
    digest = hashlib.sha256()
    for name in ("model.safetensors", "pytorch_model.bin", "tokenizer.json", "sentence_bert_config.json"):
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _pooling_config(model_dir: Path) -> dict[str, Any]:
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k not in ("Transformer", "Pooling", "Normalize") for k in kinds):
        raise ValueError(f"{model_dir}: only Transformer -> mean Pooling [-> Normalize] models export, got {kinds}")
    pooling_dir = model_dir / next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    pooling: dict[str, Any] = json.loads((pooling_dir / "config.json").read_text())
    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{model_dir}: only mean pooling is exported, the model asks for {modes}")
    return pooling


def export(model: str, out_dir: Path, *, opset: int = 17) -> dict[str, Any]:
    """Export `model` (a local sentence-transformers folder) to out_dir: the transformer with mean pooling in
    one fp32 graph, its dynamically quantised int8 twin, the tokenizer and a manifest. Needs torch and onnx;
    reads local files only."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    model_dir = Path(model)
    if not (model_dir / "modules.json").is_file():
        raise ValueError(f"{model}: not a local sentence-transformers folder (modules.json missing)")
    pooling = _pooling_config(model_dir)
    max_seq_length = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    transformer = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager").eval()

    class MeanPooled(torch.nn.Module):
        """The transformer, then the mean of its token states under the attention mask (Pooling's rule)."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            states = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    # The TorchScript exporter: the torch.export one (dynamo=True) gave wrong vectors for padded batches here
    # (transformers' mask helpers), which the check below caught. Its warnings are about Python branches on
    # shapes in those helpers, constant for every batch, and about its own deprecation; the check against
    # sentence-transformers on texts of other lengths and batch sizes is what vouches for the graph.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean")  # torch's TracerWarning
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            MeanPooled().eval(), (sample, sample, torch.zeros_like(sample)), str(staging / FILES["fp32"]),
            input_names=list(INPUTS), output_names=["sentence_embedding"], opset_version=opset, dynamo=False,
            dynamic_axes={**{name: axes for name in INPUTS}, "sentence_embedding": {0: "batch"}},
        )
    shutil.copy(model_dir / "tokenizer.json", staging / "tokenizer.json")
    _check_export(model, staging, max_seq_length)
    # Per-channel int8 weights (bench/encoder.py: cosine 0.991 to torch on the demo titles; per-tensor: 0.960).
    quantize_dynamic(str(staging / FILES["fp32"]), str(staging / FILES["int8"]), weight_type=QuantType.QInt8,
                     per_channel=True)
    manifest = {
        "format": FORMAT, "source": str(model_dir.resolve()), "weights_sha256": weights_digest(model_dir),
        "model_id": model_id(model), "dim": int(pooling["word_embedding_dimension"]),
        "max_seq_length": max_seq_length, "files": FILES, "opset": opset, "torch": torch.__version__,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for path in staging.iterdir():  # replace the files only once every one was written
        path.replace(out_dir / path.name)
    staging.rmdir()
    return manifest


CHECK_TEXTS = ("Toy Story (1995)", "kitchen pasta", "a much longer text that pads the shorter ones " * 4, "x")


def _check_export(model: str, staging: Path, max_seq_length: int) -> None:
    """The fp32 graph must give sentence-transformers' own vectors (a traced branch gone wrong would not)."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(model, device="cpu", local_files_only=True).encode(
        list(CHECK_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
    ours = OnnxEncoder(staging / FILES["fp32"], staging / "tokenizer.json", model_id(model),
                       reference.shape[1], max_seq_length).encode(list(CHECK_TEXTS))
    worst = float((reference * ours).sum(1).min())
    if worst < 0.9999:
        raise RuntimeError(f"the ONNX export of {model} does not reproduce it (lowest cosine {worst:.5f})")


def read_manifest(model: str, onnx_dir: Path) -> dict[str, Any]:
    """The export's manifest, checked against `model`'s weights; OnnxExportMissing when it does not fit."""
    path = onnx_dir / MANIFEST
    if not path.is_file():
        raise OnnxExportMissing(f"no ONNX export in {onnx_dir}")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise OnnxExportMissing(f"the ONNX export in {onnx_dir} has format {manifest.get('format')}, not {FORMAT}")
    model_dir = Path(model)
    if not model_dir.is_dir() or manifest.get("weights_sha256") != weights_digest(model_dir):
        raise OnnxExportMissing(f"the ONNX export in {onnx_dir} was made from other weights than {model}")
    return manifest


class OnnxEncoder:
    """Encodes like indexer.encoder.TorchEncoder (normalised float32, same vector space and model_id) with
    onnxruntime: WordPiece by the tokenizers library, the exported graph, L2 normalisation in numpy."""

    def __init__(self, graph: Path, tokenizer: Path, model_id: str, dim: int, max_seq_length: int,
                 batch_size: int = 64, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_id = model_id
        self.dim = dim
        self.device = "cpu"
        self.backend = "onnx-int8" if graph.name == FILES["int8"] else "onnx"
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        # The file's own settings (fixed padding to 128, truncation at 128) are not what sentence-transformers
        # applies: it pads to the longest text of the batch and truncates at the model's max_seq_length.
        self._tokenizer.enable_truncation(max_length=max_seq_length)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    @classmethod
    def load(cls, model: str, onnx_dir: Path, variant: Variant = "int8", batch_size: int = 64) -> OnnxEncoder:
        """The export in onnx_dir, checked to come from `model`'s weights (else OnnxExportMissing)."""
        manifest = read_manifest(model, onnx_dir)
        return cls(onnx_dir / manifest["files"][variant], onnx_dir / "tokenizer.json", manifest["model_id"],
                   int(manifest["dim"]), int(manifest["max_seq_length"]), batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of shape (len(texts), dim), L2-normalised, float32."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Sorting by length keeps the padding of each batch small, as sentence-transformers does.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self._run([texts[i] for i in chunk])
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (pooled,) = self._session.run(None, feeds)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)

