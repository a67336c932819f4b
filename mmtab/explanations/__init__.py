"""What a trained model relies on: the modality report (each branch alone beside their fusion),
column importance, calibration, and their plots.

`mmtab.explanations.modality` is read by the trainer at every validation; the rest runs on a trained
model (``mmtab explain``, or `mmtab.explain` in Python).
"""
