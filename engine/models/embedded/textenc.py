"""Word-level tokenizer and tiny transformer text encoder of the embedded model.

Every sequence starts with ``<bos>``; the empty prompt is ``<bos>`` alone (the CFG "null"
caption). Synonyms share their canonical word's id ("drum" -> "drums"), but the token strings
keep the words the user wrote. Unknown words become ``<unk>`` and are *reported*.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from engine.types import EngineError

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"

# canonical caption word of each Slakh instrument class the model can be trained on
CLASS_WORDS: dict[str, str] = {
    "Bass": "bass",
    "Drums": "drums",
    "Guitar": "guitar",
    "Piano": "piano",
    "Strings": "strings",
    "Strings (continued)": "strings",
    "Organ": "organ",
    "Brass": "brass",
    "Reed": "reed",
    "Pipe": "flute",
    "Synth Lead": "lead",
    "Synth Pad": "pad",
    "Chromatic Percussion": "mallets",
}

CONNECTOR_WORDS = ("a", "an", "the", "and", "with", "playing", "plus", "solo", "together", "some",
                   "of", "music", "sound", "synth", "in", "on", "loop", "sample", "track", "line")

ALIASES: dict[str, str] = {
    "drum": "drums", "drumkit": "drums", "kit": "drums", "percussion": "drums", "beat": "drums",
    "basses": "bass", "bassline": "bass", "electric": "guitar", "guitars": "guitar",
    "pianos": "piano", "keyboard": "piano", "string": "strings", "violin": "strings",
    "violins": "strings", "cello": "strings", "orchestra": "strings", "organs": "organ",
    "trumpet": "brass", "trumpets": "brass", "horn": "brass", "horns": "brass", "trombone": "brass",
    "sax": "reed", "saxophone": "reed", "clarinet": "reed", "oboe": "reed", "flutes": "flute",
    "pipes": "flute", "pipe": "flute", "synthesizer": "synth", "pads": "pad", "leads": "lead",
    "marimba": "mallets", "vibraphone": "mallets", "xylophone": "mallets", "bells": "mallets",
}

_WORD = re.compile(r"[a-z]+")


class WordTokenizer:
    """``tokenize(prompt) -> (ids, token_strings, unknown_words)``; ids start with ``<bos>``."""

    def __init__(self, words: list[str], aliases: dict[str, str], max_length: int = 16) -> None:
        self.id_to_word = [PAD, BOS, UNK, *[w for w in words if w not in (PAD, BOS, UNK)]]
        self.word_to_id = {w: i for i, w in enumerate(self.id_to_word)}
        self.aliases = {a: c for a, c in aliases.items() if c in self.word_to_id}
        self.max_length = max_length

    @classmethod
    def default(cls) -> WordTokenizer:
        words = sorted(set(CLASS_WORDS.values()) | set(CONNECTOR_WORDS))
        return cls(words, ALIASES)

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_word)

    @property
    def pad_id(self) -> int:
        return self.word_to_id[PAD]

    def word_id(self, word: str) -> int | None:
        word = self.aliases.get(word, word)
        return self.word_to_id.get(word) if word not in (PAD, BOS, UNK) else None

    def tokenize(self, prompt: str) -> tuple[list[int], list[str], list[str]]:
        """Ids and token strings (``<bos>`` first) and the words the vocabulary lacks.

        Words beyond ``max_length - 1`` raise an :class:`EngineError`.
        """
        words = _WORD.findall(prompt.lower())
        if len(words) > self.max_length - 1:
            raise EngineError(f"prompt has {len(words)} words; the embedded model reads at most "
                              f"{self.max_length - 1}: shorten it")
        ids, strings, unknown = [self.word_to_id[BOS]], [BOS], []
        for word in words:
            wid = self.word_id(word)
            if wid is None:
                unknown.append(word)
                wid = self.word_to_id[UNK]
            ids.append(wid)
            strings.append(word)
        return ids, strings, unknown

    def batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids ``(B, L)`` and a keep-mask ``(B, L)`` (1 = real token), L = longest prompt."""
        seqs = [self.tokenize(p)[0] for p in prompts]
        return self.pad(seqs)

    def pad(self, seqs: list[list[int]], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(s) for s in seqs) if length is None else length
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask

    def save(self, path: str | Path) -> None:
        data = {"words": self.id_to_word, "aliases": self.aliases, "max_length": self.max_length}
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Read a vocabulary written by :meth:`save` (entries type-checked)."""
        from engine.loaders import Checker, read_json

        check = Checker(f"vocabulary {path}", "re-create the model folder")
        data = check.table(read_json(path, check), "vocabulary")
        words = check.texts(check.key(data, "words"), "word list", 1_000_000)
        aliases = check.table(check.key(data, "aliases"), "alias table")
        if not all(isinstance(v, str) for v in aliases.values()):
            raise check.fail("has aliases that are not text")
        tok = cls(words, aliases, check.whole(check.key(data, "max_length"), "max_length", 1, 100_000))
        if tok.id_to_word != words:
            raise EngineError(f"vocabulary {path} must start with {PAD}, {BOS}, {UNK}: re-create the model folder")
        return tok


@dataclass
class TextEncoderConfig:
    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ff_dim: int = 128
    max_length: int = 16
    use_position: bool = True


class TinyTextEncoder(nn.Module):
    """Token (+ position) embedding, pre-norm transformer layers, final LayerNorm: ``(B, L, d)``.

    With ``n_layers = 0`` and ``use_position = False`` the encoder is *non-contextual*: a word's
    embedding is the same in every prompt and at every position, so whatever the UNet takes from a
    token's key/value comes from that word alone (no word's meaning leaks into ``<bos>`` or the
    connectors), which is what per-token attention maps assume.
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.token.weight, std=0.02)
        self.position = nn.Embedding(config.max_length, config.d_model) if config.use_position else None
        if self.position is not None:
            nn.init.normal_(self.position.weight, std=0.02)
        self.layers = None
        if config.n_layers > 0:
            layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.ff_dim, dropout=0.0,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.layers = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)

    @property
    def contextual(self) -> bool:
        return self.layers is not None

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.token(ids)
        if self.position is not None:
            h = h + self.position(torch.arange(ids.shape[1], device=ids.device))[None]
        if self.layers is not None:
            h = self.layers(h, src_key_padding_mask=mask == 0)
        return self.norm(h)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"))

    @classmethod
    def load(cls, folder: str | Path) -> TinyTextEncoder:
        """Read a text encoder written by :meth:`save`: config entries, tensor names, shapes and
        sizes are checked before use."""
        from engine.loaders import Checker, read_json, read_safetensors

        folder = Path(folder)
        check = Checker(f"text encoder {folder}", "re-create the model folder")
        data = check.table(read_json(folder / "config.json", check), "config")
        names = {f.name for f in fields(TextEncoderConfig)}
        if "vocab_size" not in data or not set(data) <= names:
            raise check.fail(f"has a config with entries {sorted(data)[:8]} (expected {sorted(names)})")
        for name in names - {"use_position"}:
            if name in data:
                check.whole(data[name], name, 0 if name == "n_layers" else 1, 1_000_000)
        config = TextEncoderConfig(**data)
        if "use_position" in data:
            check.flag(data["use_position"], "use_position")
        if config.d_model % config.n_heads:
            raise check.fail(f"has d_model {config.d_model} not divisible by n_heads {config.n_heads}")
        state, _ = read_safetensors(folder / "model.safetensors", check, framework="pt")
        expected = {"token.weight": (config.vocab_size, config.d_model)}
        for name, shape in expected.items():
            if name not in state or tuple(state[name].shape) != shape:
                raise check.fail(f"has no {name} of shape {shape}")
        model = cls(config)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # missing / unexpected keys, shape mismatches
            raise check.fail(f"has weights that do not fit its config ({exc})") from None
        return model.eval()
