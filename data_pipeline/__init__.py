"""Raw web, news and book corpora -> filtered, deduplicated, tokenized training shards (datatrove)."""
