"""``python -m auditlm``: the same as the ``auditlm`` command."""

from auditlm.cli import main

if __name__ == "__main__":
    main()
