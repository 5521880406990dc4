"""`migrate PHASE`: data and services moved into the next phase's containers, journaled and resumable.

steps.py (which steps, their journal state, the report), base.py (what every step uses: connections,
journal, grants), phase1.py (phase 0's stores moved one at a time), phase2.py (phase 1's services
handed over to their new containers), handover.py (grants that keep the old app a client while `up`
runs), record.py (the migration's journal read back), run.py (the steps in order).
"""
