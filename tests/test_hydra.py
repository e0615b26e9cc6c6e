"""fairseq-hydra-train with the YAML configs of examples/hydra and the plugin as
``common.user_dir``, on tiny data and a tiny model given as overrides.

fairseq-hydra-train composes the config before it imports ``common.user_dir``, so
hydra knows the plugin's keys only from the YAML file (the configs list them all,
so each can be overridden as key=value); the plugin's dataclass defaults are
merged later, when fairseq-train builds the task and the criterion.
"""

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY
from omegaconf import OmegaConf

from fairseq_divgen.fairseq_commands import USER_DIR, run_fairseq

CONFIG_DIR = Path(__file__).resolve().parent.parent / "examples" / "hydra"
CONFIGS = ["tailr", "lfd_degenerative", "lfd_poe"]
TINY = [
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "model.encoder_embed_dim=32",
    "model.decoder_embed_dim=32",
    "model.encoder_ffn_embed_dim=64",
    "model.decoder_ffn_embed_dim=64",
    "model.encoder_attention_heads=2",
    "model.decoder_attention_heads=2",
    "model.dropout=0.1",
    "common.cpu=true",
    "common.log_interval=1",
    "dataset.max_tokens=400",
    "dataset.num_workers=0",
    "optimization.lr=[0.005]",
    "optimization.max_update=4",
    "lr_scheduler.warmup_updates=1",
    "checkpoint.no_epoch_checkpoints=true",
]
LOADED = "loaded degenerative model from"


def _hydra_train(config, cwd, overrides):
    args = [
        "--config-dir",
        CONFIG_DIR,
        "--config-name",
        config,
        f"common.user_dir={USER_DIR}",
        *TINY,
        *overrides,
    ]
    return run_fairseq("hydra-train", args, cwd=cwd).stdout


def _logs(output, kind):
    """JSON records of one kind in hydra's log format ``[time][kind][INFO] - {...}``."""
    tag = f"][{kind}][INFO] - "
    return [json.loads(line.split(tag, 1)[1]) for line in output.splitlines() if tag in line]


def _check_trained(output, checkpoint):
    inner = _logs(output, "train_inner")
    assert [int(r["num_updates"]) for r in inner] == [1, 2, 3, 4]
    assert all(math.isfinite(float(r[k])) for r in inner for k in ("loss", "nll_loss"))
    assert checkpoint.is_file()
    return inner


@pytest.mark.parametrize("config", CONFIGS)
def test_config_lists_every_key_of_the_plugin_dataclasses(config):
    cfg = OmegaConf.load(CONFIG_DIR / f"{config}.yaml")
    for group, registry in (
        ("criterion", CRITERION_DATACLASS_REGISTRY),
        ("task", TASK_DATACLASS_REGISTRY),
    ):
        name = cfg[group]["_name"]
        if name not in ("tailr", "truncated_ce", "lfd_poe", "translation_lfd"):
            continue
        base = {"translation_lfd": TASK_DATACLASS_REGISTRY["translation"]}.get(name)
        inherited = {f.name for f in fields(base)} if base else set()
        # values interpolated from fairseq's own config groups (${optimization.sentence_avg} ...)
        interpolated = {f.name for f in fields(registry[name]) if str(f.default).startswith("${")}
        own = {f.name for f in fields(registry[name])} - inherited - interpolated - {"_name"}
        assert own <= set(cfg[group]), f"{config}.yaml: {group} lacks {own - set(cfg[group])}"


@pytest.mark.parametrize("config", CONFIGS)
def test_config_has_a_finite_budget_and_a_meaningful_best_checkpoint(config):
    cfg = OmegaConf.load(CONFIG_DIR / f"{config}.yaml")
    opt = cfg.optimization
    assert opt.get("max_update", 0) > 0 or opt.get("max_epoch", 0) > 0  # else it never stops
    # tailr's and lfd_poe's `loss` is their objective; nll_loss compares with MLE
    wanted = "loss" if config == "lfd_degenerative" else "nll_loss"
    assert cfg.checkpoint.best_checkpoint_metric == wanted


def test_tailr_config_trains(translation_data, tmp_path):
    out = _hydra_train(
        "tailr",
        tmp_path,
        [f"task.data={translation_data / 'bin'}", "criterion.density_min_weight=0.2"],
    )
    # hydra.run.dir is ".": the config's relative save_dir lands where the command ran.
    inner = _check_trained(out, tmp_path / "checkpoints" / "tailr" / "checkpoint_last.pt")
    assert all(0.2 <= float(r["tailr_weight"]) <= 1.0 for r in inner)
    assert "'density_min_weight': 0.2" in out and "'density_ratio_threshold': 0.1" in out


def test_lfd_configs_train_both_stages(translation_data, tmp_path):
    data = f"task.data={translation_data / 'bin'}"
    out = _hydra_train(
        "lfd_degenerative", tmp_path, [data, "criterion.truncation_warmup_updates=2"]
    )
    inner = _check_trained(out, tmp_path / "checkpoints" / "degenerative" / "checkpoint_last.pt")
    assert [r["kept_ratio"] == "1" for r in inner] == [True, True, False, False]

    degen = "task.degenerative_checkpoint=checkpoints/degenerative/checkpoint_last.pt"
    out = _hydra_train("lfd_poe", tmp_path, [data, degen])
    inner = _check_trained(out, tmp_path / "checkpoints" / "lfd" / "checkpoint_last.pt")
    assert out.count(LOADED) == 1
    assert all(math.isfinite(float(r["poe_loss"])) for r in inner)
