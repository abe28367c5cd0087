"""Training: the loop (TrainState, train_step, EMA, checkpoints, resume, DDP), its settings resolved once, the
objectives, the run lock and log, and the two-stage latent run."""
