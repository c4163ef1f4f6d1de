"""Pretraining a decoder-only Transformer on the data pipeline's token shards."""
