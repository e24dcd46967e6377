"""Stage 1: the weakly-supervised base model (ASM-Loc base) and its proposals."""
