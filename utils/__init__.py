"""The original's helpers at the root (ext_transforms, loss, scheduler, utils, visualizer, with config and constants);
the engine in sub-packages, one concern each: io, runtime, reporting, inference (see each one's docstring)."""
