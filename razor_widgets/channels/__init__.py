"""Channels: what a channel rule and a layer kind see. Channel elements and their
union-find, channel ranges, parameter elements, which outputs keep their shape, the op-name
tables, and the analysis records (``AnalysisContext``, ``Slot``, ``UnitSpec``,
``ChannelAnalysis``). Imports only ``trace``: the layer kinds build on it."""
