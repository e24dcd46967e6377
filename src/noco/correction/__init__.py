"""Stage 3: online noise correction: teacher (EMA), AIC, MIC, HPM and the training loop."""
