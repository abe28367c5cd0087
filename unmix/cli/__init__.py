"""The `unmix` command: a thin shell over the Python API (unmix.api). Entry point: unmix.cli.entry.main."""
