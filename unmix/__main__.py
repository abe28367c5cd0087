"""`python -m unmix` runs the command line."""
from unmix.cli.entry import main

main()
