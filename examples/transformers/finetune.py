#!/usr/bin/env python3
"""Fine-tune transformers models with this package's objectives (docs/transformers.md).

Three runs on a small synthetic corpus, with models built from configs (nothing is
downloaded; a word-level tokenizer is trained on the corpus):

1. a GPT-2-style causal LM with TaiLr (Ji et al., ICLR 2023), through transformers' own
   ``Trainer`` and ``compute_loss_func``;
2. a T5-style encoder-decoder (reverse the words of a sentence) with TaiLr, through
   ``DivgenTrainer`` with the fused output path (the (tokens, vocabulary) logits never
   exist at once in training);
3. LFD (Hong et al., arXiv 2309.12619) on the causal LM: stage 1 trains the degenerative
   model with ``TruncatedCELoss`` and saves it; stage 2 trains a new model with
   ``LfdPoeLoss`` against the frozen stage-1 model.

    python examples/transformers/finetune.py --out /tmp/divgen-hf     # under a minute on a CPU
    python examples/transformers/finetune.py --tiny --out /tmp/divgen-hf  # seconds (the test)
"""

import argparse
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
    Trainer,
    TrainingArguments,
)

from fairseq_divgen.hf import DivgenTrainer, LfdPoeLoss, TailrLoss, TruncatedCELoss

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "finds", "follows", "draws", "remembers"]
OBJECTS = ["the river", "a red house", "the green hill", "an open door", "the quiet town"]
ENDINGS = ["today", "at night", "in the morning", "again", "every day"]


def corpus(n: int, seed: int = 0) -> list:
    """``n`` short synthetic sentences (a stand-in for your own text)."""
    rng = random.Random(seed)
    return [
        " ".join(
            [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(ENDINGS)]
        )
        for _ in range(n)
    ]


def word_tokenizer(texts) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on ``texts`` (no download)."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )


def lm_examples(tokenizer, texts) -> list:
    """Causal LM examples: the sentence and EOS (the collator makes the labels)."""
    return [{"input_ids": tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]} for t in texts]


def seq2seq_examples(tokenizer, texts) -> list:
    """Encoder-decoder examples: a sentence, and its words reversed as the target."""
    eos = [tokenizer.eos_token_id]
    return [
        {
            "input_ids": tokenizer(t)["input_ids"] + eos,
            "labels": tokenizer(" ".join(t.split()[::-1]))["input_ids"] + eos,
        }
        for t in texts
    ]


def causal_lm(tokenizer, width: int) -> GPT2LMHeadModel:
    """A small GPT-2 from a config (random weights)."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=width,
        n_layer=2,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def seq2seq_model(tokenizer, width: int) -> T5ForConditionalGeneration:
    """A small T5 from a config (random weights)."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=width // 4,
        d_ff=2 * width,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5ForConditionalGeneration(config)


def training_args(out: Path, steps: int) -> TrainingArguments:
    """CPU, no reporting, no checkpoints during training (``save_model`` saves at the end)."""
    return TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )


def first_loss_and_last(trainer) -> str:
    """The first and last logged training losses."""
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def sample(model, tokenizer, prompt: str) -> str:
    """A greedy continuation of ``prompt``."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(
        ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer.decode(out[0], skip_special_tokens=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("divgen-hf-example"))
    p.add_argument("--steps", type=int, default=150, help="updates per run")
    p.add_argument("--tiny", action="store_true", help="a few updates of tiny models (a test)")
    args = p.parse_args(argv)
    steps, width, n = (12, 32, 200) if args.tiny else (args.steps, 64, 2000)
    torch.manual_seed(0)
    texts = corpus(n)
    tokenizer = word_tokenizer(texts)

    # 1. Causal LM + TaiLr with transformers' Trainer: the loss is the compute_loss_func,
    # and also a callback (it reads the update count for density_ratio_warmup_updates).
    lm_data = lm_examples(tokenizer, texts)
    lm_collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    tailr = TailrLoss(
        density_ratio_threshold=0.1,
        density_min_weight=0.3,
        label_smoothing=0.1,
        density_ratio_warmup_updates=steps // 3,
    )
    trainer = Trainer(
        model=causal_lm(tokenizer, width),
        args=training_args(args.out / "lm", steps),
        train_dataset=lm_data,
        data_collator=lm_collator,
        compute_loss_func=tailr,
        callbacks=[tailr],
    )
    trainer.train()
    print(
        f"causal LM, TaiLr: {first_loss_and_last(trainer)}; "
        f"'{sample(trainer.model, tokenizer, 'the cat')}'"
    )

    # 2. Encoder-decoder + TaiLr with DivgenTrainer and the fused output path.
    model = seq2seq_model(tokenizer, width)
    trainer = DivgenTrainer(
        model=model,
        args=training_args(args.out / "seq2seq", steps),
        loss=TailrLoss(density_ratio_threshold=0.1, density_min_weight=0.3),
        fused_output=True,
        train_dataset=seq2seq_examples(tokenizer, texts),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )
    trainer.train()
    print(
        f"seq2seq, TaiLr (fused): {first_loss_and_last(trainer)}; "
        f"'{sample(trainer.model, tokenizer, texts[0])}' for '{texts[0]}'"
    )

    # 3. LFD. Stage 1: the degenerative model learns only from the easiest half of the
    # tokens of each batch; saved like any model.
    stage1 = DivgenTrainer(
        model=causal_lm(tokenizer, width),
        args=training_args(args.out / "lfd-stage1", steps),
        loss=TruncatedCELoss(truncation_ratio=0.5, truncation_warmup_updates=steps // 3),
        train_dataset=lm_data,
        data_collator=lm_collator,
    )
    stage1.train()
    stage1.save_model(str(args.out / "degenerative"))
    print(f"LFD stage 1 (truncated_ce): {first_loss_and_last(stage1)}")

    # Stage 2: a new model trained as a product of experts with the frozen stage-1 model
    # (loaded once, on the trainer's device, never in the checkpoints); EOS is
    # model.config.eos_token_id. Only the new model is saved and generates.
    stage2 = DivgenTrainer(
        model=causal_lm(tokenizer, width),
        args=training_args(args.out / "lfd-stage2", steps),
        loss=LfdPoeLoss(degenerative_scale=1.0, mle_weight=3.0),
        degenerative_model=str(args.out / "degenerative"),
        train_dataset=lm_data,
        data_collator=lm_collator,
    )
    stage2.train()
    stage2.save_model(str(args.out / "lfd"))
    print(
        f"LFD stage 2 (lfd_poe): {first_loss_and_last(stage2)}; "
        f"'{sample(stage2.model, tokenizer, 'the cat')}'"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
