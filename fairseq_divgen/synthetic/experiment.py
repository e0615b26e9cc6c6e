"""Stages of the synthetic-oracle experiment; each writes its outputs under one work folder.

oracle -> data (sample, fairseq-preprocess) -> train mle / tailr / degenerative / lfd
(fairseq-train) -> sample from every model -> score (fairseq-eval-lm with the oracle
and with each model, divgen's metrics) -> report (markdown, JSON, PNG).

A stage that finished left a marker in ``stages/``; a rerun skips it. fairseq-train
resumes an interrupted training from its ``checkpoint_last.pt`` by itself.
"""

import json
import os
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List

from ..fairseq_commands import USER_DIR, run_fairseq
from ..scoring.metrics import distinct_n, reference_set_bleu, self_bleu, seq_rep_n
from . import lm, oracle
from .sizes import Methods, Size

ROWS = ("oracle", "mle", "tailr", "lfd", "degenerative")


@dataclass
class Variant:
    """One trained model: its method, the method settings, and (LFD) its degenerative model."""

    # mle | tailr | degenerative | lfd | unlikelihood | loss_truncation | mixce | error_norm_truncation
    kind: str
    methods: Methods
    degenerative: str = "degenerative"


def main_variants(methods: Methods) -> Dict[str, Variant]:
    """The four models of the main table, named after their method."""
    return {k: Variant(k, methods) for k in ("mle", "tailr", "degenerative", "lfd")}


class Experiment:
    """One run of the experiment in ``work`` (a folder it owns)."""

    def __init__(
        self,
        work: Path,
        size: Size,
        methods: Methods,
        cuda: bool = False,
        log: Callable[[str], None] = print,
    ):
        self.work = work
        self.cuda = cuda
        self.device = "cuda" if cuda else "cpu"
        self.cpu_flag = [] if cuda else ["--cpu"]
        self.size = size
        self.methods = methods
        self.log = log
        self.stages = work / "stages"
        self.variants = main_variants(methods)
        # Tiny models: one intra-op thread per fairseq process is faster on a CPU (and
        # much faster on shared cores); OMP_NUM_THREADS set by the user wins.
        self.env = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": "1"}

    # -- bookkeeping -------------------------------------------------------------
    def settings(self) -> dict:
        """What defines this run's results (stored, and compared on a rerun)."""
        return {"size": asdict(self.size), "methods": asdict(self.methods)}

    def claim_workdir(self) -> None:
        """Create the folder, or check that it holds a run with the same settings."""
        path = self.work / "settings.json"
        mine = json.loads(json.dumps(self.settings()))
        if path.exists():
            theirs = json.loads(path.read_text())
            if theirs != mine:
                raise SystemExit(
                    f"error: {self.work} holds a run with other settings ({path}); "
                    "pass another --workdir (nothing was changed there)"
                )
        elif self.work.exists() and any(self.work.iterdir()):
            raise SystemExit(
                f"error: --workdir {self.work} exists and is not a divgen-demo folder "
                "(no settings.json); pass a new or empty folder (nothing was changed there)"
            )
        self.stages.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mine, indent=1))

    def stage(self, name: str, index: int, total: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` unless the stage already finished."""
        marker = self.stages / f"{name}.done"
        if marker.exists():
            self.log(f"== [{index}/{total}] {name}: done earlier, skipped")
            return
        self.log(f"== [{index}/{total}] {name}")
        fn()
        marker.touch()

    # -- stages -------------------------------------------------------------------
    def build_oracle(self) -> None:
        """The oracle checkpoint and its statistics."""
        stats = oracle.build_oracle(self.work / "oracle", self.size.oracle)
        (self.work / "oracle" / "stats.json").write_text(json.dumps(stats, indent=1))
        self.log(
            f"   oracle: V={self.size.oracle.vocab}, entropy {stats['entropy']:.2f} nats/token, "
            f"mean length {stats['sample_mean_length']:.1f}"
        )

    def make_data(self) -> None:
        """train / valid / test samples of the oracle, binarized with its dictionary."""
        model, dictionary = lm.load_model(self.checkpoint("oracle"), self.device)
        raw = self.work / "raw"
        raw.mkdir(exist_ok=True)
        s = self.size
        for i, (split, n) in enumerate(
            (("train", s.n_train), ("valid", s.n_valid), ("test", s.n_test))
        ):
            samples = lm.sample(model, dictionary, n, s.oracle.max_len, seed=s.seed * 1000 + i)
            (raw / f"{split}.txt").write_text("\n".join(lm.to_text(dictionary, samples)) + "\n")
        run_fairseq(
            "preprocess",
            [
                "--only-source",
                "--srcdict",
                self.work / "oracle" / "dict.txt",
                "--trainpref",
                raw / "train.txt",
                "--validpref",
                raw / "valid.txt",
                "--testpref",
                raw / "test.txt",
                "--destdir",
                self.work / "bin",
                "--workers",
                1,
            ],
            env=self.env,
            log_path=self.work / "preprocess.log",
        )

    def train_args(self, name: str) -> List:
        """fairseq-train command line of one method."""
        s = self.size
        v = self.variants[name]
        flags = v.methods.criterion_flags()[v.kind]
        base = lm.lstm_lm_args(s.embed_dim, s.hidden, s.oracle.max_len + 2, s.dropout)
        if "--task" in flags:  # the LFD task replaces language_modeling
            i = base.index("--task")
            base = base[:i] + base[i + 2 :]
        extra = []
        if v.kind == "lfd":
            extra = ["--degenerative-checkpoint", self.checkpoint(v.degenerative)]
        if v.kind == "degenerative":
            extra = ["--truncation-warmup-updates", s.warmup_updates]
        max_update = s.degenerative_max_update if v.kind == "degenerative" else s.max_update
        return [
            self.work / "bin",
            "--user-dir",
            USER_DIR,
            *base,
            *flags,
            *extra,
            *v.methods.extra.get(v.kind, []),
            "--optimizer",
            "adam",
            "--adam-betas",
            "(0.9, 0.98)",
            "--lr",
            s.lr,
            "--lr-scheduler",
            "inverse_sqrt",
            "--warmup-updates",
            s.warmup_updates,
            "--max-tokens",
            s.max_tokens,
            "--max-update",
            max_update,
            "--seed",
            s.seed,
            "--required-batch-size-multiple",
            1,
            "--save-dir",
            self.work / name,
            "--no-epoch-checkpoints",
            *self.cpu_flag,
            "--log-format",
            "simple",
            "--log-interval",
            max(1, max_update // 10),
        ]

    def train(self, name: str) -> None:
        """Train one method with fairseq-train (its progress is shown as it runs)."""
        run_fairseq(
            "train",
            self.train_args(name),
            log_path=self.work / f"train-{name}.log",
            echo=True,
            env=self.env,
        )

    def checkpoint(self, name: str) -> Path:
        """The checkpoint whose samples are scored (equal budgets: the last one)."""
        if name == "oracle":
            return self.work / "oracle" / "oracle.pt"
        return self.work / name / "checkpoint_last.pt"

    def draw_samples(self, name: str, index: int) -> None:
        """``n_samples`` ancestral samples of one model (for the oracle: fresh ones)."""
        out = self.work / "samples"
        out.mkdir(exist_ok=True)
        model, dictionary = lm.load_model(self.checkpoint(name), self.device)
        seed = self.size.seed * 1000 + 100 + index
        samples = lm.sample(model, dictionary, self.size.n_samples, self.size.oracle.max_len, seed)
        (out / f"{name}.txt").write_text("\n".join(lm.to_text(dictionary, samples)) + "\n")

    def eval_lm(self, data: Path, checkpoint: Path, name: str) -> Dict[str, float]:
        """fairseq-eval-lm's loss (base 2) and perplexity of ``checkpoint`` on ``data``'s test split."""
        out = run_fairseq(
            "eval-lm",
            [
                data,
                "--path",
                checkpoint,
                "--user-dir",
                USER_DIR,
                "--gen-subset",
                "test",
                "--sample-break-mode",
                "eos",
                "--tokens-per-sample",
                self.size.oracle.max_len + 2,
                "--max-tokens",
                8000,
                "--required-batch-size-multiple",
                1,
                *self.cpu_flag,
            ],
            env=self.env,
            log_path=self.work / "eval" / f"{name}.log",
        ).stdout
        m = re.search(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.e+]+)", out)
        return {"loss": float(m.group(1)), "ppl": float(m.group(2))}

    def score(self, name: str) -> None:
        """PPL_oracle, PPL_test, BLEU-4 vs oracle samples, self-BLEU-4, distinct-2, seq-rep-4."""
        (self.work / "eval").mkdir(exist_ok=True)
        samples = self.work / "samples" / f"{name}.txt"
        binarized = self.work / "bin-samples" / name
        run_fairseq(
            "preprocess",
            [
                "--only-source",
                "--srcdict",
                self.work / "oracle" / "dict.txt",
                "--testpref",
                samples,
                "--destdir",
                binarized,
                "--workers",
                1,
            ],
            env=self.env,
            log_path=self.work / "eval" / f"preprocess-{name}.log",
        )
        q = self.eval_lm(binarized, self.checkpoint("oracle"), f"oracle-on-{name}")
        t = self.eval_lm(self.work / "bin", self.checkpoint(name), f"{name}-on-test")
        hyps = samples.read_text().splitlines()
        refs = (self.work / "raw" / "test.txt").read_text().splitlines()
        toks = [h.split() for h in hyps]
        row = {
            "ppl_oracle": q["ppl"],
            "ppl_test": t["ppl"],
            "bleu4": reference_set_bleu(hyps, refs, self.size.bleu_max_hyps, tokenize="none"),
            "self_bleu4": self_bleu(hyps, self.size.self_bleu_max_hyps, tokenize="none"),
            "distinct_2": distinct_n(toks, 2),
            "seq_rep_4": seq_rep_n(toks, 4),
            "mean_len": sum(map(len, toks)) / max(1, len(toks)),
        }
        (self.work / "scores").mkdir(exist_ok=True)
        (self.work / "scores" / f"{name}.json").write_text(json.dumps(row, indent=1))

    def rows(self, names) -> Dict[str, Dict[str, float]]:
        """Scores of the given rows, as written by their score stages."""
        return {n: json.loads((self.work / "scores" / f"{n}.json").read_text()) for n in names}

    def evaluation_steps(self, name: str) -> list:
        """(stage name, function) pairs that sample from one model and score it."""
        index = zlib.crc32(name.encode()) % 100000  # a per-row sampling seed, stable across runs
        return [
            (f"sample-{name}", lambda: self.draw_samples(name, index)),
            (f"score-{name}", lambda: self.score(name)),
        ]

    def run(self, report: Callable[["Experiment"], None]) -> None:
        """Every stage in order, then the report."""
        self.claim_workdir()
        steps = [("oracle", self.build_oracle), ("data", self.make_data)]
        steps += [(f"train-{n}", lambda n=n: self.train(n)) for n in self.variants]
        for name in ROWS:
            steps += self.evaluation_steps(name)
        for i, (name, fn) in enumerate(steps, 1):
            self.stage(name, i, len(steps) + 1, fn)
        self.log(f"== [{len(steps) + 1}/{len(steps) + 1}] report")
        report(self)
