"""What a run reports: the logger and its sinks (console, Visdom, TensorBoard) and the evaluation files.
May import: the utils root modules and utils.io."""
