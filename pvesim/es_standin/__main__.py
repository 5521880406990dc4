"""`python3 -m es_standin`: run the stand-in (what /usr/share/elasticsearch/bin/elasticsearch does)."""

import sys

from .server import main

sys.exit(main())
