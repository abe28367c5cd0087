"""`python -m unmix` runs the command line."""
from unmix.cli import main

main()
