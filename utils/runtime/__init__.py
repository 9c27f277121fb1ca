"""How a run runs: device and precision, torchrun set-up, stop signals, the time report, the training step, the
settings a resume restores, the C allocator's settings. May import: the utils root modules and utils.io."""
