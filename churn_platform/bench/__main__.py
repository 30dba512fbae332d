import sys

from churn_platform.bench.cli import main

sys.exit(main())
