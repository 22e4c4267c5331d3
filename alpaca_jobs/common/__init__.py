"""The shared layer every other part may import: errors, file reading and writing, stop
signals, the prompt template, model preset names. It imports no torch and nothing else from
alpaca_jobs (tests/test_layers.py holds it to that), so the CLI and the slim images stay fast."""
