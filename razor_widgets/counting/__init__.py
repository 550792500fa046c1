"""Counting: exact params, MACs and FLOPs. The count spec (formulas over the units'
kept channels), the live counter that evaluates it, the reference counter of any plain model,
and the supernet counter of searchable ops."""
