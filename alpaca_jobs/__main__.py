from alpaca_jobs.cli import main

main()
