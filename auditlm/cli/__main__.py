"""``python -m auditlm.cli``."""

from auditlm.cli import main

main()
