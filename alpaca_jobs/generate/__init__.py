"""The generate job: self-instruct data through any OpenAI-compatible API."""
