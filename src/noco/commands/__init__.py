"""CLI sub-commands, one module each; see ``noco.cli``."""
