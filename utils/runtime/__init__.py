"""How a run runs: device and precision, torchrun set-up, stop signals, the time report, the training step and the
settings a resume restores. May import: the utils root modules and utils.io."""
