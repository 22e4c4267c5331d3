"""The serve job: an OpenAI-compatible API and web demo with watermarking, moderation and flags."""
