"""monitoring/: what goes into a W&B run's config."""

from monitoring.wandb_run import redact_secrets


def test_secrets_are_redacted_and_token_counts_and_tokenizers_are_not():
    config = {"tokenizer": {"path": "t.json", "eos_token": "<|endoftext|>"}, "shards": {"max_tokens_per_shard": 5},
              "storage": {"aws_secret_access_key": "s", "api_key": "k", "password": "p"}, "hf_token": "h", "token": "t",
              "sources": [{"text_key": "text", "access_key": "a"}]}
    assert redact_secrets(config) == {
        "tokenizer": {"path": "t.json", "eos_token": "<|endoftext|>"}, "shards": {"max_tokens_per_shard": 5},
        "storage": {"aws_secret_access_key": "<redacted>", "api_key": "<redacted>", "password": "<redacted>"},
        "hf_token": "<redacted>", "token": "<redacted>", "sources": [{"text_key": "text", "access_key": "<redacted>"}]}
