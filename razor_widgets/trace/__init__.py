"""Trace: one real forward recorded as a graph of ops on tensors (``TracedGraph``), with
the sizes the code read, the structure of its outputs, and the inputs it is traced on."""
