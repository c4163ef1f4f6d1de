"""What `data_pipeline` and `pretrain` share: the error types, atomic file writes, local and URL storage, the
token shard format and the shard folder's manifest. It imports neither of them."""
