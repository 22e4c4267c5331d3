"""The training job: Alpaca SFT on FSDP2 (fully_shard). Imports torch: keep out of the CLI's path."""
