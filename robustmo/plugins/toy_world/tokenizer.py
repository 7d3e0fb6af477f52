"""A small byte-level BPE tokenizer trained locally, wrapped as a standard HF tokenizer.

Digits are split individually (arithmetic is learnable digit by digit) and byte-level
pre-tokenisation means any ASCII/UTF-8 text round-trips exactly, with no unknown token.
The chat template is deliberately minimal so sequences stay short:
``<|system|>S<|end|><|user|>U<|end|><|assistant|>A<|end|>``; ``<|end|>`` is the EOS.
"""

from __future__ import annotations

SYSTEM, USER, ASSISTANT, END, PAD = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
SPECIAL_TOKENS = [PAD, END, SYSTEM, USER, ASSISTANT]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int = 768):
    """Train the BPE on ``texts`` and return a ``PreTrainedTokenizerFast`` with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte -> no UNK, exact round trip
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=END, pad_token=PAD,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT], clean_up_tokenization_spaces=False, padding_side="left",
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf
