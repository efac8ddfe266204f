"""One short display name per attention site (engine.site_labels), checked on hand-written cases
and on every site of the embedded model: labels are shorter and still tell all sites apart."""

from __future__ import annotations

from engine.site_labels import site_label, site_labels


def test_labels_of_each_family_by_hand():
    assert site_label("up_blocks.0.attentions.1.transformer_blocks.0.attn2") == "up0.a1.attn2"
    assert site_label("down_blocks.1.attentions.2.transformer_blocks.0.attn1") == "down1.a2.attn1"
    assert site_label("mid_block.attentions.0.transformer_blocks.0.attn2") == "mid.a0.attn2"
    assert site_label("transformer_blocks.11.attn2") == "tb11.attn2"  # Stable Audio's DiT
    assert site_label("encoder.layers.3.cross_attn") == "encoder.layers.3.cross_attn"  # unknown: unchanged


def test_a_label_shared_by_two_names_falls_back_to_the_full_names():
    a, b = "up_blocks.0.attentions.1.transformer_blocks.0.attn2", "up_blocks.0.attentions.1.attn2"
    assert site_label(a) == site_label(b)
    assert site_labels([a, b, "mid_block.attentions.0.attn2"]) == {a: a, b: b, "mid_block.attentions.0.attn2": "mid.a0.attn2"}


def test_every_embedded_site_gets_a_distinct_shorter_label():
    from engine.backends.registry import load_backend

    names = [s.name for s in load_backend("embedded", "cpu").sites()]
    labels = site_labels(names)
    assert len(set(labels.values())) == len(names) > 4
    assert all(len(labels[n]) < len(n) for n in names)
