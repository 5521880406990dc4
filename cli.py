"""Run psa-provision from a checkout without installing: `python cli.py up phase0`."""
from psa_provision.cli import main

if __name__ == "__main__":
    main()
