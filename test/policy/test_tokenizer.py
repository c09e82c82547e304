"""Tests for pi0_ros.model.tokenizer (openpi PaliGemma prompt format, tiny tokenizer)."""

import logging

import numpy as np
import pytest

from pi0_ros.model.tokenizer import PromptTokenizer, tiny_tokenizer, train_tiny_tokenizer


@pytest.fixture(scope="module")
def proto():
    return train_tiny_tokenizer()


@pytest.fixture(scope="module")
def tok(proto):
    return PromptTokenizer(model_proto=proto, max_len=16)


def test_tiny_tokenizer_is_deterministic_and_small(proto, tmp_path):
    assert train_tiny_tokenizer() == proto
    path = tmp_path / "tokenizer.model"
    assert train_tiny_tokenizer(path) == proto and path.read_bytes() == proto
    t = PromptTokenizer(path)
    assert t.vocab_size <= 512 < 1024  # below the tiny preset's vocabulary
    assert t.bos_id == 2


def test_format_bos_text_newline_padding(tok):
    tokens, mask = tok.encode("pick up the red cube")
    assert tokens.dtype == np.int64 and mask.dtype == bool
    assert tokens.shape == mask.shape == (16,)
    n = int(mask.sum())
    assert mask[:n].all() and not mask[n:].any()  # contiguous valid prefix
    assert tokens[0] == tok.bos_id
    assert tuple(tokens[n - len(tok.newline_ids) : n]) == tok.newline_ids  # start-of-answer "\n"
    assert (tokens[n:] == 0).all()
    body = tok._sp.encode("pick up the red cube")
    assert tokens[1 : n - len(tok.newline_ids)].tolist() == body
    assert tok.decode(tokens, mask) == "pick up the red cube\n"


def test_newline_is_a_single_piece(tok):
    assert len(tok.newline_ids) == 1
    assert tok._sp.id_to_piece(tok.newline_ids[0]) == "\n"


def test_cleaning_matches_openpi(tok):
    a, ma = tok.encode("  pick_up the\nred cube \n")
    b, mb = tok.encode("pick up the red cube")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)


def test_truncation_warns_and_fills_mask(tok, caplog):
    long_prompt = " ".join(["pick up the red cube"] * 10)
    with caplog.at_level(logging.WARNING, logger="pi0_ros.model.tokenizer"):
        tokens, mask = tok.encode(long_prompt)
    assert "truncating" in caplog.text
    assert mask.all() and tokens.shape == (16,)
    assert tokens[0] == tok.bos_id


def test_exact_fit_does_not_warn(proto, caplog):
    t = PromptTokenizer(model_proto=proto, max_len=48)
    n = int(t.encode("fold the laundry")[1].sum())
    exact = PromptTokenizer(model_proto=proto, max_len=n)
    with caplog.at_level(logging.WARNING):
        tokens, mask = exact.encode("fold the laundry")
    assert mask.all() and "truncating" not in caplog.text


def test_unseen_characters_use_byte_fallback(tok):
    tokens, mask = tok.encode("Grüß ☃")
    assert (tokens[mask] != 3).all()  # never <unk>
    assert tok.decode(tokens, mask) == "Grüß ☃\n"


def test_errors(tmp_path, proto):
    with pytest.raises(FileNotFoundError):
        PromptTokenizer(tmp_path / "missing.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="SentencePiece"):
        PromptTokenizer(bad)
    with pytest.raises(ValueError, match="exactly one"):
        PromptTokenizer()
    with pytest.raises(TypeError):
        PromptTokenizer(model_proto=proto).encode(None)


def test_tiny_tokenizer_helper():
    t = tiny_tokenizer(max_len=48)
    assert t.max_len == 48 and t.encode("stop")[0].shape == (48,)
