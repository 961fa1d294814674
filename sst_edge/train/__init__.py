"""Training stage: the supernet trained on few-shot episodes while the space shrinks (SST, Algorithm 1).

- `loop.train_supernet(TrainConfig, out)`: the training run (single process or under torchrun); with
  `TrainConfig.subnet` and `.init`, fine-tuning of one found subnet (`finetune`);
- `evaluate.evaluate(...)`: few-shot accuracy with its 95% interval, and `episode_accuracies`;
- `artifacts`: a run's files read back by later stages (`load_supernet`, `run_restriction`,
  `choose_head`);
- `shrink`: candidate records, scores and drop decisions; `checkpoint`: safetensors + JSON sidecar;
- `config`: `TrainConfig`, `ShrinkConfig` (torch-free: the CLI reads their defaults); `distributed`:
  ranks, threads, DDP; `plots`: the PNGs.
"""
