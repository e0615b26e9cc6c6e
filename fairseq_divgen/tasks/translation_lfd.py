"""``--task translation_lfd``: fairseq's ``translation`` plus the LFD degenerative model.

A checkpoint trained with it generates with the plain ``translation`` task.
"""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .lfd_common import DEGENERATIVE_CHECKPOINT_HELP, DegenerativeModelTaskMixin


@dataclass
class TranslationLfdConfig(TranslationConfig):
    degenerative_checkpoint: Optional[str] = field(
        default=None, metadata={"help": DEGENERATIVE_CHECKPOINT_HELP}
    )


@register_task("translation_lfd", dataclass=TranslationLfdConfig)
class TranslationLfdTask(DegenerativeModelTaskMixin, TranslationTask):
    """Translation whose criterion may use a frozen encoder-decoder degenerative model."""

    def __init__(self, cfg: TranslationLfdConfig, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self._init_degenerative(cfg.degenerative_checkpoint, encoder_decoder=True)
