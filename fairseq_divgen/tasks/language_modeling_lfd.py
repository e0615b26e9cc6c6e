"""``--task language_modeling_lfd``: fairseq's ``language_modeling`` plus the LFD
degenerative model. A checkpoint trained with it evaluates and samples with the
plain ``language_modeling`` task."""

from dataclasses import dataclass, field
from typing import Optional

from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from .lfd_common import DEGENERATIVE_CHECKPOINT_HELP, DegenerativeModelTaskMixin


@dataclass
class LanguageModelingLfdConfig(LanguageModelingConfig):
    degenerative_checkpoint: Optional[str] = field(
        default=None, metadata={"help": DEGENERATIVE_CHECKPOINT_HELP}
    )


@register_task("language_modeling_lfd", dataclass=LanguageModelingLfdConfig)
class LanguageModelingLfdTask(DegenerativeModelTaskMixin, LanguageModelingTask):
    """Language modeling whose criterion may use a frozen decoder-only degenerative model."""

    def __init__(self, args, dictionary, output_dictionary=None, targets=None):
        super().__init__(args, dictionary, output_dictionary, targets=targets)
        self._init_degenerative(
            getattr(args, "degenerative_checkpoint", None), encoder_decoder=False
        )
