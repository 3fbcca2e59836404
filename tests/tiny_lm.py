"""A tiny random causal LM and a character-level tokenizer with a chat template, built
locally (no Hub): for the train tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_model_and_tokenizer(seed: int = 0) -> tuple[Any, Any]:
    """A 1-layer Llama (hidden 16) and a character tokenizer whose template marks turns."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    special = ["<pad>", "<s>", "</s>", "<unk>", "<|end|>"]
    vocab = {t: i for i, t in enumerate(special + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="<|end|>",
        unk_token="<unk>",
    )  # fmt: skip
    hf_tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}]"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|end|>"
        "{% endgeneration %}{% else %}{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=1, eos_token_id=vocab["<|end|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg), hf_tok


def save_tiny_model(path: Path) -> Path:
    model, tok = tiny_model_and_tokenizer()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
