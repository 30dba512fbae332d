import sys

from churn_platform_bench.cli import main

sys.exit(main())
