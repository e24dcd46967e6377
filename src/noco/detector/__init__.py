"""Stage 2: the TriDet detector (the student; the only network run at inference)."""
