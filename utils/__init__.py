"""Helpers shared by the scripts: transforms, losses, schedulers, checkpoints, configs, devices."""
