"""Damaged model folders (the embedded model, a save_pretrained pipeline) and eval folders end in
one EngineError line before any weight is used."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import EngineError
from engine.models.embedded.backend import default_model_dir

EMBEDDED = default_model_dir()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01garbage" * 100)


def _header(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _set_header(path: Path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def _huge_shape(path: Path) -> None:
    header, body = _header(path)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [2**20, 2**20]
    header[name]["data_offsets"] = [0, 2**42]
    _set_header(path, header, body)


def _wrong_vocab_shape(path: Path) -> None:
    """A well-formed file whose token.weight is (10, 64): it does not fit the config's vocabulary."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state["token.weight"] = state["token.weight"][:10].clone()
    save_file(state, str(path))


EMBEDDED_DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "truncated UNet weights": ("unet/diffusion_pytorch_model.safetensors", _truncate),
    "garbage text-encoder weights": ("text_encoder/model.safetensors", _garbage),
    "huge tensor shape in a header": ("unet/diffusion_pytorch_model.safetensors", _huge_shape),
    "text-encoder weights of the wrong shape": ("text_encoder/model.safetensors", _wrong_vocab_shape),
    "missing UNet config.json": ("unet/config.json", lambda p: p.unlink()),
    "UNet config.json not JSON": ("unet/config.json", lambda p: p.write_text("{not json")),
    "mel config with text numbers": ("mel_config.json", lambda p: p.write_text(json.dumps({"sample_rate": "16k"}))),
    "mel config as a list": ("mel_config.json", lambda p: p.write_text("[1, 2]")),
    "vocabulary words not text": ("tokenizer/vocab.json",
                                  lambda p: p.write_text(json.dumps({"words": [1], "aliases": {}, "max_length": 16}))),
    "text-encoder config with a string size": ("text_encoder/config.json",
                                               lambda p: p.write_text(json.dumps({"vocab_size": "35"}))),
    "model card JSON too deep": ("aiba_model.json", lambda p: p.write_text("[" * 100_000 + "]" * 100_000)),
}


@pytest.mark.parametrize("damage", list(EMBEDDED_DAMAGE))
def test_damaged_embedded_model_folder(tmp_path, damage):
    from engine.models.embedded.pipeline import EmbeddedPipeline

    folder = tmp_path / "model"
    shutil.copytree(EMBEDDED, folder)
    rel, apply = EMBEDDED_DAMAGE[damage]
    apply(folder / rel)
    with pytest.raises(EngineError) as info:
        EmbeddedPipeline.from_pretrained(folder)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from engine.backends.tiny import save_tiny

    return Path(save_tiny("audioldm2", tmp_path_factory.mktemp("tiny") / "ldm"))


PIPELINE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "model_index.json not JSON": lambda f: (f / "model_index.json").write_text("{oops"),
    "model_index.json a list": lambda f: (f / "model_index.json").write_text("[]"),
    "model_index.json with a numeric class": lambda f: (f / "model_index.json").write_text('{"_class_name": 5}'),
    "model_index.json lists no components": lambda f: (f / "model_index.json").write_text(
        '{"_class_name": "AudioLDM2Pipeline"}'),
    "a listed component folder is missing": lambda f: shutil.rmtree(f / "vae"),
    "truncated UNet weights": lambda f: _truncate(next((f / "unet").glob("*.safetensors"))),
    "huge tensor shape in a header": lambda f: _huge_shape(next((f / "vae").glob("*.safetensors"))),
    "garbage VAE config": lambda f: (f / "vae" / "config.json").write_text("\x00\x01"),
}


@pytest.mark.parametrize("damage", list(PIPELINE_DAMAGE))
def test_damaged_pipeline_folder(tmp_path, tiny_folder, damage):
    from engine.backends.registry import load_folder

    folder = tmp_path / "ldm"
    shutil.copytree(tiny_folder, folder)
    PIPELINE_DAMAGE[damage](folder)
    with pytest.raises(EngineError) as info:
        load_folder(folder, "cpu", "float32")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["{oops", "[]", '{"weights": [1]}', '{"weights": {"a": "x"}}', "{}"])
def test_eval_layer_weights_read_back_is_checked(tmp_path, text):
    from engine.evaluation.runner import fit_weights

    (tmp_path / "layer_weights.json").write_text(text)
    with pytest.raises(EngineError, match="layer weights"):
        fit_weights(None, [], tmp_path, None)  # a cached file is read before anything else is used


@pytest.mark.parametrize("text", ["{oops", "[1, 2]", "\"text\"", "[" * 50_000])
def test_eval_resume_reads_back_a_checked_config(tmp_path, text):
    from engine.evaluation.runner import EvalOptions, prepare_folder

    (tmp_path / "config.json").write_text(text)
    options = EvalOptions(dataset=str(tmp_path), out=str(tmp_path), resume=True)
    with pytest.raises(EngineError, match="eval settings"):
        prepare_folder(options, tmp_path)
