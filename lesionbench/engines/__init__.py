"""Engines other than the Lightning loop that train a run and write the same run folder (nnU-Net v2)."""
