"""The embedded default model ``aiba-slakh-tiny``: a small text-to-mel diffusion model.

A diffusers ``UNet2DConditionModel`` denoises the (pixel-unshuffled) log-mel directly; a tiny
word-level text encoder conditions it through real ``attn2`` cross-attention; Griffin-Lim makes
audio. Modules: :mod:`melspec` (mel definition), :mod:`vocoder` (Griffin-Lim), :mod:`textenc`
(tokenizer + encoder), :mod:`pipeline` (the pipeline object), :mod:`dataset` (training clips from
Slakh-format stems), :mod:`train` (``train_default``), :mod:`evaluate` (quality checks).
"""

DEFAULT_MODEL_DIR_NAME = "aiba-slakh-tiny"
