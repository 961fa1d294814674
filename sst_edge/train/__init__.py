"""Training stage: the supernet trained on few-shot episodes while the space shrinks (SST, Algorithm 1).

- `loop.train_supernet(TrainConfig, out)`: the training run (single process or under torchrun); with
  `TrainConfig.subnet` and `.init`, fine-tuning of one found subnet (`finetune`);
- `evaluate.evaluate(...)`: few-shot accuracy with its 95% interval; `episode_accuracies`,
  `load_supernet`, `run_restriction` for other stages;
- `shrink`: candidate records, scores and drop decisions; `checkpoint`: safetensors + JSON sidecar;
- `config`: `TrainConfig`, `ShrinkConfig`; `distributed`: ranks, threads, DDP; `plots`: the PNGs.
"""
