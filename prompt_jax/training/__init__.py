"""Training: the pure step over a trainable (`train`), the loop (`loop`), orbax checkpoints
(`checkpoints`), packed batches (`packing`), whole runs: train / evaluate / infer (`run`), and
ahead-of-time memory reports (`aot`)."""
