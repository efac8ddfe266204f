"""Published-size profiles (engine.backends.published): AudioLDM2 and Stable Audio Open at their
real configurations, random weights, sites and lattices checked against the architecture."""

from __future__ import annotations

import pytest
import torch

from engine.backends.audioldm2 import AudioLDM2Backend
from engine.backends.published import (
    build_ace_step_transformer,
    build_audioldm2_unet,
    build_published_audioldm2,
    build_stable_audio_3_dit,
    build_stable_audio_dit,
    parameter_count,
)
from engine.backends.registry import load_backend
from engine.types import EngineError, GenerationRequest


def test_unknown_random_model_is_one_line():
    with pytest.raises(EngineError, match="random:audioldm2 or random:stable_audio"):
        load_backend("random:musicgen")


@pytest.mark.slow
def test_audioldm2_published_sites_and_lattices():
    with torch.device("meta"):  # the architecture only: nothing is allocated
        pipe = build_published_audioldm2()
    total = sum(parameter_count(pipe).values())
    assert 1.07e9 < total < 1.09e9
    assert sum(p.numel() for p in pipe.unet.parameters()) == 346_943_496
    backend = AudioLDM2Backend(pipe, "random:audioldm2")
    sites = backend.sites()
    cross = [s for s in sites if s.kind == "cross"]
    assert len(sites) == 96 and len(cross) == 32
    assert sum(s.context == "t5" for s in cross) == sum(s.context == "loa" for s in cross) == 16
    lattices = {backend.planned_lattice(s.name, 5.0) for s in cross}
    assert lattices == {(63, 8), (32, 4), (16, 2)}
    by_level = {backend.site_level(s.name): backend.planned_lattice(s.name, 5.0) for s in cross}
    assert by_level == {1: (63, 8), 2: (32, 4), 3: (16, 2)}
    shapes = backend.frame_shapes(GenerationRequest(prompt="warm bass", duration=5.0))
    assert {shapes[s.name][0] for s in cross} == {8}  # diffusers' default: 8 heads per module


@pytest.mark.slow
def test_audioldm2_unet_real_size_forward_gives_the_planned_lattices():
    """A forward of the real-size UNet (random init, 5 s latent) sees the planned query counts."""
    unet = build_audioldm2_unet()
    with torch.device("meta"):
        backend = AudioLDM2Backend(build_published_audioldm2(), "random:audioldm2")
    seen: dict[str, int] = {}
    cross = [s for s in backend.sites() if s.kind == "cross"]

    def record(name: str):
        def hook(module, args, kwargs) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[name] = int(hidden.shape[1])
        return hook

    hooks = [unet.get_submodule(s.name).register_forward_pre_hook(record(s.name), with_kwargs=True)
             for s in cross]
    latent = torch.randn(1, 8, backend.mel_frames(5.0) // 4, 16)
    try:
        with torch.no_grad():
            out = unet(latent, torch.tensor([500]), encoder_hidden_states=torch.randn(1, 8, 768),
                       encoder_hidden_states_1=torch.randn(1, 6, 1024), return_dict=False)[0]
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == latent.shape and torch.isfinite(out).all()
    assert len(seen) == 32
    for s in cross:
        t, f = backend.planned_lattice(s.name, 5.0)
        assert seen[s.name] == t * f, s.name


@pytest.mark.slow
def test_stable_audio_dit_published_size():
    with torch.device("meta"):
        dit = build_stable_audio_dit("meta")
    assert sum(p.numel() for p in dit.parameters()) == 1_056_939_136
    cross = [m for n, m in dit.named_modules() if n.endswith("attn2")]
    assert len(cross) == 24 and all(m.is_cross_attention and m.heads == 24 for m in cross)
    assert cross[0].to_k.out_features == 12 * 64  # 12 K/V heads of 64


@pytest.mark.slow
def test_ace_step_and_stable_audio_3_denoisers_published_size():
    from engine.probe.attach import attention_modules

    ace = build_ace_step_transformer("meta")
    cross = {n: m for n, m in attention_modules(ace).items() if n.endswith("cross_attn")}
    assert len(cross) == 24 and ace.config.hidden_size == 2048
    assert {(m.heads, ace.config.num_key_value_heads) for m in cross.values()} == {(16, 8)}
    sa3 = build_stable_audio_3_dit("meta")
    assert sa3.config.embed_dim == 1536 and sa3.config.depth == 24 and sa3.config.io_channels == 256
    assert len(attention_modules(sa3)) >= 48  # a self and a cross attention per block
