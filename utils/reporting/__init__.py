"""What a run reports: the logger and its sinks (console, Visdom, TensorBoard), the evaluation files, validation result
pictures. May import: the utils root modules and utils.io."""
