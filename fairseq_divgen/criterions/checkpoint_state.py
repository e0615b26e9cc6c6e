"""Criterion state that fairseq checkpoints keep, without giving the criterion parameters.

fairseq saves and restores a criterion's ``state_dict`` only when the criterion has
parameters, and then also wraps it in DDP and hands the parameters to the optimizer.
The hook fairseq (0.12.3, fairseq-fixed) does offer is the task's: on every save,
``checkpoint_utils.save_checkpoint`` merges ``task.get_checkpoint_dict()`` into the
checkpoint's ``extra_state``; on resume, ``checkpoint_utils.load_checkpoint`` passes
``extra_state[type(task).__name__]`` to ``task.set_checkpoint_dict`` on every worker
(rank 0 reads the file and broadcasts it), unless the data loader is reset
(--reset-dataloader, --finetune-from-model). fairseq 0.12.2 has no such hook.
"""
from typing import Any, Callable


def attach_checkpoint_state(
    task, key: str, save: Callable[[], Any], load: Callable[[Any], None]
) -> None:
    """Make fairseq checkpoints carry ``save()`` under ``key`` and give it back to
    ``load`` on resume, chaining whatever hooks ``task`` already has."""
    name = type(task).__name__
    previous_get = getattr(task, "get_checkpoint_dict", None)
    previous_set = getattr(task, "set_checkpoint_dict", None)

    def get_checkpoint_dict():
        out = dict(previous_get()) if previous_get is not None else {}
        out[name] = {**out.get(name, {}), key: save()}
        return out

    def set_checkpoint_dict(state):
        if previous_set is not None:
            previous_set(state)
        if key in state:
            load(state[key])

    task.get_checkpoint_dict = get_checkpoint_dict
    task.set_checkpoint_dict = set_checkpoint_dict
