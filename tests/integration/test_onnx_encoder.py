"""The ONNX export of the bundled model against sentence-transformers on torch, and the API's query path on it
without torch: a real export (torch, onnx), real onnxruntime sessions, the API app in a process of its own."""
from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Toy Story (1995)", "kitchen pasta", "space rocket garden", "x", "",
         "GoldenEye (1995). A action / adventure / thriller film released in 1995. Tags: Action, Adventure",
         "a text far longer than the 256 tokens the model reads, so truncation must match " * 30]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory, settings) -> Path:
    from indexer.onnx_encoder import export

    out = tmp_path_factory.mktemp("onnx")
    export(settings.model, out)
    return out


@pytest.fixture(scope="module")
def torch_vectors(settings) -> np.ndarray:
    from indexer.encoder import TorchEncoder

    return TorchEncoder(settings.model, "cpu").encode(TEXTS)


def test_fp32_export_gives_torchs_vectors_and_int8_stays_close(settings, onnx_dir, torch_vectors):
    from indexer.onnx_encoder import OnnxEncoder

    fp32 = OnnxEncoder.load(settings.model, onnx_dir, "fp32", batch_size=3).encode(TEXTS)  # padded batches
    int8 = OnnxEncoder.load(settings.model, onnx_dir, "int8").encode(TEXTS)
    assert fp32.shape == int8.shape == torch_vectors.shape
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert (fp32 * torch_vectors).sum(1).min() >= 0.9999
    cosine = (int8 * torch_vectors).sum(1)
    real = [i for i, t in enumerate(TEXTS) if len(t) > 1]  # "" and "x" move most under int8 (0.97-0.98)
    assert cosine[real].mean() >= 0.99 and cosine.min() >= 0.96, cosine
    # One text alone and inside a batch of longer ones gets the same vector (padding is masked out).
    alone = OnnxEncoder.load(settings.model, onnx_dir, "fp32").encode([TEXTS[0]])[0]
    assert float(alone @ fp32[0]) >= 0.99999


def test_an_export_of_other_weights_is_refused_and_torch_serves(settings, onnx_dir, tmp_path, caplog):
    from indexer.encoder import get_query_encoder
    from indexer.onnx_encoder import MANIFEST, OnnxEncoder, OnnxExportMissing

    stale = tmp_path / "stale"
    stale.mkdir()
    for path in onnx_dir.iterdir():
        (stale / path.name).symlink_to(path)
    manifest = json.loads((onnx_dir / MANIFEST).read_text())
    (stale / MANIFEST).unlink()
    (stale / MANIFEST).write_text(json.dumps({**manifest, "weights_sha256": "0" * 64}))
    with pytest.raises(OnnxExportMissing, match="other weights"):
        OnnxEncoder.load(settings.model, stale)
    with caplog.at_level(logging.WARNING, logger="indexer.encoder"):
        chosen = get_query_encoder(settings.model_copy(update={"query_encoder": "onnx-int8",
                                                                              "onnx_dir": stale}))
    assert chosen.backend == "torch"
    assert "falling back to torch" in caplog.text and "hybridrec encoder export" in caplog.text


def test_the_api_query_path_runs_on_onnx_without_torch(settings, onnx_dir, torch_vectors):
    probe = (
        "import json, sys\n"
        "from api.app import create_app\n"
        "app = create_app()\n"
        "services = app.extensions['hybridrec']\n"
        "vector = services.recommender.embed_query(sys.argv[1])\n"
        "print(json.dumps({'backend': services.recommender.encoder().backend, 'vector': vector.tolist(),\n"
        "                  'torch': 'torch' in sys.modules}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDREC_QUERY_ENCODER": "onnx-int8",
           "HYBRIDREC_ONNX_DIR": str(onnx_dir)}
    text = f"{TEXTS[5]} {secrets.token_hex(4)}"  # not in the query-vector cache: the encoder must run
    out = subprocess.run([sys.executable, "-c", probe, text], env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnx-int8"
    assert result["torch"] is False
    from indexer.encoder import TorchEncoder

    reference = TorchEncoder(settings.model, "cpu").encode([text])[0]
    assert float(np.asarray(result["vector"]) @ reference) >= 0.97
