"""What both LFD tasks add to their fairseq parent: the degenerative model."""

from ..degenerative import STATE_KEY, DegenerativeModel

DEGENERATIVE_CHECKPOINT_HELP = (
    "checkpoint of the frozen degenerative model (stage 1 of LFD, trained with "
    "--criterion truncated_ce on data with the same dictionaries); read only when "
    "a criterion needs it, e.g. --criterion lfd_poe"
)


class DegenerativeModelTaskMixin:
    """Holds a :class:`DegenerativeModel` and checks it when a criterion needs it."""

    def _init_degenerative(self, path, encoder_decoder):
        self.degenerative = DegenerativeModel(path, self, encoder_decoder)

    def build_criterion(self, cfg, **kwargs):
        """Build the criterion; if it uses the degenerative model, check it now,
        before fairseq-train loads any data."""
        criterion = super().build_criterion(cfg, **kwargs)
        if getattr(criterion, "uses_degenerative_model", False):
            self.degenerative.check_save_dir(criterion.save_dir, criterion.restore_file)
            self.degenerative.check()
        return criterion

    def state_dict(self):
        """fairseq's task state, plus the degenerative checkpoint's fingerprint once it
        is in use (saved in every checkpoint of stage 2)."""
        state = dict(super().state_dict())
        if self.degenerative.loaded:
            state[STATE_KEY] = self.degenerative.fingerprint()
        return state
