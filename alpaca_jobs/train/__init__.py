"""The training job: Alpaca SFT with accelerate FSDP2. Imports torch: keep out of the CLI's path."""
