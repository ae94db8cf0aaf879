"""What a run saves, and the one way back from it: the run folder's layout and files, the trained model with its
record (`RunInfo`), and where a model's weights come from (`WeightsSource`: a release, a run folder, a
model.safetensors or a Lightning .ckpt).

It sits below the trainer, which writes these, and below deploy and bench, which read them; it imports no training
engine."""
