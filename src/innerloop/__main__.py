import sys

from innerloop.cli.main import main

sys.exit(main())
