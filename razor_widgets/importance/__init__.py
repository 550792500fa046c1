"""Importance: how much each channel of a unit matters. The criteria, the calibration
pass of the data criteria, and the unit types that rank channels by them."""
from .calibration import Batch, calibration_batches, split_batch
from .criteria import calibrate
from .group_units import GroupMagnitudeMutableChannelUnit, GroupTaylorMutableChannelUnit
from .units import (
    ActivationMutableChannelUnit,
    BNScaleMutableChannelUnit,
    ImportanceMutableChannelUnit,
    L2MutableChannelUnit,
    MinitronMutableChannelUnit,
    RandomMutableChannelUnit,
    TaylorMutableChannelUnit,
    WandaMutableChannelUnit,
)

__all__ = ["ActivationMutableChannelUnit", "BNScaleMutableChannelUnit", "Batch", "ImportanceMutableChannelUnit",
           "L2MutableChannelUnit", "RandomMutableChannelUnit", "TaylorMutableChannelUnit", "calibrate",
           "calibration_batches", "split_batch", "GroupMagnitudeMutableChannelUnit", "GroupTaylorMutableChannelUnit",
           "MinitronMutableChannelUnit", "WandaMutableChannelUnit"]
