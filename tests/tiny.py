"""Tiny corpora and model settings for the tests that run real fairseq tools."""

import json
import random
from pathlib import Path

from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

WORDS = [f"w{i}" for i in range(24)]

TINY_TRANSFORMER = [
    "--arch",
    "transformer",
    "--encoder-layers",
    "1",
    "--decoder-layers",
    "1",
    "--encoder-embed-dim",
    "32",
    "--decoder-embed-dim",
    "32",
    "--encoder-ffn-embed-dim",
    "64",
    "--decoder-ffn-embed-dim",
    "64",
    "--encoder-attention-heads",
    "2",
    "--decoder-attention-heads",
    "2",
    "--share-all-embeddings",
]

TINY_LM = [
    "--arch",
    "transformer_lm",
    "--decoder-layers",
    "1",
    "--decoder-embed-dim",
    "32",
    "--decoder-input-dim",
    "32",
    "--decoder-output-dim",
    "32",
    "--decoder-ffn-embed-dim",
    "64",
    "--decoder-attention-heads",
    "2",
    "--tokens-per-sample",
    "32",
    "--sample-break-mode",
    "eos",
]

# fairseq-eval-lm on a TINY_LM checkpoint's test split (after --path)
EVAL_LM = [
    "--task",
    "language_modeling",
    "--user-dir",
    USER_DIR,
    "--cpu",
    "--gen-subset",
    "test",
    *"--tokens-per-sample 32 --sample-break-mode eos --batch-size 8".split(),
    *"--required-batch-size-multiple 1".split(),
]


def common_train_args(save_dir, max_update=20, seed=1):
    """Optimizer, batch and logging flags shared by every tiny training run."""
    return [
        "--user-dir",
        USER_DIR,
        "--cpu",
        "--seed",
        str(seed),
        "--optimizer",
        "adam",
        "--lr",
        "0.005",
        "--max-tokens",
        "400",
        "--max-update",
        str(max_update),
        "--save-dir",
        str(save_dir),
        "--no-epoch-checkpoints",
        "--log-format",
        "json",
        "--log-interval",
        "1",
        "--no-progress-bar",
        "--num-workers",
        "0",
        # fairseq's prefetch thread can still be reading when the process exits and
        # abort it (SIGABRT after training finished); without the buffer there is none
        "--data-buffer-size",
        "0",
    ]


def _translate(words):
    """The tiny 'language pair': reverse the sentence and rename each word."""
    return ["v" + w[1:] for w in reversed(words)]


def write_translation_corpus(raw_dir: Path, seed=0, sizes=(300, 30, 30)):
    """Write train/valid/test .src/.tgt files of a deterministic toy translation task."""
    rng = random.Random(seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), sizes):
        src, tgt = [], []
        for _ in range(n):
            words = [
                rng.choice(WORDS[: rng.randint(6, len(WORDS))]) for _ in range(rng.randint(3, 9))
            ]
            src.append(" ".join(words))
            tgt.append(" ".join(_translate(words)))
        (raw_dir / f"{split}.src").write_text("\n".join(src) + "\n")
        (raw_dir / f"{split}.tgt").write_text("\n".join(tgt) + "\n")


def write_lm_corpus(raw_dir: Path, seed=0, sizes=(300, 30, 30)):
    """Write train/valid/test .txt files from a small first-order Markov chain."""
    rng = random.Random(seed)
    nxt = {w: rng.sample(WORDS, 4) for w in WORDS}
    raw_dir.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), sizes):
        lines = []
        for _ in range(n):
            w = rng.choice(WORDS)
            sent = [w]
            for _ in range(rng.randint(3, 12)):
                w = rng.choice(nxt[w])
                sent.append(w)
            lines.append(" ".join(sent))
        (raw_dir / f"{split}.txt").write_text("\n".join(lines) + "\n")


def binarize_translation(raw_dir: Path, bin_dir: Path):
    """fairseq-preprocess the toy translation corpus (joined dictionary)."""
    run_fairseq(
        "preprocess",
        [
            "--source-lang",
            "src",
            "--target-lang",
            "tgt",
            "--trainpref",
            raw_dir / "train",
            "--validpref",
            raw_dir / "valid",
            "--testpref",
            raw_dir / "test",
            "--destdir",
            bin_dir,
            "--joined-dictionary",
            "--workers",
            "1",
        ],
    )


def binarize_lm(raw_dir: Path, bin_dir: Path):
    """fairseq-preprocess the toy LM corpus (--only-source)."""
    run_fairseq(
        "preprocess",
        [
            "--only-source",
            "--trainpref",
            raw_dir / "train.txt",
            "--validpref",
            raw_dir / "valid.txt",
            "--testpref",
            raw_dir / "test.txt",
            "--destdir",
            bin_dir,
            "--workers",
            "1",
        ],
    )


def train_degenerative(data: Path, save_dir: Path, max_update: int = 6):
    """Stage 1 of LFD on the toy translation data: truncated_ce, the tiny transformer."""
    run_fairseq(
        "train",
        [
            data,
            "--task",
            "translation",
            *TINY_TRANSFORMER,
            *common_train_args(save_dir, max_update),
            "--criterion",
            "truncated_ce",
            "--truncation-ratio",
            "0.5",
        ],
        env={"OMP_NUM_THREADS": "1"},
    )


def json_logs(output: str, kind: str):
    """The JSON records fairseq logged with ``--log-format json`` for one ``kind``
    (``train_inner``, ``train``, ``valid``)."""
    records = []
    for line in output.splitlines():
        if f"| INFO | {kind} |" in line or f"| INFO | {kind} | " in line:
            payload = line.split(f"| {kind} | ", 1)[1]
            records.append(json.loads(payload))
    return records


def hypotheses(output: str):
    """The H- lines of fairseq-generate output as ``(id, score, text)``."""
    out = []
    for line in output.splitlines():
        if line.startswith("H-"):
            tag, score, text = (line.split("\t") + [""])[:3]
            out.append((int(tag[2:]), float(score), text))
    return out


def build_criterion(argv):
    """fairseq-train's command-line parsing, then the task and its criterion, built in
    this process as fairseq-train builds them before it loads any data (the plugin's
    checks of its flags and of the degenerative checkpoint run here)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in argv])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return task.build_criterion(cfg.criterion)


def build_trainer(argv, edit_model=None):
    """Task, model, criterion and ``fairseq.trainer.Trainer`` built in this process
    from a fairseq-train command line, as fairseq-train builds them (``edit_model``,
    if given, may change the model before the trainer takes it)."""
    import numpy as np
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.logging import metrics
    from fairseq.trainer import Trainer

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    metrics.reset()
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    if edit_model is not None:
        edit_model(model)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion), task
