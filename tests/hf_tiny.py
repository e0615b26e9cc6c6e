"""Tiny transformers models built from configs and synthetic data for the tests of
``fairseq_divgen.hf`` (nothing is downloaded): a GPT-2-style causal LM, a T5 and a BART,
and a Llama, two layers, width 32, a vocabulary of 64, no dropout (runs that should agree draw no
random numbers)."""

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    TrainingArguments,
)

VOCAB = 64
PAD, BOS, EOS = 0, 1, 2
LENGTH = 12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread for a module's tiny models (the machine's cores are shared), then
    the count it had: the rest of the suite keeps its own."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gpt2(seed=0, vocab=VOCAB, tied=True, dtype=None):
    """A 2-layer GPT-2 of width 32."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=tied,
    )
    model = GPT2LMHeadModel(config)
    return model if dtype is None else model.to(dtype)


def llama(seed=0, vocab=VOCAB):
    """A 2-layer Llama of width 32, its head untied."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def t5(seed=0, vocab=VOCAB):
    """A 2 + 2-layer T5 of width 32 (its features are scaled before the lm_head)."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        dropout_rate=0.0,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    return T5ForConditionalGeneration(config)


def bart(seed=0, vocab=VOCAB):
    """A 1 + 1-layer BART of width 32 (its logits get final_logits_bias after the head)."""
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=vocab,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
    )
    return BartForConditionalGeneration(config)


def lm_data(n=64, seed=0, vocab=VOCAB):
    """Causal LM examples: a repeated 3-token motif (learnable in a few steps), EOS, and
    labels -100 on a random suffix (padding) and sometimes on a prefix (a prompt)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        motif = torch.randint(3, vocab // 2, (3,), generator=g)
        ids = torch.cat([motif.repeat(LENGTH)[: LENGTH - 1], torch.tensor([EOS])])
        labels = ids.clone()
        labels[int(torch.randint(7, LENGTH + 1, (1,), generator=g)) :] = -100
        if torch.rand((), generator=g) < 0.3:
            labels[:2] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


def seq2seq_data(n=64, seed=0, vocab=VOCAB, model=None):
    """Encoder-decoder examples: the target is the source's first 8 tokens reversed and
    EOS, with -100 on a random suffix; with ``model``, also its ``decoder_input_ids`` (as
    ``DataCollatorForSeq2Seq(tokenizer, model=model)`` makes them)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        src = torch.randint(3, vocab // 2, (LENGTH,), generator=g)
        labels = torch.cat([src[:8].flip(0), torch.tensor([EOS])])
        labels[int(torch.randint(5, 10, (1,), generator=g)) :] = -100
        example = {
            "input_ids": src,
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": labels,
        }
        if model is not None:
            example["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(
                labels=labels[None]
            )[0]
        out.append(example)
    return out


def args(out, **overrides) -> TrainingArguments:
    """CPU, no reporting, no checkpoints, 8 sequences per batch, Adam at 1e-2."""
    base = dict(
        output_dir=str(out),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        dataloader_num_workers=0,
        per_device_train_batch_size=8,
        max_steps=8,
        logging_steps=2,
        learning_rate=1e-2,
        disable_tqdm=True,
        seed=0,
    )
    base.update(overrides)
    return TrainingArguments(**base)


def logged_losses(trainer):
    """The training losses the trainer logged, in order."""
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def collate(examples):
    """Stack a list of examples into a batch."""
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
