"""The mark a ChannelMutator leaves on a model it prepared, so a second prepare and a teacher
given as a masked model are recognised; copies and pickles of the model never carry it."""
from __future__ import annotations

from torch import nn

PREPARED_MARK = "_prepared_by_channel_mutator"  # set on a model once a mutator prepares it


class PreparedMark:
    """Marks a prepared model; copies and pickles of the model do not carry it (they are new
    models, as the export is)."""

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self) -> tuple:
        return (_no_mark, ())


def _no_mark() -> None:
    return None


def is_prepared(model: nn.Module) -> bool:
    """Whether a ChannelMutator has prepared ``model`` (masked layers in place); its copies and
    pickles are new models and do not count."""
    return model.__dict__.get(PREPARED_MARK) is not None
