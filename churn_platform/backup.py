"""`python -m churn_platform.backup list|restore`: the backup command (churn_platform.core.backups)."""

import sys

from churn_platform.core.backups import main

if __name__ == "__main__":
    sys.exit(main())
