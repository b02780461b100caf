"""Data shipped with needle_mm: the demo set (see README, Data credits)."""
