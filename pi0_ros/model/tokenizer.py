"""Prompt tokenizer for π0 / π0.5: a SentencePiece model with openpi's PaliGemma prompt format.

Format (openpi `PaligemmaTokenizer.tokenize`):
    clean   = prompt.strip().replace("_", " ").replace("\\n", " ")
    π0 (no state):  tokens = [BOS] + sp.encode(clean) + sp.encode("\\n")   # "\\n" starts the answer
    π0.5 (state):   bins   = digitize(state, linspace(-1, 1, 257)[:-1]) - 1  # 256 bins of [-1, 1)
                    tokens = [BOS] + sp.encode(f"Task: {clean}, State: {' '.join(bins)};\\nAction: ")
    padded to max_len with 0 (mask False); longer prompts are truncated with a warning.

The π0.5 state is the NORMALISED state (quantiles map q01..q99 to -1..1). openpi does not clip:
a value below -1 becomes bin "-1" and one at or above 1 - 2/256 bin 255; we do the same, so a
real checkpoint sees the text it was trained on.

The real checkpoints use the PaliGemma SentencePiece model (vocabulary 257152, pad 0, eos 1,
bos 2, unk 3). `train_tiny_tokenizer` builds a small model with the same special ids from a
built-in corpus of robot-task phrases, for tests and the CPU demo with the tiny preset.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import sentencepiece as spm

logger = logging.getLogger(__name__)

DEFAULT_MAX_LEN = 48  # openpi Pi0Config.max_token_len (π0; π0.5 uses 200)
TOKENIZER_FILENAME = "tokenizer.model"
STATE_BINS = 256  # π0.5's state discretisation (openpi)


def discretize_state(state: np.ndarray) -> np.ndarray:
    """π0.5: normalised state (D,) -> bin indices (D,) int64, openpi's np.digitize convention."""
    state = np.asarray(state, dtype=np.float64)
    if state.ndim != 1:
        raise ValueError(f"state must be 1-D, got shape {state.shape}")
    if not np.isfinite(state).all():
        raise ValueError("state has non-finite values")
    edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return (np.digitize(state, bins=edges) - 1).astype(np.int64)


def pi05_prompt(prompt: str, state: np.ndarray) -> str:
    """The π0.5 prompt text: ``Task: <clean prompt>, State: <bins>;\\nAction: `` (openpi)."""
    bins = " ".join(str(int(b)) for b in discretize_state(state))
    return f"Task: {PromptTokenizer.clean(prompt)}, State: {bins};\nAction: "


class PromptTokenizer:
    """Encode task prompts into fixed-length token ids + mask for the π0 prefix.

    Args:
        model_path: a SentencePiece `.model` file (e.g. the PaliGemma tokenizer).
        max_len: fixed output length (the model's `max_token_len`).
        model_proto: the serialized model instead of a path.

    Thread-safe: `encode` does not mutate the object.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        max_len: int = DEFAULT_MAX_LEN,
        *,
        model_proto: bytes | None = None,
    ) -> None:
        if (model_path is None) == (model_proto is None):
            raise ValueError("give exactly one of model_path or model_proto")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (BOS + newline), got {max_len}")
        if model_path is not None:
            path = Path(model_path)
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer model not found: {path}")
            model_proto = path.read_bytes()
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with terse text
            where = model_path if model_path is not None else "model_proto"
            raise ValueError(f"not a SentencePiece model: {where} ({e})") from e
        self._proto = bytes(model_proto)
        self.max_len = int(max_len)
        self.bos_id = int(self._sp.bos_id())
        if self.bos_id < 0:
            raise ValueError("tokenizer model has no BOS token")
        self.pad_id = 0  # openpi pads with 0 (False) whatever the model's pad id
        self.newline_ids: tuple[int, ...] = tuple(self._sp.encode("\n"))
        if not self.newline_ids:
            raise ValueError('tokenizer model cannot encode "\\n" (the start-of-answer token)')

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model (what `save` writes)."""
        return self._proto

    def save(self, path: str | os.PathLike) -> None:
        """Write the SentencePiece model to `path` (conventionally `tokenizer.model`)."""
        Path(path).write_bytes(self._proto)

    @staticmethod
    def clean(prompt: str) -> str:
        """openpi's prompt cleaning: strip, "_" -> " ", newline -> " "."""
        return prompt.strip().replace("_", " ").replace("\n", " ")

    def encode(self, prompt: str, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (tokens int64 (max_len,), mask bool (max_len,)) for one prompt.

        state: π0.5 only, the normalised state (D,) to write into the prompt; None = π0 format.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        if state is None:
            ids = [self.bos_id, *self._sp.encode(self.clean(prompt)), *self.newline_ids]
        else:
            ids = [self.bos_id, *self._sp.encode(pi05_prompt(prompt, state))]
        n = len(ids)
        if n > self.max_len:
            logger.warning(
                "prompt is %d tokens, longer than max_len=%d; truncating (the start-of-answer "
                "token is lost). Shorten the prompt or raise the model's max_token_len.",
                n,
                self.max_len,
            )
            ids = ids[: self.max_len]
            n = self.max_len
        tokens = np.full(self.max_len, self.pad_id, dtype=np.int64)
        tokens[:n] = ids
        mask = np.zeros(self.max_len, dtype=bool)
        mask[:n] = True
        return tokens, mask

    def decode(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> str:
        """Inverse of `encode` for inspection (drops BOS and padding)."""
        ids = [int(t) for t in (tokens[mask] if mask is not None else tokens)]
        return self._sp.decode([t for t in ids if t != self.bos_id])


# ---------------------------------------------------------------------------------------
# Tiny tokenizer for tests and the CPU demo.

_VERBS = ("pick up", "put down", "place", "move", "push", "pull", "grasp", "lift", "open",
          "close", "fold", "stack", "wipe", "pour", "insert", "hand over", "turn", "slide")
_OBJECTS = ("the red cube", "the blue block", "the green cup", "a towel", "the shirt",
            "the drawer", "the lid", "the bowl", "the plate", "the sponge", "the bottle",
            "the marker", "the box", "the door", "the spoon", "the bag", "the toy", "the peg")
_PLACES = ("on the table", "into the bin", "in the box", "to the left", "to the right",
           "onto the shelf", "next to the plate", "into the drawer", "on the tray",
           "from the counter", "into the sink", "on top of the stack")
_EXTRA = ("fold the laundry", "bus the table", "clean up the table", "make a cup of coffee",
          "load the dishwasher", "unload the dryer", "assemble a box", "pack the groceries",
          "sort the objects by colour", "do nothing", "go to the kitchen", "stop",
          "transfer the cube", "insert the peg into the socket", "open the top drawer")

TINY_SPECIAL_IDS = {"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3}  # as PaliGemma / Gemma


def tiny_corpus() -> list[str]:
    """The deterministic built-in corpus of robot-task phrases."""
    lines = [f"{v} {o} {p}" for v in _VERBS for o in _OBJECTS for p in _PLACES]
    lines += [f"{v} {o}" for v in _VERBS for o in _OBJECTS]
    lines += list(_EXTRA)
    return lines


def train_tiny_tokenizer(path: str | os.PathLike | None = None, vocab_size: int = 512) -> bytes:
    """Train a small SentencePiece model on the built-in corpus; deterministic, ~1 s.

    Same special ids as PaliGemma (pad 0, eos 1, bos 2, unk 3), byte fallback for unseen
    characters and "\\n" as its own piece. Returns the serialized model and, if `path` is
    given, also writes it there. `vocab_size` is an upper bound (the corpus may support fewer
    pieces); it must stay below the tiny preset's vocabulary.
    """
    if vocab_size < 300:
        raise ValueError("vocab_size must be >= 300 (256 byte-fallback pieces + specials + words)")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=True,
        user_defined_symbols=["\n"],
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
        **TINY_SPECIAL_IDS,
    )
    proto = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(proto)
    return proto


def tiny_tokenizer(max_len: int = DEFAULT_MAX_LEN, vocab_size: int = 512) -> PromptTokenizer:
    """A `PromptTokenizer` around the in-memory tiny model."""
    return PromptTokenizer(model_proto=train_tiny_tokenizer(vocab_size=vocab_size), max_len=max_len)
