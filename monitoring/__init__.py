"""What both commands show a person: the W&B run (config, mode), the dataset artifact that links a
training run to the data it read, and numbers formatted for reading.

`data_pipeline` and `pretrain` both import it; it imports nothing of either."""
