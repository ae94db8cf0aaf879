"""Training: the configuration and its recipes, the Lightning system and data module, run folders, checkpoints and
evaluation (`microdense train`, `microdense eval`)."""
